"""splitnet: split inference between an edge device and the cloud.

The top-level names are loaded lazily so that device-side code
(``splitnet.codec``, ``splitnet.device``, ``splitnet.wire``) can import this
package on a host that has no torch.

Example:
    >>> import splitnet, torch
    >>> model = splitnet.create_model("unet-vgg16")
    >>> g = splitnet.trace(model, torch.randn(1, 3, 64, 64))
    >>> head, tail = g.split("encoder.block3.pool")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "create_model": "splitnet.models",
    "list_models": "splitnet.models",
    "register_model": "splitnet.models",
    "trace": "splitnet.split",
    "SplitGraph": "splitnet.split",
    "SplitPoint": "splitnet.split",
    "CrossingTensor": "splitnet.split",
    "get_codec": "splitnet.codec",
    "list_codecs": "splitnet.codec",
    "export_bundle": "splitnet.export",
    "HeadRunner": "splitnet.device",
    "SplitnetError": "splitnet._errors",
    "UnknownNameError": "splitnet._registry",
}

__all__ = [
    "CrossingTensor",
    "HeadRunner",
    "SplitGraph",
    "SplitPoint",
    "SplitnetError",
    "UnknownNameError",
    "__version__",
    "create_model",
    "export_bundle",
    "get_codec",
    "list_codecs",
    "list_models",
    "register_model",
    "trace",
]

if TYPE_CHECKING:  # pragma: no cover
    from splitnet._errors import SplitnetError
    from splitnet._registry import UnknownNameError
    from splitnet.codec import get_codec, list_codecs
    from splitnet.device import HeadRunner
    from splitnet.export import export_bundle
    from splitnet.models import create_model, list_models, register_model
    from splitnet.split import CrossingTensor, SplitGraph, SplitPoint, trace


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'splitnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
