"""The device daemon under faults and bad configuration (issue 13, items 3, 8 and 9)."""

from __future__ import annotations

import asyncio
import shutil
import socket

import pytest
from _serve_helpers import run_with_server

from splitnet.device import DaemonConfig, DeviceDaemon

pytestmark = pytest.mark.grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
