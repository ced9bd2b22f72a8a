"""Load a model file for the CLI without running code it carries.

Recognised by content, not extension: TorchScript archives (``torch.jit.load``; code is TorchScript,
not pickle globals), ONNX protobufs, skops files (scikit-learn without pickle), and a safetensors state
dict paired with ``module:Factory``. Plain pickles (and ``torch.save`` of whole modules) can run any
code when loaded, so they need ``trust_pickle=True``.
"""

from __future__ import annotations

import ast
import importlib
import warnings
import zipfile
from pathlib import Path
from typing import Any

from bastion.core.adapters import Model, wrap
from bastion.errors import InputError, ModelLoadError

PICKLE_WARNING = ("pickle files can execute arbitrary code when loaded; pass --trust-pickle only for files "
                  "you produced yourself, or convert them with `bastion convert` / save as TorchScript, ONNX, "
                  "skops or safetensors")


def resolve_factory(ref: str) -> Any:
    """Import ``module:attribute`` (e.g. ``bastion.zoo:SmallCNN``) and return the attribute."""
    if ":" not in ref:
        raise InputError("factory", ref, "'module:Factory', e.g. 'mypkg.models:Net'")
    mod_name, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import module '{mod_name}' for factory {ref}: {exc}") from exc
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def parse_factory(ref: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Split ``mod:Factory(1, 10, width=16)`` into the reference and its literal arguments.

    Arguments must be Python literals (numbers, strings, tuples, lists, dicts, booleans, None): they are
    read with ``ast.literal_eval``, never executed.
    """
    ref = ref.strip()
    if "(" not in ref:
        return ref, (), {}
    name, _, rest = ref.partition("(")
    if not rest.endswith(")"):
        raise InputError("factory", ref, "'module:Factory' or 'module:Factory(arg, ..., key=value)'")
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError("not a call")
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        if len(kwargs) != len(call.keywords):
            raise ValueError("**kwargs")
    except (SyntaxError, ValueError) as exc:
        raise InputError("factory", ref, f"arguments that are Python literals, e.g. "
                                         f"'{name.strip()}(1, 10, 8, width=16)' ({exc})") from None
    return name.strip(), args, kwargs


def build_from_factory(ref: str, **extra: Any) -> Any:
    """Call the factory named by ``ref`` (with its literal arguments) and check it built an ``nn.Module``."""
    from torch import nn

    name, args, kwargs = parse_factory(ref)
    factory = resolve_factory(name)
    if not callable(factory):
        raise InputError("factory", ref, "a class or function that builds the model")
    try:
        module = factory(*args, **{**kwargs, **extra})
    except TypeError as exc:
        raise InputError("factory", ref, f"a call that builds the model ({exc}); give its arguments as "
                                         f"'{name}(arg, ..., key=value)'") from None
    if not isinstance(module, nn.Module):
        raise InputError("factory", ref, f"a factory returning a torch.nn.Module, not {type(module).__name__}")
    return module


def sniff(path: Path) -> str:
    """Name the model format from the file's bytes."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise ModelLoadError(f"{path}: looks like a zip archive but cannot be opened ({exc})") from exc
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if "schema.json" in names:
            return "skops"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-pickle"
        return "zip"
    if len(head) >= 8:
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"c", b"]", b"}"):
        return "pickle"
    if head[:1] in (b"\x08", b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x3a", b"\x42"):
        return "onnx"
    return "unknown"


def load_model(path: str | Path, *, factory: str | None = None, bounds: tuple[float, float] = (0.0, 1.0),
               trust_pickle: bool = False, device: str | None = None, factory_kwargs: dict[str, Any] | None = None,
               preprocessing: tuple[Any, Any] | None = None) -> Model:
    """Load a model file into a wrapped :class:`~bastion.core.adapters.Model`."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: is a folder, expected a model file" if p.is_dir() else f"{p}: no such model file")
    kind = sniff(p)
    torch_kw: dict[str, Any] = {"preprocessing": preprocessing}
    if device:
        torch_kw["device"] = device
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream but remains the one code-free whole-model format.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(p), map_location=device or "cpu")
        except Exception as exc:
            raise ModelLoadError(f"{p}: not a loadable TorchScript archive ({exc})") from exc
        return wrap(module, bounds, **torch_kw)
    if kind == "safetensors":
        if factory is None:
            raise ModelLoadError(f"{p}: a safetensors file holds weights only; name the architecture with "
                                 "--factory 'module:Factory(args)' (e.g. 'bastion.zoo:SmallCNN(1, 10, 8)')")
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except Exception as exc:
            raise ModelLoadError(f"{p}: invalid safetensors file ({exc})") from exc
        module = build_from_factory(factory, **(factory_kwargs or {}))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"{p}: weights do not fit {factory}: {str(exc).splitlines()[0]}") from exc
        return wrap(module, bounds, **torch_kw)
    if kind == "onnx" or p.suffix.lower() == ".onnx":
        return wrap(str(p) if str(p).endswith(".onnx") else _onnx_session(p), bounds)
    if kind == "skops":
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(file=str(p))
            reviewed = set(trusted_skops_types())
            unknown = [t for t in untrusted if t not in reviewed]
            if unknown and not trust_pickle:
                raise ModelLoadError(f"{p}: skops file names types outside skops' safe set and Bastion's reviewed "
                                     f"scikit-learn types: {', '.join(unknown)}; pass --trust-pickle only if you "
                                     "trust them")
            # Only the types this file names and the review admits (or, with --trust-pickle, all it names).
            est = sio.load(str(p), trusted=untrusted or None)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{p}: not a loadable skops file ({exc})") from exc
        return wrap(est, bounds)
    if kind in ("pickle", "torch-pickle"):
        if not trust_pickle:
            raise ModelLoadError(f"{p}: refusing to unpickle: {PICKLE_WARNING}")
        return _load_trusted_pickle(p, kind, bounds, torch_kw)
    raise ModelLoadError(f"{p}: unrecognised model format; expected TorchScript, ONNX, skops, "
                         "safetensors (+ --factory) or, with --trust-pickle, a pickle")


def trusted_skops_types() -> list[str]:
    """Exact ``module.Name`` types a skops file may name without --trust-pickle: the scanner's reviewed
    scikit-learn, SciPy and NumPy classes (``bastion.scan.policy``), one list for scanning and loading."""
    from bastion.scan.policy import trusted_skops_types as reviewed

    return reviewed()


def _onnx_session(p: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"{p}: not a loadable ONNX model ({exc})") from exc


def _load_trusted_pickle(p: Path, kind: str, bounds: tuple[float, float], torch_kw: dict[str, Any]) -> Model:
    import pickle

    import torch

    try:
        if kind == "torch-pickle":
            obj = torch.load(str(p), map_location="cpu", weights_only=False)
        else:
            with p.open("rb") as fh:
                obj = pickle.load(fh)
    except Exception as exc:
        raise ModelLoadError(f"{p}: could not unpickle ({exc})") from exc
    if isinstance(obj, dict):
        raise ModelLoadError(f"{p}: holds a state dict, not a model; pass --factory module:Factory")
    return wrap(obj, bounds, **(torch_kw if isinstance(obj, torch.nn.Module) else {}))
