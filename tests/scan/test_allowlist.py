"""Every name the default policy admits is an exact, reviewed class or a hand-listed data type: no gadgets."""

from __future__ import annotations

import pytest

from bastion.scan import Policy, Severity
from bastion.scan.policy import DEFAULT_ALLOW, Pattern
from bastion.scan.reviewed import REVIEWED

from .allowlist_review import gadget_reason

pytestmark = pytest.mark.filterwarnings("ignore")


def test_every_allow_entry_outside_torchscript_names_is_exact() -> None:
    # TorchScript's own class namespace is resolved from the archive's code, never imported
    wild = [p for p in DEFAULT_ALLOW if not Pattern.parse(p).exact and not p.startswith("__torch__")]
    assert wild == []


def test_every_reviewed_name_passes_the_gadget_review() -> None:
    import numpy as np

    gadgets = {entry: reason for entry in REVIEWED if (reason := gadget_reason(*entry.split(":"))) is not None
               and not (entry.startswith("numpy:") and isinstance(getattr(np, entry[6:], None), np.ufunc))}
    assert gadgets == {}


@pytest.mark.parametrize("entry", [
    "sklearn.callback._transport:Listener",  # multiprocessing.connection.Listener re-exported
    "sklearn.callback._progressbar:Thread",
    "sklearn.datasets._covtype:GzipFile",
    "torch.fx.graph_module:GraphModule",  # built from generated source
    "sklearn.utils._testing:TempMemmap",
    "numpy.random.bit_generator:SeedlessSeedSequence",
])
def test_gadgets_are_refused_by_review_and_by_policy(entry: str) -> None:
    module, name = entry.split(":")
    assert gadget_reason(module, name) is not None
    assert Policy.default().classify_global(module, name) is not None
    assert f"{module}:{name}" not in REVIEWED


@pytest.mark.parametrize("entry", [
    "torch:float_power", "torch:int_repr", "numpy:interp", "numpy:intersect1d", "torch:complex",
    "sklearn.utils.fixes:Path", "sklearn.utils:Bunch",
])
def test_functions_and_re_exports_matched_by_old_patterns_are_no_longer_admitted(entry: str) -> None:
    module, name = entry.split(":")
    assert Policy.default().classify_global(module, name) is not None


@pytest.mark.parametrize("entry", [
    "sklearn.linear_model._logistic:LogisticRegression", "sklearn.tree._tree:Tree",
    "sklearn.ensemble._forest:RandomForestClassifier", "torch.nn.modules.linear:Linear",
    "torch.optim.adam:Adam", "numpy.random._mt19937:MT19937", "scipy.sparse._csr:csr_matrix",
    "numpy.random.bit_generator:SeedSequence", "sklearn._loss.loss:HalfBinomialLoss",
])
def test_ordinary_model_classes_stay_admitted(entry: str) -> None:
    module, name = entry.split(":")
    assert Policy.default().verdict(module, name).severity is None


def test_admitted_names_are_not_denied_elsewhere() -> None:
    pol = Policy.default()
    denied = [e for e in REVIEWED if pol.verdict(*e.split(":")).severity not in (None,)]
    assert denied == []
    assert Severity.HIGH  # the review only narrows what the default policy admits
