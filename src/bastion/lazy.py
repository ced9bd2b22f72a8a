"""Package members imported on first use (PEP 562), so a command that needs one light module of a package
does not pay for the heavy ones (torch, FastAPI) its ``__init__`` would otherwise import."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_members(package: str, where: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: member ``name`` is imported from ``package.where[name]`` on
    first access and kept in ``namespace`` (the package's ``globals()``), so the hook runs once per name."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value
        return value

    return __getattr__
