"""``fit_svm_bundle``: a bundle whose head is the usual OpenVINO head and whose tail is an
SVM fitted on the features the device sends (the exported head on the raw frame, the
bundle's codec there and back), stored as arrays in ``svm.npz``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from splitnet._errors import ConfigError
from splitnet.bundle import MANIFEST_FILE, TAIL_FILE, file_sha256, read_manifest
from splitnet.svm._tail import KERNELS, POOLS, SVM_FORMAT, SVMTail, arrays_from_svc, pool_features

__all__ = ["KERNELS", "SVMFitResult", "device_features", "fit_svm", "fit_svm_bundle"]


SVM_FILE = "svm.npz"
DEFAULT_C = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
GAMMA_FACTORS = (0.01, 0.1, 1.0, 10.0)  # times 1 / features (scikit-learn's "scale")


@dataclass(frozen=True)
class SVMFitResult:
    """What :func:`fit_svm` chose: the calibrated SVC, its scaler and the CV scores."""

    calibrated: Any  # sklearn.calibration.CalibratedClassifierCV
    scaler: Any  # sklearn.preprocessing.StandardScaler
    params: dict[str, Any]
    cv_accuracy: float
    cv_by_kernel: dict[str, float]

    def tail(self, pool: str) -> SVMTail:
        return SVMTail(arrays_from_svc(self.calibrated, self.scaler), pool=pool)


def check_labels(labels: np.ndarray, class_names, cv: int) -> None:
    """At least two classes, and ``cv`` samples in each; raises :class:`ConfigError`."""
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        only = class_names[int(present[0])] if len(present) else "none"
        raise ConfigError(f"an SVM needs at least two classes; the data has one ({only!r})")
    if cv < 2:
        raise ConfigError(f"--cv must be >= 2, got {cv}")
    if counts.min() < cv:
        worst = class_names[int(present[counts.argmin()])]
        raise ConfigError(
            f"class {worst!r} has {counts.min()} images; --cv {cv} needs at least {cv} per class"
        )


def fit_svm(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    kernel: str = "both",
    cv: int = 5,
    c_grid=DEFAULT_C,
    gamma_factors=GAMMA_FACTORS,
    seed: int = 0,
) -> SVMFitResult:
    """Standardises ``features`` and fits ``SVC`` with C (and gamma for RBF) by stratified
    ``cv``-fold grid search, then Platt scaling (``CalibratedClassifierCV`` sigmoid,
    ``cv`` folds, one final SVC on all data)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kernel not in KERNELS:
        raise ConfigError(f"unknown kernel {kernel!r}; kernels: {', '.join(KERNELS)}")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    d = xs.shape[1]
    grids = []
    if kernel in ("linear", "both"):
        grids.append({"kernel": ["linear"], "C": list(c_grid)})
    if kernel in ("rbf", "both"):
        gammas = [f / d for f in gamma_factors]
        grids.append({"kernel": ["rbf"], "C": list(c_grid), "gamma": gammas})
    folds = StratifiedKFold(cv, shuffle=True, random_state=seed)
    search = GridSearchCV(SVC(), grids, cv=folds, scoring="accuracy", n_jobs=1, refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(xs, y)
    res = search.cv_results_
    by_kernel = {
        k: float(
            max(
                s
                for s, p in zip(res["mean_test_score"], res["params"], strict=True)
                if p["kernel"] == k
            )
        )
        for k in dict.fromkeys(p["kernel"] for p in res["params"])
    }
    params = dict(search.best_params_)
    cal = CalibratedClassifierCV(SVC(**params), method="sigmoid", cv=folds, ensemble=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal.fit(xs, y)
    return SVMFitResult(cal, scaler, params, float(search.best_score_), by_kernel)


def device_features(bundle_dir, dataset, *, progress: bool = True) -> tuple[list, np.ndarray]:
    """``(crossing tensors per frame, labels)`` of ``dataset`` as the server decodes them:
    the bundle's OpenVINO head on the uint8 frame, its codec there and back."""
    from tqdm import tqdm

    from splitnet.codec import decode
    from splitnet.data import sample_frame
    from splitnet.device import HeadRunner

    head = HeadRunner(bundle_dir, threads=1)
    codec = head.manifest.make_codec()
    tensors, labels = [], []
    for i in tqdm(
        range(len(dataset)), desc="features", unit="image", file=sys.stderr, disable=not progress
    ):
        x, y = dataset[i]
        frame = sample_frame(x)
        tensors.append([np.asarray(t, np.float32) for t in decode(codec.encode(head(frame)))])
        labels.append(int(y))
    return tensors, np.asarray(labels)


def fit_svm_bundle(
    model: str,
    *,
    input_shape: tuple[int, int, int],
    split: int | str,
    dataset,
    out_dir: str | os.PathLike,
    pool: str = "avg",
    kernel: str = "both",
    cv: int = 5,
    weights=None,
    num_classes: int | None = None,
    model_args=None,
    codec: str = "f16",
    name: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Path, SVMFitResult]:
    """Exports the head of ``model`` at ``split``, extracts the device's features of
    ``dataset`` through it, fits the SVM and writes the bundle (tail ``svm.npz``).

    Raises:
        ConfigError: an unknown pool or kernel, one class, too few images per class.
        splitnet.export.ExportError, ValueError: as ``export_bundle`` (an unknown split
            point lists valid ones).
    """
    from splitnet.export import export_bundle

    if pool not in POOLS:
        raise ConfigError(f"unknown pool {pool!r}; pools: {', '.join(POOLS)}")
    if kernel not in KERNELS:
        raise ConfigError(f"unknown kernel {kernel!r}; kernels: {', '.join(KERNELS)}")
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; choose another --out or pass --overwrite")
    class_names = tuple(dataset.class_names)
    if len(class_names) < 2:  # before the export: a folder with one label folder
        raise ConfigError(
            f"an SVM needs at least two classes; the data has one ({class_names[0]!r})"
            if class_names
            else "an SVM needs at least two classes; the data has none"
        )
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fit-svm-", dir=out))
    try:
        r = export_bundle(
            model,
            input_shape=input_shape,
            split=split,
            out_dir=staging,
            weights=weights,
            num_classes=num_classes,
            model_args=model_args,
            codec=codec,
            progress=progress,
        )
        tensors, labels = device_features(staging, dataset, progress=progress)
        check_labels(labels, class_names, cv)
        x = np.concatenate([pool_features(t, pool) for t in tensors])
        fit = fit_svm(x, labels, kernel=kernel, cv=cv, seed=seed)
        svm = fit.tail(pool)
        np.savez(staging / SVM_FILE, **arrays_from_svc(fit.calibrated, fit.scaler))
        (staging / TAIL_FILE).unlink()
        m = r.manifest
        files = {k: v for k, v in m.files.items() if k != TAIL_FILE}
        files[SVM_FILE] = file_sha256(staging / SVM_FILE)
        import sklearn

        tail = {
            "file": SVM_FILE,
            "format": SVM_FORMAT,
            "type": "svm",  # not a torch program: no layer to explain (Grad-CAM)
            "estimator": "sklearn.svm.SVC + CalibratedClassifierCV(sigmoid, ensemble=False)",
            "pool": pool,
            **svm.describe(),
            **{k: v for k, v in fit.params.items() if k != "kernel"},
            "cv_folds": cv,
            "cv_accuracy": fit.cv_accuracy,
            "cv_accuracy_by_kernel": fit.cv_by_kernel,
            "fit_images": len(labels),
            "probabilities": "platt",
            "inputs": [t.name for t in m.crossing],
            "batch": "dynamic",
            "max_batch": 64,
        }
        manifest = replace(
            m,
            name=name or f"{m.name}.svm",
            num_classes=len(class_names),
            task="classification",
            output=replace(m.output, kind="classes", multilabel=False, class_names=class_names),
            tail=tail,
            files=files,
            versions={**m.versions, "scikit-learn": sklearn.__version__},
        )
        (staging / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        for f in (*files, MANIFEST_FILE):
            os.replace(staging / f, out / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    read_manifest(out)  # the checksums hold
    return out, fit
