"""Every rule the scanner can report: id, default severity and a one-line description (SARIF uses these)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.scan.findings import Severity


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    summary: str


_RULES = [
    Rule("BASTION-PICKLE-DANGEROUS", Severity.CRITICAL,
         "pickle imports or calls a known code-execution, file or network primitive"),
    Rule("BASTION-PICKLE-UNKNOWN-GLOBAL", Severity.HIGH,
         "pickle imports a global outside the allowlist of what ML files need"),
    Rule("BASTION-PICKLE-DYNAMIC-GLOBAL", Severity.CRITICAL,
         "STACK_GLOBAL whose module or name is not a constant string (computed at load time)"),
    Rule("BASTION-PICKLE-COMPUTED-CALL", Severity.HIGH,
         "pickle calls something that is not a plain global (the result of another call, an extension code...)"),
    Rule("BASTION-PICKLE-BUILD-GLOBAL", Severity.CRITICAL,
         "BUILD sets attributes on an imported module, class or function (monkey-patching at load time)"),
    Rule("BASTION-PICKLE-EXT", Severity.HIGH,
         "EXT1/EXT2/EXT4 opcode: copyreg's extension registry is empty in ordinary Python, so this is unusual"),
    Rule("BASTION-PICKLE-PERSID", Severity.MEDIUM,
         "persistent id outside a PyTorch checkpoint: the loader's persistent_load decides what it becomes"),
    Rule("BASTION-PICKLE-NESTED", Severity.MEDIUM,
         "pickle carries bytes that its loader unpickles again (scanned as a nested pickle)"),
    Rule("BASTION-PARSE", Severity.HIGH,
         "the file could not be fully parsed, so it cannot be called clean"),
    Rule("BASTION-LIMIT", Severity.HIGH,
         "a size, nesting or opcode limit was hit; the rest of the file was not scanned"),
    Rule("BASTION-ZIP-ANOMALY", Severity.MEDIUM,
         "zip entry with odd flag bits, bad CRC, encryption flag or entries hidden from the central directory"),
    Rule("BASTION-MULTI-STREAM", Severity.LOW,
         "several gzip/bz2/xz streams back to back; readers join them, so the joined bytes were scanned"),
    Rule("BASTION-TRAILING-DATA", Severity.MEDIUM,
         "bytes after the end of the format's payload (polyglot files hide a second format there)"),
    Rule("BASTION-TORCHSCRIPT-CODE", Severity.CRITICAL,
         "TorchScript code calls an operating-system, import or file primitive"),
    Rule("BASTION-TORCHSCRIPT-CUSTOM-OP", Severity.HIGH,
         "TorchScript code calls an operator namespace outside PyTorch's own (needs native code to load)"),
    Rule("BASTION-NUMPY-OBJECT", Severity.MEDIUM,
         "NumPy object array: loading it needs allow_pickle=True (its pickle is scanned too)"),
    Rule("BASTION-KERAS-LAMBDA", Severity.CRITICAL,
         "Keras Lambda layer or function with marshalled Python bytecode"),
    Rule("BASTION-KERAS-CUSTOM", Severity.HIGH,
         "Keras config names a module or registered object outside Keras"),
    Rule("BASTION-ONNX-EXTERNAL-PATH", Severity.HIGH,
         "ONNX external data location is absolute or escapes the model's folder"),
    Rule("BASTION-ONNX-CUSTOM-DOMAIN", Severity.HIGH,
         "ONNX operator domain outside ai.onnx, ai.onnx.ml and com.microsoft (needs a native custom-op library)"),
    Rule("BASTION-SAFETENSORS-INVALID", Severity.HIGH,
         "safetensors header is not well formed (size, JSON, dtypes, offsets, shapes)"),
    Rule("BASTION-ARCHIVE-UNSCANNABLE", Severity.HIGH,
         "archive member is encrypted or uses an unsupported compression, so it could not be scanned"),
    Rule("BASTION-PICKLE-MEMO-BOMB", Severity.MEDIUM,
         "pickle memo index so large that the loader's memo table exhausts memory (a pickle bomb)"),
    Rule("BASTION-PICKLE-OUT-OF-BAND", Severity.MEDIUM,
         "pickle refers to out-of-band buffers that ordinary loaders refuse and that live outside the file"),
    Rule("BASTION-PICKLE-ALLOWED-BY-POLICY", Severity.INFO,
         "a denied global that an exact entry of the user's policy allows: it still runs when the file loads"),
    Rule("BASTION-UNRECOGNISED", Severity.MEDIUM,
         "file named like a model (by its extension) whose bytes match no model format, so nothing was analysed"),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}
