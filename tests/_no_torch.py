"""Running code in a subprocess where ``import torch`` fails: the device host has no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import sys, importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is hidden in this test")
sys.meta_path.insert(0, _NoTorch())
"""

EPILOGUE = """
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
"""


def run_without_torch(
    code: str, *, timeout: float = 120, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Runs ``code`` with torch hidden from the import system; asserts it never got imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code + EPILOGUE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
