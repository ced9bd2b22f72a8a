"""TorchScript code (``code/**.py`` in a TorchScript archive): calls that reach the OS, imports or files.

TorchScript is a restricted language, but its archives carry source text that ``torch.jit.load`` compiles,
and operators from any registered namespace can be called. Ordinary archives only call PyTorch's own
operators, so anything else is worth a look.
"""

from __future__ import annotations

import re

from bastion.scan.engine import Context
from bastion.scan.findings import Severity

#: operator namespaces PyTorch itself registers
TORCH_OP_NAMESPACES = frozenset({
    "aten", "prim", "quantized", "_quantized", "profiler", "_caffe2", "mkldnn", "mkl", "onednn", "fbgemm",
    "c10d", "_c10d_functional", "_c10d_functional_autograd", "sparse", "quantized_decomposed", "prims",
    "_prims", "higher_order", "cuda", "xnnpack", "_nnapi", "torchvision", "image", "_dtensor",
    "inductor", "_inductor_test", "debugprims", "rngprims",
})
_CRITICAL_PATTERNS = [
    (re.compile(r"\b__import__\b"), "calls __import__"),
    (re.compile(r"(?<![\w.])(os|subprocess|sys|builtins|posix|nt|shutil|socket|ctypes|importlib|pickle|"
                r"marshal|runpy|pty|urllib|requests)\s*\.\s*\w+"), "uses the Python module"),
    (re.compile(r"(?<![\w.])(eval|exec|execfile|compile|open|breakpoint|input)\s*\("), "calls the builtin"),
    # operators that write, read or memory-map files named at run time (torch.save, from_file, jit.save...)
    (re.compile(r"\b(from_file|save|load|_save_for_mobile|_save_jit_module|_load_for_mobile|_load_jit_module|"
                r"_save_parameters|_load_parameters|save_to_buffer|to_file|tofile|fromfile|memmap|mmap|"
                r"_save_mobile_module|export_opnames)\s*\("), "writes, reads or maps a file with"),
]
#: operator names that would be an OS or code primitive in any namespace
_OS_OPS = frozenset({"system", "popen", "exec", "execv", "execve", "eval", "spawn", "fork", "__import__",
                     "import_module", "open", "getattr", "setattr", "compile", "rmtree", "unlink", "urlopen"})
_OPS = re.compile(r"\bops\s*\.\s*(\w+)\s*\.\s*(\w+)")


def scan_torchscript_code(ctx: Context, raw: bytes, where: str) -> None:
    text = raw.decode("utf-8", "replace")
    reported: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        for pattern, what in _CRITICAL_PATTERNS:
            for m in pattern.finditer(line):
                key = m.group(0)
                if key not in reported:
                    reported.add(key)
                    ctx.emit("BASTION-TORCHSCRIPT-CODE", Severity.CRITICAL, where, f"line {lineno}",
                             f"TorchScript code {what}: {line.strip()[:120]}")
        for m in _OPS.finditer(line):
            ns, op = m.group(1), m.group(2)
            key = f"ops.{ns}.{op}"
            if key in reported:
                continue
            if op in _OS_OPS or ns in ("os", "builtins", "subprocess", "sys"):
                reported.add(key)
                ctx.emit("BASTION-TORCHSCRIPT-CODE", Severity.CRITICAL, where, f"line {lineno}",
                         f"TorchScript code calls operator torch.{key}, an OS/code primitive")
            elif ns not in TORCH_OP_NAMESPACES:
                reported.add(key)
                ctx.emit("BASTION-TORCHSCRIPT-CUSTOM-OP", Severity.HIGH, where, f"line {lineno}",
                         f"TorchScript code calls torch.{key} from the custom namespace {ns!r}")
