"""Which globals a model file may name: an allowlist of what ML files need, a denylist with severities.

Patterns are ``module:name`` with shell-style wildcards (``fnmatch``), e.g. ``torch.nn.modules.*:[A-Z]*``
(every class in PyTorch's layer modules: class names start with a capital, functions do not). A deny
pattern also covers submodules (``os:*`` matches ``os.path:join``) and every way of reaching the same
object through a dotted name (``torch._utils:os.system`` reaches ``os:system``). Deny wins over wildcard
allow entries; an exact allow entry (no wildcards) carves one name out of a denied namespace;
what neither list names is reported at ``unknown_severity`` (HIGH by default), so a file can only be
clean by naming things someone decided are safe.
"""

from __future__ import annotations

import _compat_pickle
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bastion.errors import InputError
from bastion.scan.findings import Severity
from bastion.scan.reviewed import REVIEWED

#: what a model file legitimately names (module:name globs)
DEFAULT_ALLOW: tuple[str, ...] = (
    # PyTorch tensors, storages, parameters and the small types a state dict holds
    "torch._utils:_rebuild_tensor",
    "torch._utils:_rebuild_tensor_v2",
    "torch._utils:_rebuild_tensor_v3",
    "torch._utils:_rebuild_parameter",
    "torch._utils:_rebuild_parameter_with_state",
    "torch._utils:_rebuild_sparse_tensor",
    "torch._utils:_rebuild_sparse_csr_tensor",
    "torch._utils:_rebuild_nested_tensor",
    "torch._utils:_rebuild_device_tensor_from_numpy",
    "torch._utils:_rebuild_device_tensor_from_cpu_tensor",
    "torch._utils:_rebuild_meta_tensor_no_storage",
    "torch._utils:_rebuild_wrapper_subclass",
    "torch._utils:_rebuild_qtensor",
    "torch._tensor:_rebuild_from_type",
    "torch._tensor:_rebuild_from_type_v2",
    "torch:BFloat16Storage",
    "torch:BoolStorage",
    "torch:ByteStorage",
    "torch:CharStorage",
    "torch:ComplexDoubleStorage",
    "torch:ComplexFloatStorage",
    "torch:DoubleStorage",
    "torch:FloatStorage",
    "torch:HalfStorage",
    "torch:IntStorage",
    "torch:LongStorage",
    "torch:QInt32Storage",
    "torch:QInt8Storage",
    "torch:QUInt2x4Storage",
    "torch:QUInt4x2Storage",
    "torch:QUInt8Storage",
    "torch:ShortStorage",
    "torch.storage:TypedStorage",
    "torch.storage:UntypedStorage",
    "torch:Size",
    "torch:Tensor",
    "torch:device",
    "torch:dtype",
    "torch:float",
    "torch:float16",
    "torch:float32",
    "torch:float64",
    "torch:float8_e4m3fn",
    "torch:float8_e4m3fnuz",
    "torch:float8_e5m2",
    "torch:float8_e5m2fnuz",
    "torch:float8_e8m0fnu",
    "torch:float4_e2m1fn_x2",
    "torch:bfloat16",
    "torch:half",
    "torch:double",
    "torch:complex32",
    "torch:complex64",
    "torch:complex128",
    "torch:int",
    "torch:int8",
    "torch:int16",
    "torch:int32",
    "torch:int64",
    "torch:int1",
    "torch:int2",
    "torch:int3",
    "torch:int4",
    "torch:int5",
    "torch:int6",
    "torch:int7",
    "torch:uint8",
    "torch:uint16",
    "torch:uint32",
    "torch:uint64",
    "torch:uint1",
    "torch:uint2",
    "torch:uint3",
    "torch:uint4",
    "torch:uint5",
    "torch:uint6",
    "torch:uint7",
    "torch:bool",
    "torch:long",
    "torch:short",
    "torch:cfloat",
    "torch:cdouble",
    "torch:qint8",
    "torch:quint8",
    "torch:qint32",
    "torch:contiguous_format",
    "torch:preserve_format",
    "torch:channels_last",
    "torch:channels_last_3d",
    "torch:legacy_contiguous_format",
    "torch:strided",
    "torch:sparse_coo",
    "torch:sparse_csr",
    "torch:per_tensor_affine",
    "torch:per_channel_affine",
    "torch.serialization:_get_layout",
    "torch.nn.parameter:Parameter",
    "torch.nn.parameter:Buffer",
    "torch.nn.parameter:UninitializedParameter",
    "torch.amp.grad_scaler:GradScaler",
    "torch.cuda.amp.grad_scaler:GradScaler",
    "torch.torch_version:TorchVersion",
    # TorchScript's own pickles (constants.pkl, *.debug_pkl) rebuild typed lists through these helpers,
    # which return their argument unchanged
    "torch.jit._pickle:build_intlist",
    "torch.jit._pickle:build_tensorlist",
    "torch.jit._pickle:build_doublelist",
    "torch.jit._pickle:build_boollist",
    "torch.jit._pickle:build_tensor_from_id",
    "torch.jit._pickle:restore_type_tag",
    # TorchScript archives name their own compiled classes under __torch__ (resolved by the TorchScript
    # loader from the archive's code, never imported from Python)
    "__torch__:*",
    "__torch__.*:*",
    # NumPy arrays, scalars and dtypes (both the numpy.core and the numpy 2 numpy._core spellings)
    "numpy.core.multiarray:_reconstruct",
    "numpy._core.multiarray:_reconstruct",
    "numpy.core.multiarray:scalar",
    "numpy._core.multiarray:scalar",
    "numpy.core.numeric:_frombuffer",
    "numpy._core.numeric:_frombuffer",
    "numpy:ndarray",
    "numpy:dtype",
    "numpy:matrix",
    "numpy.ma.core:MaskedArray",
    "numpy.ma.core:_mareconstruct",
    "numpy.dtypes:BoolDType",
    "numpy.dtypes:ByteDType",
    "numpy.dtypes:BytesDType",
    "numpy.dtypes:CLongDoubleDType",
    "numpy.dtypes:Complex128DType",
    "numpy.dtypes:Complex64DType",
    "numpy.dtypes:DateTime64DType",
    "numpy.dtypes:Float16DType",
    "numpy.dtypes:Float32DType",
    "numpy.dtypes:Float64DType",
    "numpy.dtypes:Int16DType",
    "numpy.dtypes:Int32DType",
    "numpy.dtypes:Int64DType",
    "numpy.dtypes:Int8DType",
    "numpy.dtypes:IntDType",
    "numpy.dtypes:LongDType",
    "numpy.dtypes:LongDoubleDType",
    "numpy.dtypes:LongLongDType",
    "numpy.dtypes:ObjectDType",
    "numpy.dtypes:ShortDType",
    "numpy.dtypes:StrDType",
    "numpy.dtypes:StringDType",
    "numpy.dtypes:TimeDelta64DType",
    "numpy.dtypes:UByteDType",
    "numpy.dtypes:UInt16DType",
    "numpy.dtypes:UInt32DType",
    "numpy.dtypes:UInt64DType",
    "numpy.dtypes:UInt8DType",
    "numpy.dtypes:UIntDType",
    "numpy.dtypes:ULongDType",
    "numpy.dtypes:ULongLongDType",
    "numpy.dtypes:UShortDType",
    "numpy.dtypes:VoidDType",
    "numpy:bool_",
    "numpy:float16",
    "numpy:float32",
    "numpy:float64",
    "numpy:float128",
    "numpy:longdouble",
    "numpy:double",
    "numpy:single",
    "numpy:half",
    "numpy:int8",
    "numpy:int16",
    "numpy:int32",
    "numpy:int64",
    "numpy:int_",
    "numpy:intc",
    "numpy:intp",
    "numpy:uint",
    "numpy:uint8",
    "numpy:uint16",
    "numpy:uint32",
    "numpy:uint64",
    "numpy:uintc",
    "numpy:uintp",
    "numpy:complex64",
    "numpy:complex128",
    "numpy:complex256",
    "numpy:clongdouble",
    "numpy:cdouble",
    "numpy:csingle",
    "numpy:longlong",
    "numpy:ulonglong",
    "numpy:short",
    "numpy:ushort",
    "numpy:byte",
    "numpy:ubyte",
    "numpy:str_",
    "numpy:bytes_",
    "numpy:object_",
    "numpy:void",
    "numpy:datetime64",
    "numpy:timedelta64",
    "numpy.random._pickle:__randomstate_ctor",
    "numpy.random._pickle:__generator_ctor",
    "numpy.random._pickle:__bit_generator_ctor",
    "_codecs:encode",
    # joblib's wrapper around arrays written inline (the pre-0.10 wrappers that name other files are denied)
    "joblib.numpy_pickle:NumpyArrayWrapper",
    # scikit-learn estimators and their internals, torch layers and optimizers, NumPy bit generators and
    # SciPy sparse types: exact names where they are defined, each reviewed (see reviewed.py)
    *REVIEWED,
    # pandas DataFrame/Series/Index pickles (pandas 2 and 3 name public classes under ``pandas``) and the
    # pyarrow helpers its string arrays use: data constructors that read nothing but their arguments
    "pandas:BooleanDtype",
    "pandas:Categorical",
    "pandas:CategoricalDtype",
    "pandas:DataFrame",
    "pandas:DatetimeIndex",
    "pandas:Float64Dtype",
    "pandas:Float32Dtype",
    "pandas:Index",
    "pandas:Int64Dtype",
    "pandas:Int32Dtype",
    "pandas:Int16Dtype",
    "pandas:Int8Dtype",
    "pandas:Interval",
    "pandas:IntervalIndex",
    "pandas:CategoricalIndex",
    "pandas:TimedeltaIndex",
    "pandas:PeriodIndex",
    "pandas:MultiIndex",
    "pandas:Period",
    "pandas:RangeIndex",
    "pandas:Series",
    "pandas:StringDtype",
    "pandas:DatetimeTZDtype",
    "pandas._libs.arrays:__pyx_unpickle_NDArrayBacked",
    "pandas._libs.internals:_unpickle_block",
    "pandas._libs.tslibs.offsets:MonthEnd",
    "pandas._libs.tslibs.offsets:Day",
    "pandas._libs.tslibs.offsets:Hour",
    "pandas._libs.tslibs.offsets:Minute",
    "pandas._libs.tslibs.offsets:Second",
    "pandas._libs.tslibs.timedeltas:_timedelta_unpickle",
    "pandas._libs.tslibs.timestamps:_unpickle_timestamp",
    "pandas.arrays:ArrowStringArray",
    "pandas.arrays:BooleanArray",
    "pandas.arrays:DatetimeArray",
    "pandas.arrays:FloatingArray",
    "pandas.arrays:IntegerArray",
    "pandas.arrays:TimedeltaArray",
    "pandas.arrays:StringArray",
    "pandas.arrays:PeriodArray",
    "pandas.arrays:IntervalArray",
    "pandas.core.indexes.base:_new_Index",
    "pandas.core.indexes.datetimes:_new_DatetimeIndex",
    "pandas.core.indexes.period:_new_PeriodIndex",
    "pandas.core.internals.managers:BlockManager",
    "pandas.core.internals.managers:SingleBlockManager",
    "pyarrow.lib:_restore_array",
    "pyarrow.lib:py_buffer",
    "pyarrow.lib:type_for_alias",
    # NumPy's Cython unpickle helper of SeedSequence (random_state of gradient boosting and others)
    "numpy.random.bit_generator:__pyx_unpickle_SeedSequence",
    # Python builtins and standard containers that hold data, not behaviour
    "builtins:set",
    "builtins:frozenset",
    "builtins:slice",
    "builtins:complex",
    "builtins:bytearray",
    "builtins:bytes",
    "builtins:object",
    "builtins:list",
    "builtins:dict",
    "builtins:tuple",
    "builtins:int",
    "builtins:float",
    "builtins:str",
    "builtins:bool",
    "builtins:range",
    "builtins:NoneType",
    "copyreg:_reconstructor",
    "copyreg:__newobj__",
    "copyreg:__newobj_ex__",
    "collections:OrderedDict",
    "collections:defaultdict",
    "collections:deque",
    "collections:Counter",
    "datetime:datetime",
    "datetime:date",
    "datetime:time",
    "datetime:timedelta",
    "datetime:timezone",
    "decimal:Decimal",
    "fractions:Fraction",
    "uuid:UUID",
    "pathlib:PosixPath",
    "pathlib:WindowsPath",
    "pathlib:PurePosixPath",
    "pathlib:PureWindowsPath",
    "argparse:Namespace",
    "enum:Enum",
)

_CRIT = Severity.CRITICAL
_HIGH = Severity.HIGH

#: known code-execution, file and network primitives; a module pattern covers its submodules
DEFAULT_DENY: tuple[tuple[str, Severity], ...] = (
    *((f"{m}:*", _CRIT) for m in (
        "os", "posix", "nt", "subprocess", "sys", "runpy", "pty", "socket", "shutil", "importlib",
        "imp", "zipimport", "pickle", "_pickle", "cPickle", "pickletools", "dill", "cloudpickle",
        "marshal", "types", "ctypes", "_ctypes", "webbrowser", "code", "codeop", "pdb", "bdb",
        "timeit", "cProfile", "profile", "trace", "asyncio", "multiprocessing", "_posixsubprocess",
        "commands", "popen2", "platform", "signal", "_thread", "threading", "concurrent",
        "http", "urllib", "urllib2", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib",
        "telnetlib", "xmlrpc", "socketserver", "ssl", "distutils", "setuptools", "pip",
        "pkg_resources", "site", "ensurepip", "venv", "sysconfig", "inspect", "gc", "io", "_io",
        "codecs", "tempfile", "glob", "fileinput", "shelve", "dbm", "sqlite3", "mmap", "resource",
        "fcntl", "logging.config", "IPython", "jupyter_client", "ipykernel", "joblib.parallel",
        "tarfile", "zipfile", "linecache", "tokenize", "compileall", "py_compile",
        "dis", "ast", "yaml", "jinja2", "lzma", "bz2", "gzip", "zlib", "bcrypt", "paramiko",
        "smtpd", "nntplib", "poplib", "imaplib", "__main__", "keras", "tensorflow",
        # standard-library corners that run commands or evaluate source
        "pkgutil", "idlelib", "lib2to3", "pydoc", "_pyrepl", "doctest", "_osx_support", "_aix_support",
        "_interpreters", "_xxsubinterpreters", "interpreters", "concurrent.interpreters", "logging.handlers",
        "cmd", "atexit", "weakref", "antigravity", "wsgiref", "mailcap", "pipes", "_socket", "_ssl",
        "_multiprocessing", "_winapi", "msvcrt", "winreg", "_winreg", "test", "unittest.mock", "jsonpickle",
        "huggingface_hub", "boto3", "botocore", "_posixshmem", "faulthandler", "readline", "rlcompleter",
    )),
    *((f"builtins:{n}", _CRIT) for n in (
        "eval", "exec", "execfile", "compile", "open", "__import__", "getattr", "setattr", "delattr",
        "globals", "locals", "vars", "breakpoint", "input", "help", "memoryview", "__build_class__",
        "__loader__", "reload", "file", "apply", "exit", "quit", "copyright", "credits", "license",
    )),
    ("logging:FileHandler", _CRIT),
    ("logging:StreamHandler", _HIGH),
    ("uuid:_*", _CRIT),
    ("_operator:attrgetter", _CRIT),
    ("_operator:methodcaller", _CRIT),
    ("_operator:call", _CRIT),
    ("_functools:reduce", _CRIT),
    ("operator:attrgetter", _CRIT),
    ("operator:methodcaller", _CRIT),
    ("operator:call", _CRIT),
    ("functools:reduce", _CRIT),
    ("copyreg:add_extension", _CRIT),
    ("_codecs:open", _CRIT),
    ("torch:load", _CRIT),
    ("torch:save", _CRIT),
    ("torch.serialization:*", _CRIT),
    ("torch.hub:*", _CRIT),
    ("torch._dynamo:*", _CRIT),
    ("torch._inductor:*", _CRIT),
    ("torch.jit:*", _CRIT),
    ("torch._jit_internal:*", _CRIT),
    ("torch.fx:*", _CRIT),
    ("torch.package:*", _CRIT),
    ("torch.utils.cpp_extension:*", _CRIT),
    ("torch.utils.data.datapipes:*", _CRIT),
    ("torch.distributed:*", _CRIT),
    ("torch.testing:*", _CRIT),
    ("torch._C:*", _HIGH),
    ("torch.ops:*", _HIGH),
    ("torch._ops:*", _HIGH),
    ("torch.storage:_load_from_bytes", _HIGH),
    ("torch._export:*", _CRIT),
    ("torch.export:*", _CRIT),
    ("torch.compiler:*", _CRIT),
    ("torch.onnx:*", _CRIT),
    ("torch.utils._config_module:*", _CRIT),
    ("torch.utils.collect_env:*", _CRIT),
    ("torch.utils.bottleneck:*", _CRIT),
    ("torch.utils.model_zoo:*", _CRIT),
    ("torch.utils.tensorboard:*", _CRIT),
    ("torch.multiprocessing:*", _CRIT),
    ("torch._functorch:*", _HIGH),
    ("numpy.lib._datasource:*", _CRIT),
    ("numpy:DataSource", _CRIT),
    ("numpy:load", _CRIT),
    ("numpy:loadtxt", _CRIT),
    ("numpy:genfromtxt", _CRIT),
    ("numpy:fromfile", _CRIT),
    ("numpy:fromregex", _CRIT),
    ("numpy:save*", _CRIT),
    ("numpy:memmap", _CRIT),
    ("numpy:tofile", _CRIT),
    ("numpy.lib.npyio:*", _CRIT),
    ("numpy.lib._npyio_impl:*", _CRIT),
    ("numpy.lib.format:*", _CRIT),
    ("numpy.testing:*", _CRIT),
    ("numpy.f2py:*", _CRIT),
    ("numpy.distutils:*", _CRIT),
    ("numpy.ctypeslib:*", _CRIT),
    ("numpy.core._ufunc_reconstruct", _HIGH),
    ("numpy.core:_ufunc_reconstruct", _HIGH),
    ("numpy._core:_ufunc_reconstruct", _HIGH),
    ("pandas:read_*", _CRIT),
    ("pandas.io:*", _CRIT),
    ("pandas.core.computation:*", _CRIT),
    ("pandas:eval", _CRIT),
    ("joblib:load", _CRIT),
    ("joblib:dump", _CRIT),
    ("joblib.numpy_pickle:load", _CRIT),
    ("joblib.numpy_pickle:dump", _CRIT),
    ("joblib.memory:*", _CRIT),
    # pre-0.10 joblib wrappers: np.load / open() on a file next to the pickle, named by the pickle
    ("joblib.numpy_pickle_compat:*", _HIGH),
    ("joblib.numpy_pickle:NDArrayWrapper", _HIGH),
    ("joblib.numpy_pickle:ZNDArrayWrapper", _HIGH),
    ("sklearn.utils._testing:*", _CRIT),
    ("sklearn.externals:*", _CRIT),
    ("sklearn.datasets:*", _CRIT),
    ("sklearn.utils._show_versions:*", _CRIT),
    ("scipy.io:*", _CRIT),
    ("scipy._lib._testutils:*", _CRIT),
    ("skops.io:*", _CRIT),
    ("onnxruntime:*", _HIGH),
    ("h5py:*", _CRIT),
)

#: attribute names that reach code execution, files or interpreter internals wherever they appear in a
#: dotted global (``some.module:helper.__globals__``), for names no list mentions
DANGEROUS_ATTRS = frozenset({
    "system", "popen", "popen2", "popen3", "popen4", "spawn", "spawnl", "spawnv", "spawnve", "spawnvp",
    "execv", "execve", "execl", "execlp", "execvp", "fork", "forkpty", "eval", "exec", "execfile",
    "compile", "__import__", "import_module", "run", "call", "check_call", "check_output", "Popen",
    "getattr", "setattr", "delattr", "globals", "locals", "vars", "open", "load", "loads", "unlink",
    "remove", "rmtree", "rmdir", "__globals__", "__builtins__", "__subclasses__", "__code__",
    "__getattribute__", "__class__", "__base__", "__bases__", "__mro__", "__dict__", "__func__",
    "__self__", "__reduce__", "__reduce_ex__", "__init_subclass__", "__loader__", "__spec__",
    "__closure__", "__setattr__", "__delattr__", "__call__", "breakpoint", "urlopen", "urlretrieve",
    "runstring", "run_path", "run_module", "startfile", "write", "write_text", "write_bytes",
    "read_text", "read_bytes", "connect", "create_connection",
})

#: where the same module went between Python 2 and 3 (pickle protocols < 3 use the old names)
_MODULE_ALIASES: dict[str, str] = dict(_compat_pickle.IMPORT_MAPPING)
_NAME_ALIASES: dict[tuple[str, str], tuple[str, str]] = dict(_compat_pickle.NAME_MAPPING)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


@dataclass(frozen=True)
class Limits:
    """Caps that keep zip bombs and pickle bombs from exhausting memory or time."""

    max_decompressed_bytes: int = 4 * 1024**3  # total, over everything decompressed from one file
    max_expansion: int = 25  # ... and at most this many times the file's size (256 MiB at least)
    max_depth: int = 10  # containers inside containers
    max_opcodes: int = 10_000_000  # per pickle
    max_payload_bytes: int = 512 * 1024**2  # one string/bytes constant inside a pickle


#: rule of a denied global that an exact allow entry lets through: reported at INFO, admitted by safe_load
ALLOWED_OVERRIDE_RULE = "BASTION-PICKLE-ALLOWED-BY-POLICY"


@dataclass(frozen=True)
class Verdict:
    """Why a global got its severity: ``rule_id`` and a short reason for the message."""

    severity: Severity | None
    rule_id: str
    reason: str


def _split_pattern(pattern: str) -> tuple[str, str]:
    text = pattern.strip()
    if ":" in text:
        mod, _, name = text.partition(":")
    elif "." in text:
        mod, _, name = text.rpartition(".")
    else:
        raise InputError("pattern", repr(pattern), "'module:name', e.g. 'mypkg.models:MyNet'")
    if not mod or not name:
        raise InputError("pattern", repr(pattern), "'module:name' with both parts non-empty")
    return mod, name


@dataclass(frozen=True)
class Pattern:
    module: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Pattern:
        return cls(*_split_pattern(text))

    @property
    def exact(self) -> bool:
        return not any(c in f"{self.module}{self.name}" for c in "*?[")

    def matches_allow(self, module: str, name: str) -> bool:
        # a wildcard name never silently admits a dotted attribute chain
        if "." in name and "." not in self.name:
            return False
        return fnmatch.fnmatchcase(module, self.module) and fnmatch.fnmatchcase(name, self.name)

    def matches_deny(self, module: str, name: str) -> bool:
        mod_ok = fnmatch.fnmatchcase(module, self.module) or fnmatch.fnmatchcase(module, self.module + ".*")
        if not mod_ok:
            return False
        head = name.split(".", 1)[0]
        return fnmatch.fnmatchcase(name, self.name) or fnmatch.fnmatchcase(head, self.name)

    def __str__(self) -> str:
        return f"{self.module}:{self.name}"


def normalize(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 spellings (``__builtin__``, ``copy_reg``) to the modules pickle really imports."""
    if (module, name) in _NAME_ALIASES:
        return _NAME_ALIASES[(module, name)]
    return _MODULE_ALIASES.get(module, module), name


def _reachable_pairs(module: str, name: str) -> Iterable[tuple[str, str]]:
    """Every (module, name) a dotted path may stand for: ``a.b:c.d`` also reaches ``b.c:d``, ``c:d``..."""
    parts = [p for p in module.split(".") + name.split(".") if p]
    for i in range(len(parts) - 1):
        for j in range(i + 1, len(parts)):
            yield ".".join(parts[i:j]), ".".join(parts[j:])


_GLOB_CHARS = frozenset("*?[")
#: verdicts remembered per policy; a file naming endless distinct globals only ever costs a re-fill
_VERDICT_CACHE_MAX = 1 << 16

Glob = Callable[[str], object]


def _is_literal(text: str) -> bool:
    return _GLOB_CHARS.isdisjoint(text)


def _glob(pattern: str) -> Glob:
    """``fnmatch.fnmatchcase(text, pattern)`` as one precompiled call (plain equality for literals)."""
    if _is_literal(pattern):
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern)).match


def _dotted_prefixes(module: str) -> list[str]:
    """``module`` and every ``p`` with ``module.startswith(p + ".")``: what ``p`` or ``p.*`` matches."""
    out = [module]
    i = module.find(".")
    while i >= 0:
        out.append(module[:i])
        i = module.find(".", i + 1)
    return out


class _Matcher:
    """A policy's allow and deny lists compiled once: patterns indexed by literal module, globs
    precompiled, and every verdict remembered (the same few globals recur in every file).

    Matching is exactly :meth:`Pattern.matches_allow` / :meth:`Pattern.matches_deny` over every pattern;
    the index only skips patterns whose literal module cannot match.
    """

    __slots__ = ("allow", "allow_literal", "allow_wild", "deny", "deny_literal", "deny_wild", "verdicts")

    def __init__(self, allow: tuple[Pattern, ...], deny: tuple[tuple[Pattern, Severity], ...]) -> None:
        self.allow = allow
        self.deny = deny
        # allow: (index, pattern name has a dot, name glob), by literal module or with a module glob
        self.allow_literal: dict[str, list[tuple[int, bool, Glob]]] = {}
        self.allow_wild: list[tuple[int, bool, Glob, Glob]] = []
        for i, pat in enumerate(allow):
            entry = (i, "." in pat.name, _glob(pat.name))
            if _is_literal(pat.module):
                self.allow_literal.setdefault(pat.module, []).append(entry)
            else:
                self.allow_wild.append((*entry, _glob(pat.module)))
        # deny: a module pattern also covers its submodules (``m`` and ``m.*``)
        self.deny_literal: dict[str, list[tuple[int, Glob]]] = {}
        self.deny_wild: list[tuple[int, Glob, Glob, Glob]] = []
        for i, (pat, _sev) in enumerate(deny):
            if _is_literal(pat.module):
                self.deny_literal.setdefault(pat.module, []).append((i, _glob(pat.name)))
            else:
                self.deny_wild.append((i, _glob(pat.name), _glob(pat.module), _glob(pat.module + ".*")))
        self.verdicts: dict[tuple[str, str], Verdict] = {}

    def allowed(self, module: str, name: str) -> list[Pattern]:
        """The allow patterns that admit ``module:name`` (in policy order)."""
        dotted = "." in name
        hits = [i for i, pdot, nm_ok in self.allow_literal.get(module, ())
                if (pdot or not dotted) and nm_ok(name)]
        hits += [i for i, pdot, nm_ok, mod_ok in self.allow_wild
                 if (pdot or not dotted) and mod_ok(module) and nm_ok(name)]
        return [self.allow[i] for i in sorted(hits)]

    def denied(self, pairs: Iterable[tuple[str, str]]) -> tuple[Severity, Pattern] | None:
        """The worst deny pattern matching any of ``pairs`` (the first listed among equally bad ones)."""
        best: tuple[Severity, int] | None = None
        deny = self.deny
        for module, name in pairs:
            head = name.split(".", 1)[0]
            hits = [i for prefix in _dotted_prefixes(module) for i, nm_ok in self.deny_literal.get(prefix, ())
                    if nm_ok(name) or nm_ok(head)]
            hits += [i for i, nm_ok, mod_ok, sub_ok in self.deny_wild
                     if (mod_ok(module) or sub_ok(module)) and (nm_ok(name) or nm_ok(head))]
            for i in hits:
                sev = deny[i][1]
                if best is None or sev > best[0] or (sev == best[0] and i < best[1]):
                    best = (sev, i)
        return None if best is None else (best[0], deny[best[1]][0])


@dataclass(frozen=True)
class Policy:
    """Allowlist, denylist and limits shared by the scanner, the CLI and ``safe_load``."""

    allow: tuple[Pattern, ...] = ()
    deny: tuple[tuple[Pattern, Severity], ...] = ()
    unknown_severity: Severity = Severity.HIGH
    limits: Limits = field(default_factory=Limits)
    #: the lists compiled for matching, plus the verdict cache (derived state, not part of the value)
    _matcher: _Matcher = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_matcher", _Matcher(self.allow, self.deny))

    @classmethod
    def default(cls) -> Policy:
        """The built-in policy. Immutable, so one shared instance (and its verdict cache) serves every scan."""
        if cls is Policy:
            return _default_policy()
        return cls(
            allow=tuple(Pattern.parse(p) for p in DEFAULT_ALLOW),
            deny=tuple((Pattern.parse(p), s) for p, s in DEFAULT_DENY),
        )

    def extended(self, allow: Iterable[str] = (), deny: Iterable[tuple[str, Severity]] = (),
                 unknown_severity: Severity | None = None, limits: Mapping[str, int] | None = None) -> Policy:
        """A copy with more allow/deny patterns (and optionally another default or limits)."""
        new_limits = self.limits
        if limits:
            known = set(Limits.__dataclass_fields__)
            bad = sorted(set(limits) - known)
            if bad:
                raise InputError("limits", ", ".join(bad), f"some of {', '.join(sorted(known))}")
            for key, value in limits.items():
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise InputError(f"limits.{key}", repr(value), "a positive integer")
            new_limits = replace(self.limits, **dict(limits))
        return Policy(
            allow=self.allow + tuple(Pattern.parse(p) for p in allow),
            deny=self.deny + tuple((Pattern.parse(p), Severity.parse(s)) for p, s in deny),
            unknown_severity=self.unknown_severity if unknown_severity is None else unknown_severity,
            limits=new_limits,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read a YAML policy that extends :meth:`default`::

            allow: ["mypkg.models:MyNet", "mypkg.layers:*"]
            deny: [{pattern: "mypkg.unsafe:*", severity: critical}, "otherpkg:run"]
            unknown_severity: high
            limits: {max_opcodes: 1000000}
        """
        import yaml

        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError("config", str(p), f"a readable YAML file ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise InputError("config", str(p), f"valid YAML ({exc})") from None
        return cls.default().extended_from_mapping(raw if raw is not None else {}, source=str(p))

    def extended_from_mapping(self, raw: Any, source: str = "policy") -> Policy:
        if not isinstance(raw, dict):
            raise InputError(source, type(raw).__name__, "a mapping with allow/deny/unknown_severity/limits")
        unknown = sorted(set(raw) - {"allow", "deny", "unknown_severity", "limits"})
        if unknown:
            raise InputError(f"{source}: key", ", ".join(unknown), "allow, deny, unknown_severity or limits")
        allow = raw.get("allow") or []
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise InputError(f"{source}: allow", repr(allow), "a list of 'module:name' strings")
        deny: list[tuple[str, Severity]] = []
        for entry in raw.get("deny") or []:
            if isinstance(entry, str):
                deny.append((entry, Severity.CRITICAL))
            elif isinstance(entry, dict) and isinstance(entry.get("pattern"), str):
                deny.append((entry["pattern"], Severity.parse(entry.get("severity", "critical"))))
            else:
                raise InputError(f"{source}: deny entry", repr(entry),
                                 "'module:name' or {pattern: 'module:name', severity: high}")
        sev = raw.get("unknown_severity")
        limits = raw.get("limits")
        if limits is not None and not isinstance(limits, dict):
            raise InputError(f"{source}: limits", repr(limits), "a mapping such as {max_opcodes: 1000000}")
        return self.extended(allow, deny, None if sev is None else Severity.parse(sev), limits)

    # -- classification -------------------------------------------------------------------------------

    def verdict(self, module: str, name: str) -> Verdict:
        """Severity (None = allowed), rule id and reason for a global ``module:name``."""
        cache = self._matcher.verdicts
        key = (module, name)
        v = cache.get(key)
        if v is None:
            v = self._verdict(module, name)
            if len(cache) >= _VERDICT_CACHE_MAX:
                cache.clear()
            cache[key] = v
        return v

    def _verdict(self, module: str, name: str) -> Verdict:
        mod, nm = normalize(module, name)
        if not _IDENT.match(mod) or not _IDENT.match(nm):
            # pickle would try to import it anyway (``find_class`` accepts odd strings); never silent
            return Verdict(self.unknown_severity, "BASTION-PICKLE-UNKNOWN-GLOBAL", "malformed global name")
        matcher = self._matcher
        # every spelling that reaches the same object, each once, in a fixed order
        pairs = dict.fromkeys([(module, name), (mod, nm), *_reachable_pairs(mod, nm)])
        worst = matcher.denied(pairs)
        allowed = matcher.allowed(mod, nm)
        # an exact allow entry carves one name out of a denied namespace; a wildcard allow never does
        if worst is not None:
            exact = [pat for pat in allowed if pat.exact]
            if not exact:
                return Verdict(worst[0], "BASTION-PICKLE-DANGEROUS", f"denied by {worst[1]}")
            if any(pat in _builtin_allow() for pat in exact):
                return Verdict(None, "", "allowed")  # the built-in carve-outs (e.g. TorchScript's list builders)
            # A user's policy allowed it on purpose, but never silently: a policy file in a repository is
            # itself attack surface.
            return Verdict(Severity.INFO, ALLOWED_OVERRIDE_RULE,
                           f"denied by {worst[1]} ({worst[0].name.lower()}) but allowed by the policy entry "
                           f"{exact[0]}; it still runs when the file is loaded")
        if allowed:
            return Verdict(None, "", "allowed")
        hits = sorted({p for p in (mod.split(".") + nm.split(".")) if p in DANGEROUS_ATTRS})
        if hits:
            return Verdict(Severity.CRITICAL, "BASTION-PICKLE-DANGEROUS",
                           f"reaches {', '.join(hits)} (a code, import or file primitive)")
        return Verdict(self.unknown_severity, "BASTION-PICKLE-UNKNOWN-GLOBAL", "not in the allowlist")

    def classify_global(self, module: str, name: str) -> Severity | None:
        """Severity of naming ``module:name`` in a pickle; None means allowed silently."""
        return self.verdict(module, name).severity


_DEFAULT: list[Policy] = []
_BUILTIN_ALLOW: list[frozenset[Pattern]] = []


def _builtin_allow() -> frozenset[Pattern]:
    if not _BUILTIN_ALLOW:
        _BUILTIN_ALLOW.append(frozenset(Pattern.parse(p) for p in DEFAULT_ALLOW))
    return _BUILTIN_ALLOW[0]


def _default_policy() -> Policy:
    if not _DEFAULT:
        _DEFAULT.append(Policy(
            allow=tuple(Pattern.parse(p) for p in DEFAULT_ALLOW),
            deny=tuple((Pattern.parse(p), s) for p, s in DEFAULT_DENY),
        ))
    return _DEFAULT[0]


def trusted_skops_types() -> list[str]:
    """The classes the default policy admits, as skops' ``trusted=`` wants them: exact ``module.Name``
    strings (scikit-learn, SciPy sparse and NumPy types; functions and ufuncs are left out)."""
    return sorted(f"{m}.{n}" for m, _, n in (e.partition(":") for e in REVIEWED)
                  if m.startswith(("sklearn", "scipy", "numpy.random")))
