"""Bad network, TLS and shape options end in one line and exit 2, before any work
(issue 13, item 10), and the torch-free checks behind them (``splitnet.wire._net``)."""

from __future__ import annotations

import shutil
import socket

import pytest

from splitnet._errors import ConfigError
from splitnet.wire._net import (
    check_tls_files,
    grpc_target,
    parse_address,
    parse_addresses,
    parse_port,
)

pytestmark = pytest.mark.grpc


def _fails(capsys, argv) -> str:
    """Runs ``splitnet argv`` in-process: exit code 2 and one stderr line, returned."""
    from splitnet.cli import main

    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "%|" not in err, err  # no traceback, no progress bar
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--repository", ".", "--port", "70000"], "port number (0-65535), got 70000"),
        (["serve", "--repository", ".", "--port", "-5"], "port number (0-65535)"),
        (["serve", "--repository", ".", "--metrics-port", "99999"], "port number (0-65535)"),
        (["serve", "--repository", ".", "--host", "256.0.0.1"], "neither an IP address"),
        (["device", "--bundle", ".", "--server", "127.0.0.1:abc"], "got 'abc'"),
        (["device", "--bundle", ".", "--server", "127.0.0.1:0"], "(1-65535), got 0"),
        (["device", "--bundle", ".", "--server", "::1:8001"], "[::1]:8001"),
        (["device", "--bundle", ".", "--server", "nohost"], "HOST:PORT"),
        (["device", "--bundle", ".", "--server", "[::1]:1,10.0.0.1:1"], "all be IPv4 or all IPv6"),
        (["points", "unet-vgg16", "--input", "3x99999999x99999999"], "elements; at most"),
        (["export", "unet-vgg16", "--input", "3x99999999x99999999", "--out", "x"], "at most"),
    ],
)
def test_bad_network_and_shape_options(capsys, argv, message):
    """``--port 70000`` served on 4464, ``--server 127.0.0.1:abc`` hung and a huge
    ``--input`` ended in torch's allocation traceback."""
    assert message in _fails(capsys, argv)


def test_port_in_use_is_one_line(capsys, repository):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = _fails(
            capsys,
            ["serve", "--repository", str(repository), "--port", str(port), "--metrics-port", "-1"],
        )
    assert f"cannot listen on 127.0.0.1:{port}: port {port} is in use" in err


def test_garbage_tls_files_are_one_line(capsys, repository, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00\x01 not a certificate")
    fake = tmp_path / "fake.pem"
    fake.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    serve = ["serve", "--repository", str(repository), "--port", "0", "--metrics-port", "-1"]
    assert "is not a PEM file" in _fails(
        capsys, [*serve, "--tls-cert", str(garbage), "--tls-key", str(garbage)]
    )
    assert "--tls-cert: " in _fails(
        capsys, [*serve, "--tls-cert", str(fake), "--tls-key", str(fake)]
    )
    assert "no valid PEM certificate" in _fails(
        capsys, ["device", "--bundle", str(repository / "unet"), "--server", "127.0.0.1:1",
                 "--tls-ca", str(fake)]
    )  # fmt: skip
    assert "cannot read" in _fails(capsys, [*serve, "--tls-cert", str(tmp_path / "none.pem")])


def test_config_file_values_are_checked_like_flags(capsys, tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("repository: .\nport: 70000\n")
    assert "port: expected a port number (0-65535), got 70000" in _fails(
        capsys, ["serve", "--config", str(cfg)]
    )
    cfg.write_text("bundle: .\nserver: [127.0.0.1:abc]\n")
    assert "got 'abc'" in _fails(capsys, ["device", "--config", str(cfg)])


def test_no_progress_bar_before_an_error(capsys, tmp_path):
    """The export's bar started before the model was traced, the profile's counted MACs
    before it found that its output folder did not exist."""
    base = ["--input", "3x32x64", "--model-arg", "width=0.125"]
    err = _fails(
        capsys, ["export", "unet-vgg16", *base, "--split", "nosuch", "--out", str(tmp_path / "b")]
    )
    assert "nosuch" in err
    err = _fails(capsys, ["export", "no-such-model", *base, "--split", "x", "--out", str(tmp_path)])
    assert "no-such-model" in err
    err = _fails(capsys, ["profile", "unet-vgg16", *base, "--json", "/no/such/dir/p.json"])
    assert "--json: folder /no/such/dir does not exist" in err
    err = _fails(capsys, ["profile", "unet-vgg16", *base, "--bottleneck", "/no/such.pt"])
    assert "bottleneck checkpoint not found" in err


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    import splitnet.cli.models as models_cli

    def run(args):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 119999997600000012 bytes."
        )

    monkeypatch.setattr(models_cli, "run", run)
    assert "out of memory (can't allocate memory" in _fails(capsys, ["models"])

    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(models_cli, "run", bug)
    from splitnet.cli import main

    with pytest.raises(RuntimeError, match="a bug"):  # other RuntimeErrors stay tracebacks
        main(["models"])


# ---- splitnet.wire._net, without sockets ----


@pytest.mark.parametrize(
    ("text", "target", "family"),
    [
        ("127.0.0.1:8001", "127.0.0.1:8001", "ipv4"),
        (" localhost:1 ", "localhost:1", "dns"),
        ("server-1.example.com:65535", "server-1.example.com:65535", "dns"),
        ("[::1]:8001", "[::1]:8001", "ipv6"),
        ("[fe80::1]:80", "[fe80::1]:80", "ipv6"),
        ("unix:/run/splitnet.sock", "unix:/run/splitnet.sock", "unix"),
        ("unix:///run/splitnet.sock", "unix:/run/splitnet.sock", "unix"),
    ],
)
def test_parse_address(text, target, family):
    a = parse_address(text)
    assert (a.target, a.family) == (target, family)


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:abc", "127.0.0.1:", ":8001", "host", "127.0.0.1:65536", "[::1]8001", "[x]:1",
     "::1:8001", "1.2.3.4.5:1", "bad_host!:1", "unix:", "-lead:1"],
)  # fmt: skip
def test_parse_address_refuses(text):
    with pytest.raises(ConfigError, match="--server"):
        parse_address(text)


def test_ports_and_targets():
    assert parse_port("0") == 0 and parse_port(65535) == 65535
    with pytest.raises(ConfigError, match=r"--port must be a port number \(0-65535\), got 70000"):
        parse_port(70000)
    with pytest.raises(ConfigError, match=r"\(1-65535\)"):
        parse_port(0, allow_zero=False)
    assert grpc_target(parse_addresses("10.0.0.1:1,10.0.0.2:2")) == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert grpc_target(parse_addresses(["[::1]:1", "[::2]:2"])) == "ipv6:[::1]:1,[::2]:2"
    assert grpc_target(parse_addresses("localhost:1")) == "localhost:1"
    with pytest.raises(ConfigError, match="all be IPv4 or all IPv6"):
        grpc_target(parse_addresses("a:1,b:2"))


def test_server_library_refuses_a_bad_port(repository, models):
    from splitnet.server import InferenceServer, ServerConfig

    with pytest.raises(ConfigError, match="--port must be a port number"):
        InferenceServer(ServerConfig(repository=repository, port=70000), models=models)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_check_tls_files(tmp_path):
    from test_server_grpc import _make_certs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _make_certs(tmp_path / "a"), _make_certs(tmp_path / "b")
    check_tls_files(cert=a["server_pem"], key=a["server_key"], ca=a["ca_pem"])
    check_tls_files(ca=a["ca_pem"])
    with pytest.raises(ConfigError, match="not a valid private key"):
        check_tls_files(cert=a["server_pem"], key=b["server_key"])
    with pytest.raises(ConfigError, match="holds no PEM private key"):
        check_tls_files(cert=a["server_pem"], key=a["server_pem"])
    with pytest.raises(ConfigError, match="go together"):
        check_tls_files(cert=a["server_pem"])
