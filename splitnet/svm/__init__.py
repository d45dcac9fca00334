"""Classical tails: CNN features from a split's head and a scikit-learn SVM on the server.

``splitnet fit-svm`` exports the usual OpenVINO head, runs it (with the bundle's codec)
on labelled images, pools the crossing tensors and fits ``SVC`` (linear and/or RBF, C and
gamma by cross-validation, Platt probabilities); the bundle's tail is the SVM as numpy
arrays (``svm.npz``, ``tail.format == "svm-npz"``), evaluated by :class:`SVMTail` in numpy.
Importing this package needs numpy only; fitting needs scikit-learn (the ``research`` extra).

Example:
    >>> from splitnet.svm import fit_svm_bundle
    >>> out, fit = fit_svm_bundle("mobilenet-v2", input_shape=(3, 64, 64),
    ...                           split="features.0.2", dataset=ds, out_dir="bundles/svm")
"""

from splitnet.svm._tail import KERNELS, POOLS, SVM_FORMAT, SVMTail, arrays_from_svc, pool_features

__all__ = [
    "KERNELS",
    "POOLS",
    "SVM_FORMAT",
    "SVMTail",
    "arrays_from_svc",
    "fit_svm",
    "fit_svm_bundle",
    "pool_features",
]


def __getattr__(name: str):
    if name in ("fit_svm", "fit_svm_bundle", "device_features"):
        from splitnet.svm import _fit

        return getattr(_fit, name)
    raise AttributeError(name)
