"""`bastion convert`: turn a PyTorch checkpoint into safetensors, loading it only through ``safe_load``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import EXIT_ERROR, EXIT_FAILED, EXIT_OK, fail, handle_errors, print_json
from bastion.cli.paths import atomic_path, check_output
from bastion.errors import InputError

#: keys under which training scripts commonly nest the weights of a checkpoint
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "weights")


def _is_tensor_map(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def find_state_dict(obj: Any, key: str | None = None) -> tuple[dict[str, Any], str]:
    """The tensors to write and where they were found (``""`` for the top level, else the key)."""
    import torch

    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = ", ".join(map(repr, list(obj)[:10])) if isinstance(obj, Mapping) else type(obj).__name__
            raise InputError("--key", repr(key), f"a key of the checkpoint (it has {have})")
        obj = obj[key]
        if not _is_tensor_map(obj):
            raise InputError("--key", repr(key), "a key holding a mapping of names to tensors")
        return dict(obj), key
    if _is_tensor_map(obj):
        return dict(obj), ""
    if isinstance(obj, Mapping):
        for k in NESTED_KEYS:
            if k in obj and _is_tensor_map(obj[k]):
                return dict(obj[k]), k
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
        raise InputError("IN", f"a checkpoint whose entries {bad!r} are not tensors",
                         f"a state dict of tensors, or one nested under {', '.join(NESTED_KEYS)} (or pass --key)")
    raise InputError("IN", f"a checkpoint holding a {type(obj).__name__}", "a state dict (mapping of names to tensors)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `bastion` app."""

    @app.command()
    @handle_errors
    def convert(
        src: Path = typer.Argument(..., metavar="IN", help="PyTorch checkpoint (.pt/.pth/.bin, zip or legacy)."),
        dst: Path = typer.Argument(..., metavar="OUT", help="Where to write the .safetensors file."),
        key: str | None = typer.Option(None, "--key", help="Take the state dict from this top-level key."),
        force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists.", metavar=""),
        json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON.", metavar=""),
    ) -> None:
        """Convert a PyTorch checkpoint to safetensors without running code it carries.

        The file is scanned, then unpickled through an allowlist (tensors and plain containers only).

        Exit codes: 0 written, 1 refused (the refused global is named), 2 unusable input or output.
        """
        from safetensors.torch import save_file

        from bastion.scan.safe_load import UnsafeModelError, safe_load

        if not src.is_file():
            fail(f"{src}: is a folder, expected a checkpoint file" if src.is_dir() else f"{src}: no such file",
                 EXIT_ERROR)
        if dst.suffix != ".safetensors":
            fail(f"OUT: got {dst.name!r}, expected a file name ending in .safetensors", EXIT_ERROR)
        if not dst.parent.is_dir():
            fail(f"OUT: folder {dst.parent} does not exist", EXIT_ERROR)
        # Before the checkpoint is read: a path that cannot be written fails now, not after loading.
        dst = check_output(dst, inputs=(src,), force=force, what="OUT")
        try:
            obj = safe_load(src, weights_only=True)
        except UnsafeModelError as exc:
            fail(f"{src}: refused: {exc}", EXIT_FAILED)
        tensors, found_at = find_state_dict(obj, key)
        # safetensors refuses tensors sharing memory (tied weights, views): write each as its own copy
        out = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
        meta = {"format": "pt", "converted_by": "bastion"}
        with atomic_path(dst) as tmp:
            save_file(out, str(tmp), metadata=meta)
        size = dst.stat().st_size
        summary = {"input": str(src), "output": str(dst), "tensors": len(out), "bytes": size,
                   "state_dict_key": found_at or None}
        if json_out:
            print_json(summary)
        else:
            where = f" (from key {found_at!r})" if found_at else ""
            typer.echo(f"wrote {len(out)} tensors{where}, {size:,} bytes, to {dst}")
        raise typer.Exit(EXIT_OK)
