"""Server pieces without sockets: the dynamic batcher, the tails."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from splitnet.server import FrameInput
from splitnet.server._batcher import DynamicBatcher

pytestmark = pytest.mark.grpc


def test_batcher_groups_requests_and_isolates_failures():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        return [ValueError("bad") if i < 0 else i * 10 for i in items]

    async def main():
        b = DynamicBatcher(run_batch, max_batch=4, max_delay_s=0.05)
        results = await asyncio.gather(
            *(b.submit(i) for i in [1, 2, -3, 4, 5]), return_exceptions=True
        )
        await b.stop()
        return results

    results = asyncio.run(main())
    assert [len(c) for c in calls] == [4, 1]
    assert results[0][0] == 10 and results[0][1].batch_size == 4
    assert isinstance(results[2], ValueError) and results[4][0] == 50


def test_batcher_stop_finishes_the_batch_that_is_running():
    import time as _time

    def slow(items):
        _time.sleep(0.2)
        return list(items)

    async def main():
        b = DynamicBatcher(slow, max_batch=2, max_delay_s=0)
        tasks = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await asyncio.sleep(0.05)  # the first batch is running
        await b.stop()
        return [t.result()[0] for t in tasks if t.done()]

    assert asyncio.run(main()) == [0, 1, 2]


@pytest.mark.gpu
def test_tail_on_cuda_matches_cpu(repository):
    from splitnet.server import TailModel

    cpu = TailModel(repository / "unet", device="cpu")
    gpu = TailModel(repository / "unet", device="cuda", precision="fp16")
    rng = np.random.default_rng(0)
    frame = FrameInput(
        [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in cpu.manifest.crossing], True
    )
    a, b = cpu.run_batch([frame, frame]), gpu.run_batch([frame, frame])
    np.testing.assert_allclose(a[0]["probabilities"], b[0]["probabilities"], atol=2e-2)
