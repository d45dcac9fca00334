"""Bearer tokens, read the same way by the device (client) and the server."""

from __future__ import annotations

import os

from splitnet._errors import ConfigError

__all__ = ["read_token"]


def read_token(path: str | os.PathLike) -> str:
    """The token in ``path`` (surrounding whitespace stripped); an empty file is an error."""
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token
