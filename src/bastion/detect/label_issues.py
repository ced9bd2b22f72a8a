"""Label issues by confident learning (Northcutt et al. 2021), through ``cleanlab``.

Confident learning needs out-of-sample class probabilities: they come from ``pred_probs`` if you have
them, else from a scikit-learn estimator's cross-validated ``predict_proba``, or by default from
cross-validated (shuffled, stratified K folds) soft votes of an RBF support-vector machine and a
distance-weighted k-nearest-neighbour model on standardised features: the penultimate activations of
``model`` (a PyTorch model) or the flattened inputs (``model=None``).

Why that pair: confident learning can only flag a flip the out-of-fold model contradicts confidently.
The regularised logistic regression used before underfits the digits (a linear model of raw pixels), so
its probabilities left 15 % of random flips unflagged; the two non-linear models err on different
records, and their average is both more accurate and better calibrated (bench/poison.py, label flips).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from bastion.detect.base import PoisonDetector
from bastion.errors import InputError

#: neighbours of the default k-NN vote: enough that one flipped neighbour cannot outvote the rest
NEIGHBOURS = 15
#: SVM regularisation of the default vote (scikit-learn's RBF default gamma on standardised features)
SVM_C = 3.0


def default_estimator(n_train: int, seed: int) -> Any:
    """Soft vote of an RBF SVM and a distance-weighted k-NN on standardised features (see the module doc)."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    k = max(1, min(NEIGHBOURS, n_train - 1))
    vote = VotingClassifier([("svm", SVC(C=SVM_C, probability=True, random_state=seed)),
                             ("knn", KNeighborsClassifier(k, weights="distance"))], voting="soft")
    return make_pipeline(StandardScaler(), vote)


class LabelIssues(PoisonDetector):
    """Score = 1 - cleanlab's label quality (self-confidence); records cleanlab calls issues are flagged.

    ``threshold_`` sits between the least suspicious issue and the most suspicious record kept, so
    ``predict`` on the training records reproduces cleanlab's decision and extends it to new records.
    ``folds``: cross-validation folds for the probabilities; ``pred_probs`` (N, C) skips that step.
    """

    name = "label-issues"

    def __init__(self, folds: int = 5, seed: int = 0) -> None:
        self.folds = folds
        self.seed = seed

    def fit(self, model: Any, x: Any, y: Any = None, *, pred_probs: Any = None) -> LabelIssues:
        from bastion.detect.base import check_records

        self._given_probs = None if pred_probs is None else np.asarray(pred_probs, dtype=np.float64)
        xt, yt = check_records(x, y)
        self._fit(model, xt, yt)
        # The training records get cleanlab's own decision (not a pure score cut: confident learning
        # thresholds per class); the scalar threshold_ extends it to new records.
        self.labels_ = np.zeros(len(self.scores_), dtype=bool)
        self.labels_[self.issues_] = True
        return self

    def _features(self, x: Tensor) -> np.ndarray:
        if self.model_ is None or hasattr(self.model_, "predict_proba"):
            return x.flatten(1).double().numpy()
        from bastion.detect._features import penultimate

        return penultimate(self.model_, x)

    def _fit(self, model: Any, x: Tensor, y: Tensor | None) -> None:
        from cleanlab.filter import find_label_issues
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        assert y is not None
        yy = y.numpy()
        counts = np.bincount(yy)
        if (counts[counts > 0] < self.folds).any() or (counts > 0).sum() < 2:
            raise InputError("y", f"class counts {counts.tolist()}", f"at least 2 classes of at least {self.folds} records")
        self.model_ = model
        if self._given_probs is not None:
            probs = self._given_probs
            if probs.ndim != 2 or probs.shape[0] != yy.shape[0] or probs.shape[1] < counts.shape[0]:
                raise InputError("pred_probs", f"shape {probs.shape}", f"({yy.shape[0]}, classes)")
        else:
            feats = self._features(x)
            n_train = yy.shape[0] * (self.folds - 1) // self.folds
            est = clone(model) if hasattr(model, "predict_proba") else default_estimator(n_train, self.seed)
            cv = StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
            probs = cross_val_predict(est, feats, yy, cv=cv, method="predict_proba")
            self.estimator_ = est.fit(feats, yy)
        ranked = find_label_issues(yy, probs, return_indices_ranked_by="self_confidence")
        self.issues_ = np.sort(np.asarray(ranked, dtype=np.int64))
        if self._given_probs is not None:
            self.__dict__.pop("estimator_", None)
        scores = 1.0 - probs[np.arange(yy.shape[0]), yy]
        self.scores_ = scores
        flagged = np.zeros(yy.shape[0], dtype=bool)
        flagged[self.issues_] = True
        lo = scores[flagged].min() if flagged.any() else 1.0
        hi = scores[~flagged & (scores < lo)].max(initial=0.0)
        self.threshold_ = float((lo + hi) / 2) if flagged.any() else 1.0

    def _score(self, x: Tensor, y: Tensor | None) -> np.ndarray:
        assert y is not None
        if hasattr(self, "estimator_"):
            probs = self.estimator_.predict_proba(self._features(x))
        else:
            raise InputError("x", "new records", "records scored with the estimator fit() trained; "
                             "it was given pred_probs, so only the training records have scores")
        yy = y.numpy()
        if (yy >= probs.shape[1]).any():
            raise InputError("y", f"labels up to {int(yy.max())}", f"classes below {probs.shape[1]}")
        return np.asarray(1.0 - probs[np.arange(yy.shape[0]), yy])
