"""Review the names the scanner's allowlist admits: enumerate, resolve, and name every gadget.

``python -m tests.scan.allowlist_review`` regenerates ``src/bastion/scan/reviewed.py`` from the
installed torch, NumPy, SciPy and scikit-learn; ``test_allowlist.py`` re-runs :func:`gadget_reason` over
every admitted name so an upgrade that turns an admitted class into a gadget fails the suite.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from typing import Any

#: module trees whose classes may be admitted (each class is still checked on its own)
REVIEWED_TREES = ("sklearn", "torch.nn.modules", "torch.optim", "numpy.random", "scipy.sparse")
#: parts of those trees that fetch data, start listeners, run tests or wrap parallel workers
EXCLUDED_TREES = ("sklearn.datasets", "sklearn.callback", "sklearn.utils._testing", "sklearn.externals",
                  "sklearn.utils._show_versions", "sklearn.experimental", "sklearn.utils.parallel",
                  "sklearn.utils._joblib", "sklearn.utils.fixes", "sklearn.utils._optional_dependencies",
                  "sklearn.conftest", "sklearn.utils._estimator_html_repr", "sklearn.utils._repr_html",
                  "sklearn.utils._plotting", "sklearn.utils._user_interface", "sklearn.inspection._plot",
                  "sklearn.metrics._plot", "sklearn.utils.estimator_checks", "sklearn.utils._array_api",
                  "sklearn.utils._tags", "sklearn.externals", "scipy.sparse.linalg", "scipy.sparse.csgraph")
#: base classes that run processes, open sockets or files, or compile code; nothing admitted derives from them
GADGET_BASES = ("socket.socket", "socketserver.BaseServer", "multiprocessing.process.BaseProcess",
                "multiprocessing.connection.Listener", "multiprocessing.connection.Connection",
                "multiprocessing.pool.Pool", "subprocess.Popen", "threading.Thread", "io.IOBase",
                "concurrent.futures._base.Executor", "tempfile.TemporaryDirectory", "logging.Handler",
                "zipfile.ZipFile", "tarfile.TarFile", "torch.fx.graph_module.GraphModule",
                "torch.jit.ScriptModule", "torch.utils.data.dataloader.DataLoader", "torch.utils.data.Dataset",
                "torch.package.PackageImporter", "joblib.memory.Memory", "joblib.parallel.Parallel")
#: owners of ``__setstate__``/``__reduce__``/``__reduce_ex__`` that were read and found to only copy
#: state into the object (no imports, no file or network access, no evaluation of strings)
REVIEWED_STATE_OWNERS = frozenset({
    "builtins.object", "sklearn.base.BaseEstimator", "torch.nn.modules.module.Module",
    "torch.optim.optimizer.Optimizer", "torch.optim.lr_scheduler.LRScheduler",
    "sklearn.tree._tree.Tree", "sklearn.neighbors._binary_tree.BinaryTree64",
    "sklearn.neighbors._binary_tree.BinaryTree32", "sklearn.neighbors._kd_tree.BinaryTree64",
    "sklearn.neighbors._kd_tree.BinaryTree32", "sklearn.neighbors._ball_tree.BinaryTree64",
    "sklearn.neighbors._ball_tree.BinaryTree32",
    "scipy.sparse._base._spbase", "numpy.random.bit_generator.BitGenerator",
    "numpy.random.bit_generator.SeedSequence", "numpy.random._generator.Generator",
    "numpy.random.mtrand.RandomState", "torch.nn.modules.rnn.RNNBase",
    "torch.nn.modules.activation.MultiheadAttention", "torch.nn.modules.batchnorm._BatchNorm",
    "torch.nn.modules.conv._ConvNd", "torch.nn.modules.transformer.TransformerEncoderLayer",
    "torch.nn.modules.transformer.TransformerDecoderLayer", "torch.nn.modules.transformer.Transformer",
    "torch.nn.modules.transformer.TransformerEncoder", "torch.optim.swa_utils.SWALR",
    "torch.optim.lr_scheduler.ReduceLROnPlateau", "torch.optim.lr_scheduler.CyclicLR",
    "torch.optim.lr_scheduler.OneCycleLR", "torch.optim.lr_scheduler.LambdaLR",
    "torch.optim.lr_scheduler.MultiplicativeLR", "torch.optim.lr_scheduler.SequentialLR",
    "torch.optim.lr_scheduler.ChainedScheduler",
    # optimizers: ``super().__setstate__`` then ``setdefault`` of hyper-parameters on each param group
    "torch.optim.Adafactor", "torch.optim.adadelta.Adadelta", "torch.optim.adagrad.Adagrad",
    "torch.optim.adam.Adam", "torch.optim.adamax.Adamax", "torch.optim.adamw.AdamW", "torch.optim.asgd.ASGD",
    "torch.optim.nadam.NAdam", "torch.optim.radam.RAdam", "torch.optim.rmsprop.RMSprop",
    "torch.optim.rprop.Rprop", "torch.optim.sgd.SGD",
    # layers: ``super().__setstate__`` then defaults for attributes older versions did not save
    "torch.nn.modules.activation.LogSoftmax", "torch.nn.modules.activation.Softmax",
    "torch.nn.modules.activation.Softmin", "torch.nn.modules.pooling.AvgPool3d",
    "torch.nn.modules.upsampling.Upsample",
    # ``__reduce_ex__`` that names the class and a member value; Bunch's ``__setstate__`` does nothing
    "enum.Enum", "sklearn.utils._bunch.Bunch",
    # re-cast a node array to the platform's dtype / rebuild the interpolation function from fitted arrays
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", "sklearn.isotonic.IsotonicRegression",
    # maps the pre-1.13 row/col attributes onto coords
    "scipy.sparse._coo.coo_matrix",
})
#: scikit-learn's compiled (Cython) extension types: their ``__setstate__``/``__reduce__`` are generated
#: field copies or rebuild from constructor arguments; there is no Python source to reach from a pickle
COMPILED_OWNERS_TREE = "sklearn."
_STATE_METHODS = ("__setstate__", "__reduce__", "__reduce_ex__")


def _qual(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _resolve(dotted: str) -> Any:
    mod, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        return None


def gadget_reason(module: str, name: str) -> str | None:
    """Why ``module:name`` must not be admitted, or None when it passes the review."""
    if not any(module == t or module.startswith(t + ".") for t in REVIEWED_TREES) or \
            any(module == t or module.startswith(t + ".") for t in EXCLUDED_TREES):
        return f"module {module} is outside the reviewed trees"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        return f"does not resolve ({exc})"
    if not inspect.isclass(obj):
        return "not a class"
    if obj.__module__ != module or obj.__qualname__ != name:
        return f"re-export of {_qual(obj)} (admit names only where they are defined)"
    for base in GADGET_BASES:
        cls = _resolve(base)
        if isinstance(cls, type) and issubclass(obj, cls):
            return f"derives from {base}"
    for meth in _STATE_METHODS:
        for klass in obj.__mro__:
            if meth in vars(klass):
                owner = _qual(klass)
                if meth == "__reduce_ex__" and owner == "builtins.object":
                    break
                if owner not in REVIEWED_STATE_OWNERS and not _same_as_object(klass, meth) \
                        and not _compiled_sklearn(klass, meth):
                    return f"{meth} defined by {owner}, which was not reviewed"
                break
    return None


def _compiled_sklearn(klass: type, meth: str) -> bool:
    impl = vars(klass)[meth]
    compiled = not (inspect.isfunction(impl) or inspect.ismethod(impl))
    return compiled and klass.__module__.startswith(COMPILED_OWNERS_TREE) and \
        not getattr(sys.modules.get(klass.__module__), "__file__", "").endswith(".py")


def _same_as_object(klass: type, meth: str) -> bool:
    return vars(klass)[meth] is getattr(object, meth, None)


def candidates() -> Iterator[tuple[str, str]]:
    """Every capitalised class defined in a module of the reviewed trees."""
    seen: set[tuple[str, str]] = set()
    for tree in REVIEWED_TREES:
        root = importlib.import_module(tree)
        names = [tree]
        if hasattr(root, "__path__"):
            names += [m.name for m in pkgutil.walk_packages(root.__path__, tree + ".")]
        for modname in names:
            if ".tests" in modname or "._test" in modname or "conftest" in modname:
                continue
            if any(modname == t or modname.startswith(t + ".") for t in EXCLUDED_TREES):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mod = importlib.import_module(modname)
            except Exception:
                continue
            for attr, obj in sorted(vars(mod).items()):
                named_like_a_class = attr.lstrip("_")[:1].isupper() or attr.endswith(("_matrix", "_array"))
                if named_like_a_class and inspect.isclass(obj) and obj.__module__ == modname \
                        and obj.__qualname__ == attr and (modname, attr) not in seen:
                    seen.add((modname, attr))
                    yield modname, attr


def ufuncs() -> list[str]:
    """NumPy's ufuncs by their top-level names (what FunctionTransformer(np.log1p) pickles): pure math."""
    import numpy as np

    return sorted(f"numpy:{k}" for k, v in vars(np).items() if isinstance(v, np.ufunc) and v.__name__ == k)


def main() -> None:
    from bastion.scan.policy import DEFAULT_DENY, Pattern

    deny = [Pattern.parse(p) for p, _ in DEFAULT_DENY]
    admitted: list[str] = []
    rejected: list[str] = []
    for module, name in candidates():
        reason = gadget_reason(module, name)
        if reason is None and any(p.matches_deny(module, name) for p in deny):
            reason = "denied by the denylist"
        if issubclass(getattr(importlib.import_module(module), name), BaseException):
            reason = "an exception class"
        (rejected if reason else admitted).append(f"{module}:{name}" + (f"  # {reason}" if reason else ""))
    lines = ['"""Exact names the default policy admits beyond the hand-written list (generated, then reviewed).',
             "",
             "Made by ``python -m tests.scan.allowlist_review`` from the installed scikit-learn, torch, NumPy",
             "and SciPy: every class *defined* (not re-exported) in a reviewed module, minus gadgets (see",
             "``tests/scan/allowlist_review.py``). ``tests/scan/test_allowlist.py`` re-checks each entry.",
             '"""', "", "REVIEWED: tuple[str, ...] = ("]
    lines += [f'    "{a}",' for a in admitted + ufuncs()]
    lines += [")", ""]
    out = "src/bastion/scan/reviewed.py"
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    print(f"{len(admitted)} admitted, {len(rejected)} rejected -> {out}", file=sys.stderr)
    for r in rejected:
        print("  rejected", r, file=sys.stderr)


if __name__ == "__main__":
    main()
