"""``splitnet serve`` and ``splitnet device`` on bad input: one line, exit 2."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.grpc


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve"], "missing option(s): --repository"),
        (["serve", "--repository", "/no/such/dir"], "model repository not found"),
        (["serve", "--repository", ".", "--max-batch", "0"], "--max-batch must be >= 1"),
        (
            ["serve", "--repository", ".", "--http-port", "70000"],
            "--http-port: expected a port number",
        ),
        (["device", "--server", "127.0.0.1:1"], "missing option(s): --bundle"),
        (
            ["device", "--bundle", "/no/such/bundle", "--server", "127.0.0.1:1"],
            "bundle folder not found",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, message):
    from splitnet.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_config_file(tmp_path, capsys, repository):
    from splitnet.cli import main

    cfg = tmp_path / "device.yaml"
    cfg.write_text("bundle: /no/such/bundle\nserver: [127.0.0.1:1]\nwindow: 2\n")
    assert main(["device", "--config", str(cfg)]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
    cfg.write_text("bundel: x\n")
    assert main(["device", "--config", str(cfg)]) == 2
    assert "unknown option 'bundel'" in capsys.readouterr().err
