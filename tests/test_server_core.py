"""Server pieces without sockets: the dynamic batcher, the tails, no OpenVINO on the server."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _no_torch import run_without_openvino
from _serve_helpers import UNET

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


def test_server_loads_and_runs_tails_without_openvino(repository, models, tmp_path):
    """The server host: ``splitnet.server`` imports, loads every tail and runs one, with
    openvino unimportable; the results equal those of this (OpenVINO-capable) process."""
    code = """
import json
import numpy as np
import torch
from splitnet.bundle import load_tail
from splitnet.server import FrameInput, load_repository
models = load_repository(sys.argv[1])
m = models[sys.argv[2]]
tensors = [np.load(sys.argv[3])[f"arr_{i}"] for i in range(len(m.manifest.crossing))]
out = m.run_batch([FrameInput(m.check(tensors), probabilities=True)])[0]
np.savez(sys.argv[4], **out)
tail = load_tail(sys.argv[1] + "/unet")
print(json.dumps(sorted(models)), isinstance(tail, torch.nn.Module))
"""
    m = models[UNET]
    rng = np.random.default_rng(0)
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in m.manifest.crossing]
    np.savez(tmp_path / "in.npz", *tensors)
    args = (str(repository), UNET, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    res = run_without_openvino(code, args=args)
    assert res.returncode == 0, res.stderr
    names, is_module = res.stdout.rsplit(" ", 1)
    assert json.loads(names) == sorted(models) and is_module.strip() == "True"
    want = m.run_batch([FrameInput(tensors, probabilities=True)])[0]
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(got["mask"], want["mask"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6, atol=1e-7)


def test_a_frame_resent_while_its_first_copy_runs_is_answered_when_the_first_is_cancelled(models):
    """Issue 13, item 1: a link drops, the daemon re-sends a frame on a new stream while the
    first copy still runs for the old stream; the server then cancels the old stream. The
    re-sent copy must get the answer (it got the cancellation, and the daemon hung)."""
    from _serve_helpers import make_payload

    from splitnet.server._core import InferenceCore
    from splitnet.wire import inference_pb2 as pb
    from splitnet.wire import make_infer_request

    async def main():
        core = InferenceCore(models)
        batcher = core._batchers[UNET]
        submit, gate, runs = batcher.submit, asyncio.Event(), []

        async def slow_submit(frame):
            runs.append(frame)
            await gate.wait()
            return await submit(frame)

        batcher.submit = slow_submit
        request = make_infer_request(
            UNET,
            make_payload(models, UNET),
            request_id="d/3",
            parameters={"device_id": "d", "frame_id": 3},
        )
        assert isinstance(request, pb.ModelInferRequest)
        try:
            first = asyncio.create_task(core.infer(request))  # the old stream's copy
            while not runs:
                await asyncio.sleep(0.001)
            again = asyncio.create_task(core.infer(request))  # re-sent on the new stream
            await asyncio.sleep(0.01)
            first.cancel()  # the server notices the dead stream
            await asyncio.gather(first, return_exceptions=True)
            gate.set()
            response = await asyncio.wait_for(again, 60)  # a hang guard, not a timing
        finally:
            await core.close()
        return response, len(runs)

    response, n_runs = asyncio.run(main())
    assert response.outputs[0].name == "mask"
    assert n_runs == 1  # the tail ran the frame once
