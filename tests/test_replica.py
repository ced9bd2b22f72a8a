"""Exact torch replicas of scikit-learn estimators: same predictions, and white-box numbers at the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

import bastion as bn
from bastion.core.replica import NotReplicable, open_model, to_torch


@pytest.fixture(scope="module")
def flat() -> bn.datasets.Dataset:
    return bn.datasets.digits(flatten=True)


ESTIMATORS = {
    "logreg": lambda: LogisticRegression(max_iter=300),
    "ridge": lambda: RidgeClassifier(),
    "sgd": lambda: SGDClassifier(random_state=0),
    "linsvc": lambda: LinearSVC(),
    "mlp-relu": lambda: MLPClassifier((24,), max_iter=200, random_state=0),
    "mlp-tanh": lambda: MLPClassifier((16, 16), activation="tanh", max_iter=200, random_state=0),
    "std+logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
    "minmax+mlp": lambda: make_pipeline(MinMaxScaler(clip=True), MLPClassifier((24,), max_iter=200, random_state=0)),
    "std+pca-whiten+mlp": lambda: make_pipeline(StandardScaler(), PCA(20, whiten=True, random_state=0),
                                                MLPClassifier((24,), max_iter=200, random_state=0)),
    "binary-logreg": lambda: LogisticRegression(max_iter=300),
    "binary-mlp": lambda: MLPClassifier((16,), max_iter=200, random_state=0),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_replica_reproduces_predictions(name: str, flat: bn.datasets.Dataset) -> None:
    xtr, ytr = flat.x_train.numpy(), flat.y_train.numpy()
    if name.startswith("binary"):
        ytr = (ytr >= 5).astype(np.int64)
    est = ESTIMATORS[name]().fit(xtr, ytr)
    net = to_torch(est)
    rng = np.random.default_rng(0)
    # The data and random points of the box, where the model was never trained: the replica must agree on both.
    probe = np.concatenate([flat.x_test.numpy(), rng.random((300, 64), dtype=np.float32)])
    with torch.no_grad():
        logits = net(torch.from_numpy(probe))
    assert np.array_equal(logits.argmax(1).numpy(), est.predict(probe))
    if hasattr(est, "decision_function"):
        dec = np.asarray(est.decision_function(probe))
        ref = logits[:, 1] if dec.ndim == 1 else logits
        np.testing.assert_allclose(ref.numpy(), dec, rtol=1e-4, atol=1e-4)  # sklearn computes in float32 here


def test_trees_are_not_replicable_and_the_real_model_is_checked(flat: bn.datasets.Dataset) -> None:
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(flat.x_train.numpy(), flat.y_train.numpy())
    with pytest.raises(NotReplicable, match="DecisionTreeClassifier"):
        to_torch(tree)
    opened, note = open_model(bn.wrap(tree), flat.x_test[:10])
    assert opened is None and "DecisionTreeClassifier" in note


def test_linear_binary_robust_accuracy_is_exact(flat: bn.datasets.Dataset) -> None:
    # Known answer: for a linear binary model the smallest L2 change of the decision is |w.x+b| / ||w||.
    # Wide bounds so that the box never binds: the true robust accuracy at eps is the share of correct
    # examples farther than eps from the hyperplane.
    ytr = (flat.y_train.numpy() >= 5).astype(np.int64)
    clf = LogisticRegression(max_iter=500).fit(flat.x_train.numpy(), ytr)
    x, y = flat.x_test[:150], (flat.y_test[:150] >= 5).long()
    w, b = clf.coef_[0], clf.intercept_[0]
    dist = np.abs(x.numpy().astype(np.float64) @ w + b) / np.linalg.norm(w)
    correct = clf.predict(x.numpy()) == y.numpy()
    eps = float(np.median(dist[correct]))
    truth = float((correct & (dist > eps)).mean())
    near_truth = float((correct & (dist > 0.98 * eps)).mean())
    model = bn.wrap(clf, bounds=(-10.0, 11.0))
    res = bn.evaluate(model, x, y, norm="l2", epsilons=[eps], suite="fast", checks=False, keep_examples=0)
    assert not res.upper_bound and res.settings["replica"]
    assert truth <= res.robust_accuracy[0] <= near_truth  # sound, and tight to 2 % of eps
    assert 0.3 < truth < 0.7
    blind = bn.evaluate(model, x, y, norm="l2", epsilons=[eps], suite="fast", checks=False, keep_examples=0,
                        replica=False, allow_blackbox_only=True)
    assert blind.upper_bound and blind.robust_accuracy[0] >= truth


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_whitebox_on_replica_beats_blackbox_and_counts_on_the_real_model(flat: bn.datasets.Dataset) -> None:
    est = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=200, random_state=0))
    est.fit(flat.x_train.numpy(), flat.y_train.numpy())
    x, y = flat.x_test[:80], flat.y_test[:80]
    opened = bn.evaluate(est, x, y, norm="l2", epsilons=[0.5], suite="fast", keep_examples=0)
    blind = bn.evaluate(est, x, y, norm="l2", epsilons=[0.5], suite="fast", keep_examples=0, replica=False)
    assert not opened.upper_bound and [a.name for a in opened.attacks][:2] == ["APGD-CE", "APGD-T"]
    assert not [f for f in opened.findings if f.severity == "high"]
    assert blind.upper_bound and blind.bounded_by == ["Square"]
    assert {f.check: f.severity for f in blind.findings}["blackbox_only"] == "high"
    assert opened.robust_accuracy[0] <= blind.robust_accuracy[0]
    # Every example counted broken is misclassified by the real scikit-learn model, inside the ball.
    broken = torch.isfinite(opened.broken_eps) & opened.correct
    assert broken.any()
    adv = opened.x_adv[broken].numpy()
    assert (est.predict(adv) != y[broken].numpy()).all()
    assert float((opened.x_adv[broken] - x[broken]).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_skops_standard_estimators_load_without_trust_and_others_are_named(flat: bn.datasets.Dataset,
                                                                          tmp_path: pytest.TempPathFactory) -> None:
    sio = pytest.importorskip("skops.io")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import FunctionTransformer

    from bastion.core.loading import load_model
    from bastion.errors import ModelLoadError

    xtr, ytr = flat.x_train.numpy()[:300], flat.y_train.numpy()[:300]
    mlp = make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=20, random_state=0)).fit(xtr, ytr)
    rf = RandomForestClassifier(3, max_depth=3, random_state=0).fit(xtr, ytr)
    odd = make_pipeline(FunctionTransformer(np.sort), LogisticRegression(max_iter=50)).fit(xtr, ytr)
    for name, est in (("mlp", mlp), ("rf", rf), ("odd", odd)):
        sio.dump(est, str(tmp_path / f"{name}.skops"))  # type: ignore[operator]
    for name, est in (("mlp", mlp), ("rf", rf)):
        m = load_model(tmp_path / f"{name}.skops")  # type: ignore[operator]
        assert torch.equal(m.predict(flat.x_test[:20]), torch.from_numpy(est.predict(flat.x_test[:20].numpy())))
    untrusted = sio.get_untrusted_types(file=str(tmp_path / "odd.skops"))  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=r"numpy\.sort") as info:
        load_model(tmp_path / "odd.skops")  # type: ignore[operator]
    assert all(t in str(info.value) for t in untrusted if "numpy.sort" in t)
    assert load_model(tmp_path / "odd.skops", trust_pickle=True) is not None  # type: ignore[operator]
