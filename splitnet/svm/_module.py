"""The server's side of an SVM bundle: :class:`SVMTail` behind the ``nn.Module`` call
that :class:`splitnet.server.TailModel` makes, so batching, calibration and answers stay
as for any classifier tail. It returns log-probabilities: the server's softmax of them
gives back the SVM's Platt probabilities."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from splitnet._errors import SplitnetError
from splitnet.bundle import BundleError, Manifest
from splitnet.svm._tail import SVMTail, pool_features

__all__ = ["SVMModule", "load_svm_module"]


class SVMModule(nn.Module):
    """Crossing tensors (torch) -> ``log p`` (float32, N x classes), computed in numpy."""

    def __init__(self, svm: SVMTail) -> None:
        super().__init__()
        self.svm = svm

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        arrays = [t.detach().float().cpu().numpy() for t in tensors]
        probs = self.svm(arrays)
        out = torch.from_numpy(np.log(np.clip(probs, 1e-12, 1)).astype(np.float32))
        return out.to(tensors[0].device)


def load_svm_module(root: str | os.PathLike, manifest: Manifest) -> SVMModule:
    """The bundle's ``svm.npz`` as a module, checked against the manifest."""
    tail = manifest.tail
    try:
        svm = SVMTail.load(Path(root) / tail["file"], pool=str(tail.get("pool", "avg")))
    except SplitnetError as e:
        raise BundleError(str(e)) from None
    d = pool_features([np.zeros((1, *t.shape[1:])) for t in manifest.crossing], svm.pool).shape[1]
    if d != svm.n_features or svm.n_classes != manifest.num_classes:
        raise BundleError(
            f"{root}: the SVM takes {svm.n_features} features for {svm.n_classes} classes; the "
            f"manifest's crossing pools to {d} features for {manifest.num_classes} classes"
        )
    return SVMModule(svm)
