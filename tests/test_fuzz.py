"""atheris fuzzing of ``decode`` and of the server's request handling (slow; ``tests/fuzz_targets.py``).

Each target runs in a process of its own (atheris ends the process when done),
from a copy of the committed seed corpus in ``tests/corpus/`` (libFuzzer adds
what it finds to the corpus folder it is given).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


def _fuzz(tmp_path, target: str, *args: str, runs: int) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / target, corpus)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_targets.py"), target, *args, str(corpus)]
        + [f"-runs={runs}", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Done {runs} runs" in proc.stderr


def test_fuzz_decode_atheris(tmp_path):
    _fuzz(tmp_path, "decode", runs=20_000)


def test_fuzz_server_requests_atheris(tmp_path, repository):
    _fuzz(tmp_path, "request", str(repository), runs=3_000)
