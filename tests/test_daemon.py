"""The device daemon against real servers on loopback: streaming, no torch, restarts, sources."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _serve_helpers import UNET, run_with_server, server_config

from splitnet.device import DaemonConfig, DeviceDaemon
from splitnet.server import InferenceServer

pytestmark = pytest.mark.grpc


def test_device_daemon_streams_every_frame(repository, models, tmp_path):
    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=12,
            out=tmp_path,
            window=4,
        )
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repository, models, body)
    assert (summary.frames_sent, summary.ok, summary.failed, summary.unacknowledged) == (
        12,
        12,
        0,
        0,
    )
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:08d}.png" for i in range(12)]
    assert (tmp_path / "summary.json").is_file()
    assert summary.wire_mbps > 0
    # every frame is sent whole: the wire carries at least the payloads
    assert summary.wire_bytes >= summary.frames_sent * summary.payload_bytes_mean * (1 - 1e-9)
    # end to end (captured -> result) includes the head; no frame outlives the run
    run_ms = summary.elapsed_s * 1000 + 1  # elapsed_s is rounded to the millisecond
    assert 0 < summary.head_ms_mean <= summary.latency_mean_ms <= run_ms
    assert 0 < summary.latency_p95_ms <= run_ms
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["latency_p95_ms"] == summary.latency_p95_ms
    assert saved["latency_mean_ms"] == summary.latency_mean_ms


def test_device_daemon_runs_without_torch(repository, models, tmp_path):
    """The daemon as it runs on a device host: its own process, torch not importable."""
    from _no_torch import run_without_torch

    code = """
from splitnet.cli import main
rc = main(["device", "--bundle", sys.argv[1], "--server", sys.argv[2], "--frames", "5", "--out", sys.argv[3]])
assert rc == 0, rc
"""

    async def body(server, port):
        args = (str(repository / "unet"), f"127.0.0.1:{port}", str(tmp_path))
        return await asyncio.to_thread(run_without_torch, code, args=args)

    res = run_with_server(repository, models, body)
    assert res.returncode == 0, res.stderr
    assert "5 frames sent, 5 ok" in res.stdout
    assert len(list(tmp_path.glob("*.png"))) == 5


def test_server_restart_mid_stream_loses_no_frame(repository, models, tmp_path):
    """Stop the server after a few answers, start a new one on the same port: every frame's
    result reaches the output exactly once."""
    from PIL import Image

    n = 24

    async def main():
        first = InferenceServer(server_config(repository), models=models)
        await first.start()
        port = first.port
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=n,
            out=tmp_path,
            window=6,
        )
        daemon = DeviceDaemon(cfg)
        run = asyncio.create_task(daemon.run())
        while daemon.summary.ok < 5:
            await asyncio.sleep(0.01)
        await first.stop(0)  # a crash, as far as the device can tell
        await asyncio.sleep(0.5)
        second = InferenceServer(server_config(repository, port=port), models=models)
        await second.start()
        try:
            return await asyncio.wait_for(run, 120)
        finally:
            await second.stop(0)

    summary = asyncio.run(main())
    assert summary.ok == n and summary.failed == 0 and summary.unacknowledged == 0
    assert summary.reconnects >= 1 and summary.resent >= 1
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == [f"{i:08d}.png" for i in range(n)]
    assert all(Image.open(tmp_path / f).size == (64, 32) for f in files)


def test_device_refuses_a_wrong_token(repository, models, tmp_path):
    token = tmp_path / "token"
    token.write_text("right")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong")

    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=3,
            token_file=wrong,
            out=tmp_path / "o",
        )
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repository, models, body, token_file=token)
    assert summary.ok == 0 and summary.unacknowledged >= 1
    assert "UNAUTHENTICATED" in summary.fatal


def test_two_servers_are_balanced_round_robin(repository, models, tmp_path):
    async def main():
        a = InferenceServer(server_config(repository), models=models)
        b = InferenceServer(server_config(repository), models=models)
        await a.start()
        await b.start()
        try:
            cfg = DaemonConfig(
                bundle=repository / "unet",
                servers=(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
                frames=10,
                window=4,
            )
            summary = await DeviceDaemon(cfg).run()
            counts = [s.metrics.totals(s.metrics.batch_size, UNET)[1] for s in (a, b)]
            return summary, counts
        finally:
            await a.stop(0)
            await b.stop(0)

    summary, counts = asyncio.run(main())
    assert summary.ok == 10
    assert sum(counts) == 10 and min(counts) > 0, counts  # both servers took frames


def test_image_folder_and_video_sources(tmp_path):
    from PIL import Image

    from splitnet.device import open_source

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 70, 3), i * 50, np.uint8)).save(folder / f"{i}.png")
    frames = list(open_source(str(folder), height=32, width=64))
    assert (
        len(frames) == 3
        and frames[0].shape == (32, 64, 3)
        and frames[2].mean() == pytest.approx(100, abs=1)
    )
    synthetic = open_source("synthetic", height=32, width=64, frames=5)
    assert len(list(synthetic)) == 5 and not synthetic.live
    assert open_source("synthetic", height=8, width=8, fps=10).live
    with pytest.raises(ValueError, match="is not 'synthetic'"):
        open_source("/no/such/source", height=8, width=8)

    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 32))
    for i in range(4):
        writer.write(np.full((32, 64, 3), 40 * i, np.uint8))
    writer.release()
    frames = list(open_source(str(video), height=32, width=64))
    assert len(frames) == 4 and frames[0].shape == (32, 64, 3)


def test_link_emulator_is_a_token_bucket():
    from splitnet.device import LinkEmulator, parse_link

    now = [0.0]
    link = LinkEmulator(8e6, 0.01, clock=lambda: now[0])  # 1 MB/s, 10 ms one way
    # back to back: each 100 kB message leaves 0.1 s after the one before it
    assert [link.reserve(100_000) for _ in range(3)] == pytest.approx([0.11, 0.21, 0.31])
    link.set(bandwidth_bps=16e6)  # twice as fast for what comes next
    assert link.reserve(100_000) == pytest.approx(0.36)
    now[0] = 10.0  # an idle link starts at once; with no burst, tokens do not pile up
    assert link.reserve(100_000) == pytest.approx(10.06)
    burst = LinkEmulator(8e6, burst_bytes=200_000, clock=lambda: now[0])
    assert [burst.reserve(100_000) for _ in range(3)] == pytest.approx([10.0, 10.0, 10.1])
    assert (link.bytes_sent, link.messages) == (500_000, 5)
    parsed = parse_link("20Mbit/s,15ms")
    assert (parsed.bandwidth_bps, parsed.delay_s) == (20e6, 0.015)
    assert parse_link("2.5MB/s").bandwidth_bps == 20e6 and parse_link("1Gbps").delay_s == 0
    for bad in ("20 furlongs", "20Mbit/s,15 fortnights", "0Mbit/s"):
        with pytest.raises(ValueError, match="bandwidth|duration"):
            parse_link(bad)


def test_emulated_link_limits_the_uplink_and_follows_a_change_mid_run(repository, models, tmp_path):
    """Throughput at a set bandwidth is the limit (within 15%), and a new limit set during
    the run takes over; every frame's result arrives once, in spite of the change."""
    import time

    from splitnet.device import LinkEmulator

    n, per_frame = 48, (0.04, 0.12)  # seconds per frame on the link before and after the change
    link = LinkEmulator(1e9)  # unlimited until the request size is known
    answered: list[float] = []  # when each answer arrived
    limits: list[float] = []

    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=n,
            out=tmp_path,
            window=4,
            emulate_link=link,
        )
        daemon = DeviceDaemon(cfg)
        assert daemon.link is link
        answer = daemon._answer

        def timed_answer(response):
            answered.append(time.perf_counter())
            answer(response)
            size = link.bytes_sent / link.messages
            if len(answered) == 1:
                limits.append(8 * size / per_frame[0])
                link.set(bandwidth_bps=limits[0])
            elif len(answered) == n // 2:
                limits.append(8 * size / per_frame[1])
                link.set(bandwidth_bps=limits[1])

        daemon._answer = timed_answer
        return await daemon.run()

    summary = run_with_server(repository, models, body)
    assert summary.ok == n and summary.unacknowledged == 0 and summary.failed == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:08d}.png" for i in range(n)]
    size = summary.wire_bytes / summary.frames_sent

    def bits_per_s(a: int, b: int) -> float:
        return 8 * size * (b - a) / (answered[b] - answered[a])

    # the frames already in the link when the limit changes drain at the old rate first
    before, after = bits_per_s(6, n // 2 - 1), bits_per_s(n // 2 + 5, n - 1)
    gaps = [round(1000 * (b - a)) for a, b in zip(answered, answered[1:], strict=False)]
    assert before == pytest.approx(limits[0], rel=0.15), (before, limits, gaps)
    assert after == pytest.approx(limits[1], rel=0.15), (after, limits, gaps)


def test_emulated_delay_is_added_each_way(repository, models, tmp_path):
    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=6,
            window=2,
            emulate_link="1Gbit/s,40ms",
        )
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repository, models, body)
    assert summary.ok == 6 and summary.unacknowledged == 0
    assert summary.latency_mean_ms >= 80  # 40 ms there, 40 ms back
