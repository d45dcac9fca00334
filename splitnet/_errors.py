"""The root of the errors that splitnet raises for bad input.

Every error a user can cause (an unknown name, a bad option, a corrupt payload
or bundle, a model that does not fit its input) is a :class:`SplitnetError`.
It subclasses ``ValueError``, so code that catches ``ValueError`` keeps
working. The CLI prints a ``SplitnetError`` (or an ``OSError``) as one line
and exits 2; any other exception is a bug and shows its traceback.

Each subpackage defines its own subclass next to the code that raises it
(``CodecError`` in ``splitnet.codec``, ``BundleError`` in ``splitnet.bundle``,
...); this module holds only the root and :class:`ConfigError`, which the CLI,
the server and the daemon share. It imports nothing, so the device side can
use it without torch.
"""

from __future__ import annotations

__all__ = ["ConfigError", "SplitnetError"]


class SplitnetError(ValueError):
    """Bad input to splitnet: the message says what is wrong and how to fix it."""


class ConfigError(SplitnetError):
    """An option or configuration value that is missing, out of range or inconsistent."""
