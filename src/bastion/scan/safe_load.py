"""Load PyTorch checkpoints and scikit-learn/joblib pickles without letting them run code.

Two locks, either of which suffices against the corpus of published bypasses:

1. the file is scanned first (:func:`bastion.scan.scan_path`) and refused on any HIGH or CRITICAL
   finding or on anything the scanner could not read;
2. it is then unpickled only through :class:`AllowlistUnpickler`, whose ``find_class`` asks
   :meth:`Policy.classify_global` about every global (including EXT codes, which pickle resolves through
   ``find_class`` too) and refuses anything not allowed, naming it.

PyTorch zip checkpoints are read with :mod:`zipfile` and their storages rebuilt from the ``data/<key>``
members in ``persistent_load`` (no call into ``torch.load``); legacy (pre-1.6) checkpoints are read
pickle by pickle the same way. Joblib files go through joblib's own ``NumpyUnpickler`` (it reads the
arrays joblib writes after the pickle) with the same ``find_class``.

``weights_only=True`` (the default) narrows the allowlist further to what a state dict needs: tensors,
storages, NumPy arrays and plain containers. scikit-learn estimators need ``weights_only=False``; they are
still limited to the policy's allowlist (estimator classes, never functions).
"""

from __future__ import annotations

import bz2
import fnmatch
import io
import lzma
import pickle
import struct
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bastion.errors import ModelLoadError
from bastion.scan.findings import Severity
from bastion.scan.policy import ALLOWED_OVERRIDE_RULE, Policy, normalize

__all__ = ["AllowlistUnpickler", "UnsafeModelError", "safe_load"]

#: what ``weights_only=True`` admits on top of the policy's verdict: tensors, storages, arrays, containers
WEIGHTS_ONLY: tuple[str, ...] = (
    "torch._utils:_rebuild_*",
    "torch._tensor:_rebuild_from_type_v2",
    "torch:*Storage",
    "torch.storage:TypedStorage",
    "torch.storage:UntypedStorage",
    "torch:Size",
    "torch:Tensor",
    "torch:device",
    "torch:dtype",
    "torch:[a-z]*",  # dtypes (torch.float16...), layouts and memory formats; the policy filters functions
    "torch.serialization:_get_layout",
    "torch.nn.parameter:Parameter",
    "torch.nn.parameter:Buffer",
    "numpy.core.multiarray:_reconstruct",
    "numpy._core.multiarray:_reconstruct",
    "numpy.core.multiarray:scalar",
    "numpy._core.multiarray:scalar",
    "numpy:ndarray",
    "numpy:dtype",
    "numpy.dtypes:*",
    "numpy:[a-z]*",
    "_codecs:encode",
    "builtins:*",
    "collections:OrderedDict",
    "collections:defaultdict",
    "copyreg:_reconstructor",
    "joblib.numpy_pickle:NumpyArrayWrapper",
)

#: the legacy format's first pickle: torch.serialization's magic number
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeModelError(ModelLoadError):
    """Loading would have run code, or used something outside the allowlist; nothing was executed.

    ``global_name`` is the refused ``module.name`` when a global was refused, ``location`` where in the
    file (archive member) it was met.
    """

    def __init__(self, message: str, global_name: str | None = None, location: str | None = None) -> None:
        super().__init__(message)
        self.global_name = global_name
        self.location = location


def _matches(patterns: tuple[str, ...], module: str, name: str) -> bool:
    for pat in patterns:
        pm, _, pn = pat.partition(":")
        if fnmatch.fnmatchcase(module, pm) and fnmatch.fnmatchcase(name, pn):
            return True
    return False


class _Guard:
    """The allowlist decision shared by the plain and the joblib unpickler."""

    def __init__(self, policy: Policy, weights_only: bool, where: str) -> None:
        self.policy = policy
        self.weights_only = weights_only
        self.where = where

    def resolve(self, module: str, name: str, real_find: Callable[[str, str], Any]) -> Any:
        qual = f"{module}.{name}"
        verdict = self.policy.verdict(module, name)
        if verdict.severity is not None and verdict.rule_id != ALLOWED_OVERRIDE_RULE:
            raise UnsafeModelError(f"refused global {qual} in {self.where}", qual, self.where)
        mod, nm = normalize(module, name)
        if self.weights_only and ("." in nm or not _matches(WEIGHTS_ONLY, mod, nm)):
            raise UnsafeModelError(f"refused global {qual} in {self.where}: weights_only=True admits tensors, "
                                   "arrays and plain containers (pass weights_only=False for estimators)",
                                   qual, self.where)
        obj = real_find(module, name)
        home = _defined_in(obj)
        if home is not None and not _same_module(home, mod):
            # an allowed name that is really a re-export of something defined elsewhere (a socket listener
            # imported into a trusted package): admit names only where they are defined
            raise UnsafeModelError(f"refused global {qual} in {self.where}: it is {home}.{getattr(obj, '__qualname__', nm)}, "
                                   "defined outside the module the file names", qual, self.where)
        return obj


#: modules whose objects report another module as their home (aliases kept by NumPy and pathlib)
_HOME_ALIASES = {"numpy.core": "numpy._core", "pathlib._local": "pathlib", "numpy.core.multiarray": "numpy._core.multiarray",
                 "numpy.core.numeric": "numpy._core.numeric", "_codecs": "_codecs"}


def _defined_in(obj: Any) -> str | None:
    """The module a class or function was defined in (None for other objects, e.g. dtype instances)."""
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        home = getattr(obj, "__module__", None)
        return home if isinstance(home, str) else None
    return None


def _same_module(home: str, named: str) -> bool:
    if home == named or named == "builtins":
        return True
    canon = _HOME_ALIASES.get(named, named)
    return _HOME_ALIASES.get(home, home) == canon


class AllowlistUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` imports only what the policy allows.

    ``persistent_load`` (set by the caller for PyTorch checkpoints) is refused otherwise: a persistent
    id in a plain pickle means the file expects a loader we do not provide.
    """

    def __init__(self, file: IO[bytes], *, policy: Policy, weights_only: bool = True,
                 where: str = "pickle", persistent_load: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file)
        self._guard = _Guard(policy, weights_only, where)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        return self._guard.resolve(module, name, super().find_class)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UnsafeModelError(f"refused persistent id {pid!r} in {self._guard.where}: "
                                   "plain pickles carry none", None, self._guard.where)
        return self._persistent(pid)


def _refuse_on_scan(path: Path, policy: Policy) -> None:
    from bastion.scan import scan_path

    report = scan_path(path, policy)
    if report.errors:
        raise ModelLoadError(f"{path}: could not be scanned: {'; '.join(report.errors)}")
    bad = sorted((f for f in report.findings if f.severity >= Severity.HIGH), key=lambda f: -f.severity)
    if bad:
        worst = bad[0]
        what = f"refused global {worst.global_name}" if worst.global_name else worst.rule_id
        more = f" (and {len(bad) - 1} more finding(s))" if len(bad) > 1 else ""
        raise UnsafeModelError(f"{what} in {worst.location or path.name}: {worst.message}{more}",
                               worst.global_name, worst.location)


def _storage_dtype(storage_type: Any) -> Any:
    import torch

    if storage_type is torch.UntypedStorage:
        return torch.uint8
    with warnings.catch_warnings():
        # legacy storage classes (torch.FloatStorage) warn that TypedStorage is deprecated; reading their
        # dtype is all we do with them
        warnings.simplefilter("ignore", UserWarning)
        dtype = getattr(storage_type, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        raise ModelLoadError(f"unexpected storage type {storage_type!r} in checkpoint")
    return dtype


def _typed_storage(raw: bytes, dtype: Any) -> Any:
    import torch

    untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _load_torch_zip(path: Path, policy: Policy, weights_only: bool) -> Any:
    import torch

    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl_names = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkl_names:
            raise ModelLoadError(f"{path}: a zip archive without data.pkl, so not a PyTorch checkpoint")
        if len(pkl_names) != 1:
            raise ModelLoadError(f"{path}: {len(pkl_names)} data.pkl members; a checkpoint has one")
        pkl_name = pkl_names[0]
        prefix = pkl_name[: -len("data.pkl")]
        if any(n.endswith("constants.pkl") for n in names):
            raise ModelLoadError(f"{path}: a TorchScript archive; load it with torch.jit.load")
        order = f"{prefix}byteorder"
        if order in names and zf.read(order).strip() not in (b"little", b""):
            raise ModelLoadError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, Any] = {}

        def persistent_load(pid: Any) -> Any:
            if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
                raise UnsafeModelError(f"refused persistent id {pid!r} in {pkl_name}", None, pkl_name)
            _, storage_type, key, _location, numel = pid
            dtype = _storage_dtype(storage_type)
            key = str(key)
            if key not in storages:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise ModelLoadError(f"{path}: storage {member} is missing")
                raw = zf.read(member)
                need = int(numel) * torch._utils._element_size(dtype)
                if len(raw) < need:
                    raise ModelLoadError(f"{path}: storage {member} has {len(raw)} bytes, needs {need}")
                storages[key] = _typed_storage(raw, dtype)
            return storages[key]

        unpickler = AllowlistUnpickler(io.BytesIO(zf.read(pkl_name)), policy=policy, weights_only=weights_only,
                                       where=pkl_name, persistent_load=persistent_load)
        return unpickler.load()


def _load_torch_legacy(data: bytes, policy: Policy, weights_only: bool, where: str) -> Any:
    import torch

    fh = io.BytesIO(data)

    def plain(label: str) -> Any:
        return AllowlistUnpickler(fh, policy=policy, weights_only=True, where=f"{where} ({label})").load()

    if plain("magic number") != _LEGACY_MAGIC:
        raise ModelLoadError(f"{where}: not a PyTorch legacy checkpoint (bad magic number)")
    if plain("protocol version") != _LEGACY_PROTOCOL:
        raise ModelLoadError(f"{where}: unsupported legacy protocol version")
    sys_info = plain("sys_info")
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise ModelLoadError(f"{where}: big-endian checkpoints are not supported")
    storages: dict[str, Any] = {}
    views: dict[str, Any] = {}

    def persistent_load(pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] not in ("storage", b"storage"):
            # ("module", ...) ids carry class source code: never in a weights file
            raise UnsafeModelError(f"refused persistent id {pid!r} in {where}", None, where)
        _, storage_type, key, _location, numel, view = pid
        dtype = _storage_dtype(storage_type)
        key = str(key)
        if key not in storages:
            storages[key] = (dtype, int(numel), torch.storage.TypedStorage(int(numel), dtype=dtype, _internal=True))
        base = storages[key][2]
        if view is None:
            return base
        view_key, offset, size = view
        if view_key not in views:
            size_b = torch._utils._element_size(dtype)
            views[view_key] = torch.storage.TypedStorage(
                wrap_storage=base._untyped_storage[int(offset) * size_b:(int(offset) + int(size)) * size_b],
                dtype=dtype, _internal=True)
        return views[view_key]

    result = AllowlistUnpickler(fh, policy=policy, weights_only=weights_only, where=where,
                                persistent_load=persistent_load).load()
    keys = plain("storage keys")
    if not isinstance(keys, list):
        raise ModelLoadError(f"{where}: malformed storage key list")
    for key in keys:
        if str(key) not in storages:
            raise ModelLoadError(f"{where}: storage {key!r} listed but never used")
        dtype, numel, typed = storages[str(key)]
        count = int.from_bytes(fh.read(8), "little")
        size_b = torch._utils._element_size(dtype)
        raw = fh.read(count * size_b)
        if count != numel or len(raw) != numel * size_b:
            raise ModelLoadError(f"{where}: storage {key!r} is truncated or mis-sized")
        if raw:
            typed._untyped_storage.copy_(torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8))
    return result


def _decompressor(data: bytes) -> Any:
    if data[:1] == b"\x78":
        return zlib.decompressobj()
    if data[:2] == b"\x1f\x8b":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if data[:3] == b"BZh":
        return bz2.BZ2Decompressor()
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if data[:3] == b"\x5d\x00\x00":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    return None


def _decompress(data: bytes, limit: int, where: str) -> bytes:
    """Undo joblib's compression (zlib, gzip, bz2, xz, lzma), never past ``limit`` bytes.

    Streams back to back are joined, as joblib and the gzip/bz2/lzma readers join them: what is
    unpickled is exactly the joined stream the scanner analysed.
    """
    dec = _decompressor(data)
    if dec is None:
        return data
    out = bytearray()
    rest = data
    while dec is not None:
        try:
            out += dec.decompress(rest, limit + 1 - len(out))
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
            raise ModelLoadError(f"{where}: corrupt compressed stream ({exc})") from exc
        if len(out) > limit:
            raise ModelLoadError(f"{where}: decompresses to more than {limit} bytes")
        if not dec.eof:
            raise ModelLoadError(f"{where}: compressed stream is truncated")
        rest = dec.unused_data
        dec = _decompressor(rest) if rest.strip(b"\x00") else None
        if rest.strip(b"\x00") and dec is None:
            raise ModelLoadError(f"{where}: bytes after the compressed stream are not another stream")
    return bytes(out)


def _load_joblib(data: bytes, policy: Policy, weights_only: bool, where: str) -> Any:
    from joblib.numpy_pickle import NumpyUnpickler

    guard = _Guard(policy, weights_only, where)

    class _Guarded(NumpyUnpickler):
        # joblib routes the nested pickles of object arrays through this find_class too
        def find_class(self, module: str, name: str) -> Any:
            return guard.resolve(module, name, super().find_class)

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafeModelError(f"refused persistent id {pid!r} in {where}", None, where)

    return _Guarded(where, io.BytesIO(data), ensure_native_byte_order=True).load()


def _move(obj: Any, device: Any) -> Any:
    import torch

    if isinstance(obj, torch.nn.Parameter):
        return torch.nn.Parameter(obj.data.to(device), requires_grad=obj.requires_grad)
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _move(v, device)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_move(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_move(v, device) for v in obj)
    return obj


def safe_load(path: str | Path, *, policy: Policy | None = None, map_location: Any = "cpu",
              weights_only: bool = True) -> Any:
    """Load a PyTorch checkpoint (zip or legacy), a joblib file or a pickle without running its code.

    Raises :class:`UnsafeModelError` (a :class:`~bastion.errors.ModelLoadError`) when the scan finds
    anything HIGH or CRITICAL or the unpickler meets a global outside the allowlist, e.g.
    ``refused global os.system in archive/data.pkl``; :class:`~bastion.errors.ModelLoadError` when the
    file is missing, of another format or malformed. Tensors are built on the CPU, then moved to
    ``map_location`` (storage sharing between tensors is kept only on the CPU).
    """
    pol = policy or Policy.default()
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such model file")
    _refuse_on_scan(p, pol)
    with p.open("rb") as fh:
        head = fh.read(4)
    try:
        if head == b"PK\x03\x04":
            # zip members are read one at a time: a multi-gigabyte checkpoint is never held whole
            obj = _load_torch_zip(p, pol, weights_only)
        else:
            data = _decompress(p.read_bytes(), pol.limits.max_decompressed_bytes, p.name)
            if _is_legacy_torch(data):
                obj = _load_torch_legacy(data, pol, weights_only, p.name)
            elif data[:1] == b"\x80" or data[:1] in (b"(", b"}", b"]", b"c", b"N"):
                obj = _load_joblib(data, pol, weights_only, p.name)
            else:
                raise ModelLoadError(f"{p}: not a PyTorch checkpoint, joblib file or pickle; safetensors, ONNX "
                                     "and skops files need no safe_load (load them with their own libraries)")
    except ModelLoadError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, KeyError,
            AttributeError, IndexError, RuntimeError, struct.error) as exc:
        raise ModelLoadError(f"{p}: malformed model file ({type(exc).__name__}: {exc})") from exc
    if str(map_location) != "cpu":
        obj = _move(obj, map_location)
    return obj


def _is_legacy_torch(data: bytes) -> bool:
    # pickle.dumps(MAGIC, protocol=2): PROTO 2, LONG1 of 10 bytes holding the magic number
    magic = _LEGACY_MAGIC.to_bytes(10, "little")
    return data[:4] == b"\x80\x02\x8a\x0a" and data[4:14] == magic
