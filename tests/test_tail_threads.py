"""The tails' intra-op threads and instances (``serve --tail-threads``,
``--tail-instances``): what the tail runs with, batches running at once, the default on
the CPU, bad values."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from splitnet._errors import ConfigError
from splitnet.cli.main import main
from splitnet.server._batcher import DynamicBatcher
from splitnet.server._core import InferenceCore, default_tail_instances, default_tail_threads
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


def test_default_tail_instances_fill_the_cpu_cores(monkeypatch):
    for cores, expected in ((1, 1), (2, 2), (16, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_tail_instances("cpu") == expected
    assert default_tail_instances("cuda") == 1


def test_serve_refuses_zero_tail_threads(repository, capsys):
    assert main(["serve", "--repository", str(repository), "--tail-threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--tail-threads must be >= 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _concurrency(instances: int, items: int, max_batch: int = 1) -> tuple[int, list]:
    """The most batches running at once, and the results, for ``items`` submitted at once."""
    running, most, lock = 0, 0, threading.Lock()

    def run_batch(batch):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        return [i * 10 for i in batch]

    async def go():
        with ThreadPoolExecutor(instances) as pool:
            b = DynamicBatcher(
                run_batch, max_batch=max_batch, max_delay_s=0, executor=pool, instances=instances
            )
            results = await asyncio.gather(*(b.submit(i) for i in range(items)))
            await b.stop()
        return [r for r, _ in results]

    results = asyncio.run(go())
    return most, results


def test_batches_run_at_once_up_to_the_instance_count():
    assert _concurrency(1, 4) == (1, [0, 10, 20, 30])
    most, results = _concurrency(2, 6)
    assert most == 2 and results == [0, 10, 20, 30, 40, 50]


def test_busy_instances_let_the_next_batch_grow():
    sizes = []

    def run_batch(batch):
        sizes.append(len(batch))
        time.sleep(0.2)
        return list(batch)

    async def go():
        with ThreadPoolExecutor(2) as pool:
            b = DynamicBatcher(run_batch, max_batch=8, max_delay_s=0, executor=pool, instances=2)
            first = []
            for i in range(2):  # both instances busy with a batch of one each...
                first.append(asyncio.ensure_future(b.submit(i)))
                await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(b.submit(i)) for i in range(2, 7)]
            await asyncio.gather(*first, *rest)
            await b.stop()

    asyncio.run(go())
    # ...so the five that came meanwhile wait, and run as one batch
    assert sorted(sizes) == [1, 1, 5]


def test_stop_finishes_every_running_batch():
    def slow(batch):
        time.sleep(0.2)
        return list(batch)

    async def go():
        with ThreadPoolExecutor(2) as pool:
            b = DynamicBatcher(slow, max_batch=1, max_delay_s=0, executor=pool, instances=2)
            tasks = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
            await asyncio.sleep(0.05)
            await b.stop()
            return [t.result()[0] for t in tasks if t.done()]

    assert asyncio.run(go()) == [0, 1, 2]


def test_bad_instance_counts_are_refused(repository, capsys):
    with pytest.raises(ConfigError, match="instances must be >= 1"):
        DynamicBatcher(list, instances=0)
    with pytest.raises(ConfigError, match="tail_instances must be >= 1"):
        InferenceCore({}, tail_instances=0)
    assert main(["serve", "--repository", str(repository), "--tail-instances", "0"]) == 2
    err = capsys.readouterr().err
    assert "--tail-instances must be >= 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_model_config_reports_the_instances_and_threads(repository, models):
    from splitnet.server import InferenceServer, ServerConfig

    def params(**kw):
        config = ServerConfig(repository=repository, port=0, metrics_port=None, device="cpu", **kw)
        server = InferenceServer(config, models=models)
        try:
            name = next(iter(models))
            return dict(server.service.model_config(name).config.parameters)
        finally:
            asyncio.run(server.core.close())

    p = params(tail_instances=3, tail_threads=2)
    assert p["tail_instances"].string_value == "3" and p["tail_threads"].string_value == "2"
    p = params()  # the CPU's defaults
    assert p["tail_instances"].string_value == str(default_tail_instances("cpu"))
    assert p["tail_threads"].string_value == str(default_tail_threads("cpu"))
