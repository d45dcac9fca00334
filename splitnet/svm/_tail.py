"""An SVM tail evaluated in numpy: pooling, standardisation, libsvm's one-vs-one decision
values, scikit-learn's one-vs-rest decision function and Platt probabilities (one
sigmoid per class on it, normalised), from plain arrays (no pickle).

The arrays are those of a fitted ``sklearn.svm.SVC`` calibrated by
``CalibratedClassifierCV(method="sigmoid", ensemble=False)`` (scikit-learn 1.9
deprecates ``SVC(probability=True)`` for it; see :func:`arrays_from_svc`), so
the server needs neither scikit-learn nor torch to evaluate it; the decision function
and probabilities equal scikit-learn's (tested). Standard library and numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitnet._errors import SplitnetError

__all__ = ["POOLS", "SVM_FORMAT", "SVMTail", "arrays_from_svc", "pool_features"]

SVM_FORMAT = "svm-npz"  # the manifest's tail.format of an SVM tail
POOLS = ("avg", "max", "none")
KERNELS = ("linear", "rbf", "both")


def pool_features(tensors: Sequence[np.ndarray], pool: str) -> np.ndarray:
    """``N x D`` float64 features from crossing tensors ``N x C x H x W`` (or ``N x D``):
    global average or max pooling over the spatial dimensions, or flattening (``none``);
    several tensors are concatenated in order."""
    if pool not in POOLS:
        raise SplitnetError(f"unknown pool {pool!r}; pools: {', '.join(POOLS)}")
    parts = []
    for t in tensors:
        t = np.asarray(t, dtype=np.float64)
        if t.ndim > 2 and pool == "avg":
            t = t.reshape(*t.shape[:2], -1).mean(axis=2)
        elif t.ndim > 2 and pool == "max":
            t = t.reshape(*t.shape[:2], -1).max(axis=2)
        parts.append(t.reshape(t.shape[0], -1))
    return np.concatenate(parts, axis=1)


def arrays_from_svc(calibrated, scaler) -> dict[str, np.ndarray]:
    """The arrays that define a fitted ``CalibratedClassifierCV(SVC(...), method="sigmoid",
    ensemble=False)`` (linear or RBF kernel) and its ``StandardScaler``, in libsvm's sign
    convention (a positive pairwise value votes for the pair's first class).

    ``pair_coef`` is dense ``n_pairs x n_SV``: the dual coefficients of each pair's two
    classes, zero elsewhere, so the decision values are ``K(x, SV) @ pair_coef.T + b``;
    a linear kernel folds them into ``coef`` (``n_pairs x D``).
    """
    (fitted,) = calibrated.calibrated_classifiers_
    svc = fitted.estimator
    n_classes = len(svc.classes_)
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    dual = np.asarray(svc.dual_coef_, dtype=np.float64)
    intercept = np.asarray(svc.intercept_, dtype=np.float64).copy()
    if n_classes == 2:  # scikit-learn flips the binary case's public signs; undo it
        dual, intercept = -dual, -intercept
    coef = np.zeros((len(pairs), dual.shape[1]))
    for k, (i, j) in enumerate(pairs):
        si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
        coef[k, si] = dual[j - 1, si]
        coef[k, sj] = dual[i, sj]
    sv = np.asarray(svc.support_vectors_, dtype=np.float64)
    out = {
        "scaler_mean": np.asarray(scaler.mean_, dtype=np.float64),
        "scaler_scale": np.asarray(scaler.scale_, dtype=np.float64),
        "intercept": intercept,
        "platt_a": np.asarray([c.a_ for c in fitted.calibrators], dtype=np.float64),
        "platt_b": np.asarray([c.b_ for c in fitted.calibrators], dtype=np.float64),
        "classes": np.asarray(svc.classes_, dtype=np.int64),
    }
    if svc.kernel == "linear":
        out["coef"] = coef @ sv
    elif svc.kernel == "rbf":
        out["support_vectors"], out["pair_coef"] = sv, coef
        out["gamma"] = np.asarray(float(svc._gamma), dtype=np.float64)
    else:
        raise SplitnetError(f"only linear and rbf kernels are stored, got {svc.kernel!r}")
    return out


class SVMTail:
    """A fitted SVM as arrays; :meth:`predict_proba` is what the server answers.

    Args:
        arrays: from :func:`arrays_from_svc` (or an ``svm.npz``).
        pool: how crossing tensors become features (:data:`POOLS`).
    """

    def __init__(self, arrays: dict[str, np.ndarray], *, pool: str = "avg") -> None:
        if pool not in POOLS:
            raise SplitnetError(f"unknown pool {pool!r}; pools: {', '.join(POOLS)}")
        self.pool = pool
        a = {k: np.asarray(v) for k, v in arrays.items()}
        for key in ("scaler_mean", "scaler_scale", "intercept", "platt_a", "platt_b", "classes"):
            if key not in a:
                raise SplitnetError(f"the SVM arrays lack {key!r}")
        self.mean, self.scale = a["scaler_mean"], a["scaler_scale"]
        self.intercept, self.platt_a, self.platt_b = a["intercept"], a["platt_a"], a["platt_b"]
        self.classes = a["classes"]
        self.n_classes = len(self.classes)
        self.n_features = len(self.mean)
        n_pairs = self.n_classes * (self.n_classes - 1) // 2
        n_sigmoids = 1 if self.n_classes == 2 else self.n_classes
        if (
            self.n_classes < 2
            or len(self.intercept) != n_pairs
            or not len(self.platt_a) == len(self.platt_b) == n_sigmoids
        ):
            raise SplitnetError(f"the SVM arrays do not describe {self.n_classes} classes")
        if "coef" in a:
            self.kernel = "linear"
            self.coef = a["coef"]
            shape_ok = self.coef.shape == (n_pairs, self.n_features)
        elif "support_vectors" in a and "pair_coef" in a and "gamma" in a:
            self.kernel = "rbf"
            self.sv, self.pair_coef, self.gamma = (
                a["support_vectors"],
                a["pair_coef"],
                float(a["gamma"]),
            )
            shape_ok = self.sv.ndim == 2 and self.sv.shape[1] == self.n_features
            shape_ok = shape_ok and self.pair_coef.shape == (n_pairs, self.sv.shape[0])
            self._sv_sq = (self.sv**2).sum(axis=1)
        else:
            raise SplitnetError(
                "the SVM arrays have neither coef (linear) nor support vectors (rbf)"
            )
        if not shape_ok or self.scale.shape != self.mean.shape:
            raise SplitnetError("the SVM arrays' shapes do not agree with each other")

    @classmethod
    def load(cls, path: str | os.PathLike, *, pool: str) -> SVMTail:
        """Reads an ``svm.npz`` (``allow_pickle=False``: arrays of numbers only)."""
        try:
            with np.load(Path(path), allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise SplitnetError(f"cannot read the SVM arrays {path}: {e}") from None
        return cls(arrays, pool=pool)

    def features(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """The pooled features of a batch of crossing tensors, standardised."""
        x = pool_features(tensors, self.pool)
        if x.shape[1] != self.n_features:
            raise SplitnetError(f"the SVM takes {self.n_features} features, got {x.shape[1]}")
        return (x - self.mean) / self.scale

    def pairwise(self, x: np.ndarray) -> np.ndarray:
        """libsvm's one-vs-one decision values ``N x n_pairs`` of standardised features."""
        x = np.asarray(x, dtype=np.float64)
        if self.kernel == "linear":
            return x @ self.coef.T + self.intercept
        sq = (x**2).sum(axis=1)[:, None] + self._sv_sq[None, :] - 2 * x @ self.sv.T
        return np.exp(-self.gamma * np.maximum(sq, 0)) @ self.pair_coef.T + self.intercept

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """scikit-learn's ``SVC.decision_function`` (``decision_function_shape="ovr"``)."""
        dec = self.pairwise(x)
        if self.n_classes == 2:
            return -dec[:, 0]
        votes = np.zeros((len(dec), self.n_classes))
        conf = np.zeros_like(votes)
        k = 0
        for i in range(self.n_classes):
            for j in range(i + 1, self.n_classes):
                conf[:, i] += dec[:, k]
                conf[:, j] -= dec[:, k]
                votes[:, i] += dec[:, k] > 0
                votes[:, j] += dec[:, k] <= 0
                k += 1
        return votes + conf / (3 * (np.abs(conf) + 1))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Platt probabilities ``N x classes``: a sigmoid per class on the one-vs-rest
        decision function, normalised (``CalibratedClassifierCV.predict_proba``)."""
        dec = self.decision_function(x)
        if self.n_classes == 2:
            p1 = _expit(-(self.platt_a[0] * dec + self.platt_b[0]))
            return np.stack([1 - p1, p1], axis=1)
        p = _expit(-(self.platt_a * dec + self.platt_b))
        total = p.sum(axis=1, keepdims=True)
        uniform = np.full_like(p, 1 / self.n_classes)
        return np.divide(p, total, out=uniform, where=total != 0)

    def __call__(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities of a batch of crossing tensors."""
        return self.predict_proba(self.features(tensors))

    def describe(self) -> dict[str, Any]:
        d = {"kernel": self.kernel, "classes": self.n_classes, "features": self.n_features}
        if self.kernel == "rbf":
            d.update(support_vectors=int(self.sv.shape[0]), gamma=self.gamma)
        return d


def _expit(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings."""
    return np.exp(-np.logaddexp(0, -z))
