"""The server's side of a bundle: the tail program as a torch module.

torch is imported inside :func:`load_tail`, never at import time, so that
``import splitnet.bundle`` stays torch-free for the device.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from splitnet.bundle._manifest import BundleError, read_manifest

if TYPE_CHECKING:
    from torch import nn

__all__ = ["load_tail"]


def load_tail(bundle_dir: str | os.PathLike, *, verify: bool = True) -> nn.Module:
    """The bundle's tail as a module (``torch.export.load(...).module()``).

    Needs no model source: the program holds the graph and the weights.

    Raises:
        splitnet.bundle.BundleError: a missing or corrupt bundle.
    """
    import torch

    m = read_manifest(bundle_dir, verify=verify)
    root = Path(bundle_dir)
    path = root / m.tail["file"]
    # verified or not, only a checksummed file inside the bundle folder is loaded: a tail
    # program runs code, so the manifest must not point it elsewhere
    if m.tail["file"] not in m.files:
        raise BundleError(f"manifest lists no checksum for the tail file {m.tail['file']}")
    if not path.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"the tail file {m.tail['file']} leaves the bundle folder {root}")
    if m.tail.get("format") == "svm-npz":  # a classical tail: arrays evaluated in numpy
        from splitnet.svm._module import load_svm_module

        return load_svm_module(root, m)
    try:
        return torch.export.load(path).module()
    except Exception as e:
        raise BundleError(
            f"cannot load the tail program {path}: {str(e).splitlines()[0]}"
        ) from None
