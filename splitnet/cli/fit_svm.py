"""``splitnet fit-svm MODEL --split POINT --data SPEC --out BUNDLE``: CNN features + an SVM tail.

Exports the usual OpenVINO head at POINT, runs it and the bundle's codec on every image of
--data (the features the server will decode), pools each crossing tensor (global average,
max, or flattened), standardises, and fits scikit-learn's SVC with C (and gamma for RBF)
chosen by stratified cross-validation, then Platt probabilities. The tail is stored as
numpy arrays (svm.npz, no pickle) and served by splitnet serve like any classifier tail.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from splitnet._errors import ConfigError
from splitnet.cli import _args
from splitnet.svm import KERNELS, POOLS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fit-svm",
        help="fit an SVM on a split's head features: a bundle with a classical tail",
        description=__doc__,
    )
    p.add_argument("model", help="a registered model name (splitnet models)")
    p.add_argument(
        "--split",
        required=True,
        type=_args.split_point,
        help="split point name or index (splitnet points)",
    )
    p.add_argument(
        "--data", required=True, help="labelled images: folder:DIR or parts:n=...,size=..."
    )
    p.add_argument(
        "--input",
        type=_args.input_shape,
        metavar="CxHxW",
        help="input shape (default: parts' size, or the first image's size; images are resized)",
    )
    p.add_argument("--pool", choices=POOLS, default="avg", help="avg (default), max or none")
    p.add_argument(
        "--kernel", choices=KERNELS, default="both", help="linear, rbf or both (default)"
    )
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--weights", help="local state-dict file of the model (default: random)")
    p.add_argument("--num-classes", type=int, help="the model's classes (to load --weights)")
    p.add_argument("--codec", default="f16", help="codec of the crossing tensors (default f16)")
    p.add_argument("--name", help="name a server registers (default MODEL.POINT.svm)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    _args.add_model_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.data import open_dataset, parse_spec
    from splitnet.svm import fit_svm_bundle

    spec = parse_spec(args.data)
    if spec.source == "folder":
        _check_folder(Path(spec.path))
    shape = args.input
    if shape is None:
        x, _ = open_dataset(spec, subset="all")[0]
        shape = (3, int(x.shape[1]), int(x.shape[2]))
    ds = open_dataset(spec, subset=spec.options.get("subset", "all"), size=shape[1:], channels=3)
    out, fit = fit_svm_bundle(
        args.model,
        input_shape=shape,
        split=args.split,
        dataset=ds,
        out_dir=args.out,
        pool=args.pool,
        kernel=args.kernel,
        cv=args.cv,
        weights=args.weights,
        num_classes=args.num_classes,
        model_args=dict(args.model_arg),
        codec=args.codec,
        name=args.name,
        overwrite=args.overwrite,
        seed=args.seed,
    )
    scores = ", ".join(f"{k} {v:.4f}" for k, v in fit.cv_by_kernel.items())
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fit.params.items()
    )
    print(f"wrote {out}: SVM on {len(ds)} images, {params}")
    print(f"  {args.cv}-fold CV accuracy: {scores}")
    return 0


def _check_folder(root: Path) -> None:
    """Every file under the label folders must be an image: a stray file is an error
    (torchvision's ImageFolder would skip it silently)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root.is_dir():
        raise ConfigError(f"image folder not found: {root}")
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.parent != root:
            if not path.name.lower().endswith(IMG_EXTENSIONS):
                raise ConfigError(
                    f"{path} is not an image ({', '.join(IMG_EXTENSIONS)}); move it out of {root}"
                )
