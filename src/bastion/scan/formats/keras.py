"""Keras model configs (``.keras`` config.json, ``.h5`` model_config): Lambda bytecode, custom objects."""

from __future__ import annotations

import json
from typing import Any

from bastion.scan.engine import Context
from bastion.scan.findings import Severity

_MAX_NODES = 1_000_000


def scan_keras_config_json(ctx: Context, raw: bytes, where: str) -> None:
    try:
        config = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, where, "", f"Keras config is not valid JSON ({exc})")
        return
    scan_keras_config(ctx, config, where)


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith(("keras.", "tf_keras", "tensorflow.keras", "tensorflow.python.keras"))


def scan_keras_config(ctx: Context, config: Any, where: str, prefix: str = "") -> None:
    """Walk a config tree (iteratively: configs can be deep) and flag what runs code on load."""
    todo: list[tuple[Any, str]] = [(config, "")]
    seen = 0
    while todo and seen < _MAX_NODES:
        node, path = todo.pop()
        seen += 1
        if isinstance(node, list):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
        label = f"{prefix}{path or '/'}" + (f" ({cls} {name!r})" if cls else "")
        if cls == "Lambda":
            fn = node.get("config", {}).get("function") if isinstance(node.get("config"), dict) else None
            ftype = node.get("config", {}).get("function_type") if isinstance(node.get("config"), dict) else None
            if isinstance(fn, (list, tuple)) or ftype == "lambda" or (isinstance(fn, dict)
                                                                       and fn.get("class_name") == "__lambda__"):
                ctx.emit("BASTION-KERAS-LAMBDA", Severity.CRITICAL, where, label,
                         "Lambda layer carries marshalled Python bytecode that runs when the model is loaded")
            else:
                ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                         f"Lambda layer calls the Python function {fn!r}")
        elif cls == "__lambda__":
            ctx.emit("BASTION-KERAS-LAMBDA", Severity.CRITICAL, where, label,
                     "serialized lambda with marshalled Python bytecode")
        module = node.get("module")
        if isinstance(module, str) and cls and not _is_keras_module(module):
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"object {cls!r} comes from module {module!r}, outside Keras (imported when loaded)")
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered and not registered.startswith("keras"):
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"custom registered object {registered!r} (its code must be importable to load)")
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                todo.append((value, f"{path}/{key}"))
