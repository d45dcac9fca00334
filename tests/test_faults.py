"""Real ``splitnet serve`` and ``splitnet device`` processes under link and process faults
(issue 13): a loopback proxy (``splitnet.wire._faultproxy``) cuts the link, the server
or the daemon is SIGKILLed and started again. Every frame is answered exactly once
(each result written once, never rewritten; the summaries add up) and, where the
server's answer cache or the daemon's spool promise it, the tail runs no frame twice.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from _processes import (
    daemon_process,
    free_port,
    results,
    serve_process,
    stop,
    summary,
    tail_runs,
)
from _serve_helpers import UNET

from splitnet.wire._faultproxy import FaultProxy

pytestmark = pytest.mark.grpc

N = 16
# a window as large as the run: a paced source would drop frames while the link is
# down (a live camera does); here every frame must go through
PACE = ("--fps", "8", "--window", str(N), "--retry-timeout", "120")


async def _until(predicate, *, timeout: float = 120) -> None:
    """Polls ``predicate()``; the bound is a hang guard, not a timing."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def _finish(proc, timeout: float = 300) -> str:
    out, err = await asyncio.to_thread(proc.communicate, timeout=timeout)
    assert proc.returncode == 0, err
    return out


def _all_answered_once(out, before: dict[str, int], second_run_ok: int) -> None:
    files = results(out)
    assert sorted(files) == [f"{i:08d}.png" for i in range(N)], str(summary(out))
    assert all(files[name] == t for name, t in before.items())  # none rewritten
    s = summary(out)
    assert s["fatal"] is None and s["unacknowledged"] == 0 and s["failed"] == 0, s
    assert s["ok"] == second_run_ok, s
    assert not list((out / ".spool").iterdir())


def test_link_cut_while_the_server_notices_late(repository, tmp_path):
    """The daemon sees the cut at once, the server 2 s later: the frames re-sent on the
    new connection are answered (they hung behind the old stream's), each once, and
    the tail ran each frame once (the re-sent ones joined the running ones)."""
    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics)
    daemon = None

    async def body():
        nonlocal daemon
        async with FaultProxy("127.0.0.1", port) as proxy:
            daemon = daemon_process(
                repository / "unet", f"127.0.0.1:{proxy.port}", tmp_path, N, *PACE
            )
            await _until(lambda: len(results(tmp_path)) >= 4 or daemon.poll() is not None)
            proxy.cut(server_notices_after_s=2.0)
            await asyncio.sleep(0.5)
            proxy.restore()
            await _finish(daemon)
            return proxy.stats

    try:
        stats = asyncio.run(body())
        _all_answered_once(tmp_path, {}, N)
        assert stats.cuts == 1 and stats.connections >= 2  # it did reconnect
        assert summary(tmp_path)["resent"] >= 1
        assert tail_runs(metrics, UNET) == N
    finally:
        stop(daemon, server)


def test_black_hole_then_cut_and_a_throttled_link(repository, tmp_path):
    """A link that goes silent (black hole) and is then cut, on a delayed, throttled
    link: every frame still answered once, the tail ran each once."""
    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics)
    daemon = None

    async def body():
        nonlocal daemon
        async with FaultProxy("127.0.0.1", port) as proxy:
            proxy.delay_s, proxy.rate_bps = 0.02, 2e6
            daemon = daemon_process(
                repository / "unet", f"127.0.0.1:{proxy.port}", tmp_path, N, *PACE
            )
            await _until(lambda: len(results(tmp_path)) >= 4 or daemon.poll() is not None)
            proxy.black_hole()
            await asyncio.sleep(1.0)
            proxy.cut(server_notices_after_s=1.0)
            await asyncio.sleep(0.3)
            proxy.restore()
            await _finish(daemon)

    try:
        asyncio.run(body())
        _all_answered_once(tmp_path, {}, N)
        assert tail_runs(metrics, UNET) == N
    finally:
        stop(daemon, server)


def test_server_killed_and_restarted_on_the_same_port(repository, tmp_path):
    """SIGKILL the server mid-stream, start it again on its port: the daemon waits,
    reconnects and every frame is answered once (results written before the kill
    are not rewritten). A new server has no cache: frames it lost may run again."""
    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics)
    daemon = daemon_process(repository / "unet", f"127.0.0.1:{port}", tmp_path, N, *PACE)

    async def body():
        nonlocal server
        await _until(lambda: len(results(tmp_path)) >= 4 or daemon.poll() is not None)
        server.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.wait)
        before = results(tmp_path)
        server = await asyncio.to_thread(serve_process, repository, port, metrics)
        await _finish(daemon)
        return before

    try:
        before = asyncio.run(body())
        assert 4 <= len(before) < N
        _all_answered_once(tmp_path, before, N)
        assert summary(tmp_path)["reconnects"] >= 1
        assert tail_runs(metrics, UNET) <= N  # the restarted server ran only what it got
    finally:
        stop(daemon, server)


def test_daemon_killed_and_restarted_with_the_same_out(repository, tmp_path):
    """SIGKILL the daemon, start it again with the same ``--out``: it resumes from its
    spool, each frame answered once over the two runs, the tail ran each once."""
    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics)
    daemons = []

    async def body():
        async with FaultProxy("127.0.0.1", port) as proxy:
            target = f"127.0.0.1:{proxy.port}"
            daemons.append(daemon_process(repository / "unet", target, tmp_path, N, *PACE))
            await _until(lambda: len(results(tmp_path)) >= 4 or daemons[0].poll() is not None)
            daemons[0].send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemons[0].wait)
            before = results(tmp_path)
            daemons.append(daemon_process(repository / "unet", target, tmp_path, N, *PACE))
            await _finish(daemons[1])
            return before

    try:
        before = asyncio.run(body())
        assert 4 <= len(before) < N
        _all_answered_once(tmp_path, before, N - len(before))
        assert tail_runs(metrics, UNET) == N
    finally:
        stop(*daemons, server)


def test_daemon_and_server_killed_at_once(repository, tmp_path):
    """Both SIGKILLed together, both started again: the daemon resumes with its spool
    against the new server; each frame answered once over the two runs."""
    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics)
    daemons = [daemon_process(repository / "unet", f"127.0.0.1:{port}", tmp_path, N, *PACE)]

    async def body():
        nonlocal server
        await _until(lambda: len(results(tmp_path)) >= 4 or daemons[0].poll() is not None)
        daemons[0].send_signal(signal.SIGKILL)
        server.send_signal(signal.SIGKILL)
        await asyncio.to_thread(daemons[0].wait)
        await asyncio.to_thread(server.wait)
        before = results(tmp_path)
        # the daemon first: it waits for the server (--retry-timeout) while it loads
        daemons.append(daemon_process(repository / "unet", f"127.0.0.1:{port}", tmp_path, N, *PACE))
        server = await asyncio.to_thread(serve_process, repository, port, metrics)
        await _finish(daemons[1])
        return before

    try:
        before = asyncio.run(body())
        assert 4 <= len(before) < N
        _all_answered_once(tmp_path, before, N - len(before))
        assert tail_runs(metrics, UNET) == N - len(before)  # a fresh server: each frame once
    finally:
        stop(*daemons, server)


def test_the_proxy_delays_cuts_black_holes_and_restores():
    """The harness itself, on an echo server: bytes go through delayed, a cut resets
    open connections and refuses new ones, a black hole holds bytes until restored."""

    async def echo(reader, writer):
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def closed(reader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionError:
            return True  # reset

    async def body():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with FaultProxy("127.0.0.1", port) as proxy:
            loop = asyncio.get_running_loop()
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            proxy.delay_s = 0.1
            t = loop.time()
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            assert loop.time() - t >= 0.2  # 0.1 s each way
            proxy.delay_s = 0.0
            proxy.black_hole()
            w.write(b"held")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.readexactly(4), 0.3)
            proxy.restore()
            assert await asyncio.wait_for(r.readexactly(4), 10) == b"held"
            proxy.cut()
            assert await closed(r)
            r2, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await closed(r2)  # refused while cut
            proxy.restore()
            r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
            w3.write(b"back")
            assert await asyncio.wait_for(r3.readexactly(4), 10) == b"back"
            w3.close()
            return proxy.stats
        server.close()

    stats = asyncio.run(body())
    assert stats.cuts == 1 and stats.refused == 1 and stats.connections == 2
    assert stats.bytes_up == stats.bytes_down == 12


def test_sigterm_stops_the_daemon_and_the_server_cleanly(repository, tmp_path):
    """SIGTERM to ``splitnet device`` mid-run: no new frame, the ones in flight answered,
    exit 0, and a new start with the same ``--out`` finishes the run (each frame once).
    SIGTERM to ``splitnet serve``: it drains and exits 0."""
    n = 40
    port, metrics = free_port(), free_port()
    server = serve_process(repository, port, metrics)
    daemons = [
        daemon_process(repository / "unet", f"127.0.0.1:{port}", tmp_path, n, *PACE),
    ]

    async def body():
        await _until(lambda: len(results(tmp_path)) >= 4 or daemons[0].poll() is not None)
        daemons[0].send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(daemons[0].communicate, timeout=120)
        assert daemons[0].returncode == 0, err
        assert "stopped by SIGTERM" in err
        first = summary(tmp_path)
        before = results(tmp_path)
        daemons.append(
            daemon_process(repository / "unet", f"127.0.0.1:{port}", tmp_path, n, "--window", "8")
        )
        await _finish(daemons[1])
        return first, before

    try:
        first, before = asyncio.run(body())
        assert first["stopped_by"] == "SIGTERM" and first["fatal"] is None
        assert first["frames_sent"] < n and first["ok"] == len(before)
        files = results(tmp_path)
        assert sorted(files) == [f"{i:08d}.png" for i in range(n)]
        assert all(files[k] == t for k, t in before.items())
        assert summary(tmp_path)["ok"] == n - len(before)
        assert tail_runs(metrics, UNET) == n
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        assert server.returncode == 0, server.stderr.read()
    finally:
        stop(*daemons, server)
