"""The tails' intra-op threads (``serve --tail-threads``): what the tail runs with, the
default on the CPU, bad values."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
import torch

from splitnet.cli.main import main
from splitnet.server._core import InferenceCore, default_tail_threads
from splitnet.wire import make_infer_request

pytestmark = pytest.mark.grpc


@pytest.fixture
def torch_threads():
    """torch's thread count is process-wide: put it back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_tail_runs_with_the_threads_asked_for(models, monkeypatch, torch_threads, threads):
    model = next(m for m in models.values() if m.task == "segmentation")
    seen = []
    run_batch = model.run_batch

    def recording(frames):
        seen.append(torch.get_num_threads())
        return run_batch(frames)

    monkeypatch.setattr(model, "run_batch", recording)
    rng = np.random.default_rng(0)
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in model.manifest.crossing]
    payload = model.manifest.make_codec().encode(tensors)
    # the other count first, so that the test fails when the option is not applied
    torch.set_num_threads(3 - threads)

    async def run():
        core = InferenceCore({model.name: model}, tail_threads=threads)
        try:
            response = await core.infer(make_infer_request(model.name, payload))
        finally:
            await core.close()
        return response

    response = asyncio.run(run())
    assert [o.name for o in response.outputs] == ["mask"]
    assert seen == [threads]


def test_default_tail_threads_leave_half_the_cpu_cores(monkeypatch):
    for cores, expected in ((1, 1), (2, 1), (3, 1), (8, 4), (16, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_tail_threads("cpu") == expected
    assert default_tail_threads("cuda") is None
    assert default_tail_threads("cuda:1") is None


def test_serve_refuses_zero_tail_threads(repository, capsys):
    assert main(["serve", "--repository", str(repository), "--tail-threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--tail-threads must be >= 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
