"""Running code in a subprocess where some imports fail: a device host has no torch, a
server host no OpenVINO."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import sys, importlib.abc
_HIDDEN = {hidden!r}
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            raise ImportError(name + " is hidden in this test")
sys.meta_path.insert(0, _Hide())
"""

EPILOGUE = """
_got = [m for m in sys.modules if m.split(".")[0] in _HIDDEN]
assert not _got, f"imported although hidden: {_got[:5]}"
"""


def run_without(
    code: str, *, hidden: tuple[str, ...], timeout: float = 120, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Runs ``code`` with the top-level packages ``hidden`` unimportable; asserts none got in."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE.format(hidden=tuple(hidden)) + code + EPILOGUE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_without_torch(
    code: str, *, timeout: float = 120, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Runs ``code`` with torch hidden from the import system; asserts it never got imported."""
    return run_without(code, hidden=("torch",), timeout=timeout, args=args)


def run_without_openvino(
    code: str, *, timeout: float = 120, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Runs ``code`` with openvino hidden from the import system; asserts it never got imported."""
    return run_without(code, hidden=("openvino",), timeout=timeout, args=args)
