"""The device daemon under faults and bad configuration (issue 13, items 3, 8 and 9)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from _processes import daemon_process
from _processes import free_port as _free_port
from _serve_helpers import run_with_server

from splitnet.device import DaemonConfig, DeviceDaemon

pytestmark = pytest.mark.grpc


def _run(cfg: DaemonConfig):
    # the bound is a hang guard far above retry_timeout_s, not a timing
    return asyncio.run(asyncio.wait_for(DeviceDaemon(cfg).run(), 120))


def test_retry_timeout_fires_without_a_server(repository, tmp_path):
    """Item 3: no server listening: the run ends with a one-line fatal error (it hung)."""
    cfg = DaemonConfig(
        bundle=repository / "unet",
        servers=(f"127.0.0.1:{_free_port()}",),
        frames=3,
        out=tmp_path,
        retry_timeout_s=1.0,
    )
    summary = _run(cfg)
    assert summary.ok == 0 and summary.unacknowledged >= 1
    assert summary.fatal.startswith("no server answered for 1 s")
    assert "\n" not in summary.fatal
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_retry_timeout_fires_on_tls_mismatch_and_mtls_works(repository, models, tmp_path):
    """Item 3: plain against a TLS server, and a wrong CA, end after retry_timeout_s
    (they hung); item 8: the daemon presents a client certificate to an mTLS server,
    and without one it is refused."""
    from test_server_grpc import _make_certs

    for d in ("certs", "other"):
        (tmp_path / d).mkdir()
    certs, other = _make_certs(tmp_path / "certs"), _make_certs(tmp_path / "other")

    async def body(server, port):
        def cfg(name, **kw):
            return DaemonConfig(
                bundle=repository / "unet",
                servers=(f"127.0.0.1:{port}",),
                frames=3,
                out=tmp_path / name,
                retry_timeout_s=1.0,
                **kw,
            )

        def run(c):
            return asyncio.wait_for(DeviceDaemon(c).run(), 120)

        plain = await run(cfg("plain"))
        wrong_ca = await run(
            cfg(
                "wrong-ca",
                tls_ca=other["ca_pem"],
                tls_cert=certs["client_pem"],
                tls_key=certs["client_key"],
            )
        )
        no_cert = await run(cfg("no-cert", tls_ca=certs["ca_pem"]))
        mtls = await run(
            cfg(
                "mtls",
                tls_ca=certs["ca_pem"],
                tls_cert=certs["client_pem"],
                tls_key=certs["client_key"],
            )
        )
        return plain, wrong_ca, no_cert, mtls

    plain, wrong_ca, no_cert, mtls = run_with_server(
        repository,
        models,
        body,
        tls_cert=certs["server_pem"],
        tls_key=certs["server_key"],
        tls_ca=certs["ca_pem"],
    )
    for s in (plain, wrong_ca, no_cert):
        assert s.ok == 0 and s.fatal.startswith("no server answered for 1 s"), s.fatal
    assert mtls.ok == 3 and mtls.fatal is None
    assert len(list((tmp_path / "mtls").glob("*.png"))) == 3


def test_a_client_certificate_needs_its_key(repository, tmp_path):
    from splitnet import SplitnetError

    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = DaemonConfig(
        bundle=repository / "unet",
        servers=("127.0.0.1:1",),
        frames=1,
        tls_cert=tmp_path / "c.pem",
    )
    with pytest.raises(SplitnetError, match="both --tls-cert and --tls-key"):
        _run(cfg)


def _daemon_process(repository, port, out, frames, *extra):
    return daemon_process(repository / "unet", f"127.0.0.1:{port}", out, frames, *extra)


def test_a_killed_daemon_resumes_with_its_device_id_and_no_frame_twice(
    repository, models, tmp_path
):
    """Item 9: SIGKILL mid-run, start again with the same --out: the same device id, every
    result written exactly once (none rewritten), the tail runs each frame at most once."""
    import json
    import signal

    from _serve_helpers import UNET

    n = 16

    async def body(server, port):
        batcher = server.core._batchers[UNET]
        submit, ran = batcher.submit, []

        async def counting(frame):
            ran.append(frame)
            return await submit(frame)

        batcher.submit = counting
        first = _daemon_process(repository, port, tmp_path, n, "--fps", "8", "--window", "4")
        while len(list(tmp_path.glob("*.png"))) < 4 and first.poll() is None:
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait)
        assert first.returncode == -signal.SIGKILL
        written = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
        device_id = json.loads((tmp_path / "state.json").read_text())["device_id"]
        second = _daemon_process(repository, port, tmp_path, n, "--window", "4")
        out, err = await asyncio.to_thread(second.communicate, timeout=300)
        assert second.returncode == 0, err
        return written, device_id, len(ran)

    written, device_id, tail_runs = run_with_server(repository, models, body)
    assert 4 <= len(written) < n
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.png")}
    assert sorted(files) == [f"{i:08d}.png" for i in range(n)]
    assert all(files[name] == t for name, t in written.items())  # no result rewritten
    assert tail_runs == n  # each frame once: the spooled ones came back from the cache
    assert json.loads((tmp_path / "state.json").read_text())["device_id"] == device_id
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fatal"] is None and summary["unacknowledged"] == 0
    assert not list((tmp_path / ".spool").iterdir())


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 0), ("SIGINT", 130)])
def test_sigterm_and_sigint_write_the_summary(repository, tmp_path, sig, code):
    """Item 9: a daemon stopped by a signal (here while it waits for a server) writes
    summary.json with the frames it had not got answers for; a signal is a graceful
    stop, not a failure: exit 0 on SIGTERM (systemd's clean stop), 130 on SIGINT."""
    import json
    import signal
    import time

    proc = _daemon_process(
        repository, _free_port(), tmp_path, 3, "--retry-timeout", "600", "--stop-grace", "0.5"
    )
    deadline = time.monotonic() + 300  # a hang guard
    while not (tmp_path / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith(f"splitnet device: stopped by {sig}; "), err
    assert "unanswered kept in the spool" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by"] == sig and summary["fatal"] is None
    assert summary["unacknowledged_frames"]
    assert list((tmp_path / ".spool").iterdir())  # kept for the next start
