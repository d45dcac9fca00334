"""``--head-threads``: OpenVINO's inference threads on the head's compiled model, from
``splitnet device`` (plain, device-only, on a plan), ``bench-head`` and ``profile
--measure-fps``; recorded in the daemon's summary.json; bad values are one-line errors."""

from __future__ import annotations

import json

import pytest

from splitnet.cli import main


def _threads(runner) -> int:
    return int(runner.compiled.get_property("INFERENCE_NUM_THREADS"))


def test_head_runner_compiles_with_the_thread_count_and_one_stream(repository):
    from splitnet.device import HeadRunner

    runner = HeadRunner(repository / "unet", threads=1)
    assert _threads(runner) == 1
    assert int(runner.compiled.get_property("NUM_STREAMS")) == 1
    assert runner.properties["INFERENCE_NUM_THREADS"] == 1
    # the default is unchanged: OpenVINO's own choice, no thread count asked for
    default = HeadRunner(repository / "unet")
    assert "INFERENCE_NUM_THREADS" not in default.properties


def test_daemon_passes_head_threads_to_its_head_and_records_them(repository, tmp_path):
    import asyncio

    from splitnet.device import DaemonConfig, DeviceDaemon

    daemon = DeviceDaemon(
        DaemonConfig(bundle=repository / "unet", servers=("127.0.0.1:1",), head_threads=1)
    )
    assert _threads(daemon.runner) == 1
    assert daemon.summary.head_threads == 1
    # the summary.json a run writes says so (a dead server: the run gives up at once)
    out = tmp_path / "out"
    cfg = DaemonConfig(
        bundle=repository / "unet",
        servers=("127.0.0.1:1",),
        head_threads=1,
        frames=1,
        out=out,
        retry_timeout_s=0.2,
    )
    asyncio.run(DeviceDaemon(cfg).run())
    assert json.loads((out / "summary.json").read_text())["head_threads"] == 1
    plain = DeviceDaemon(DaemonConfig(bundle=repository / "unet", servers=("127.0.0.1:1",)))
    assert plain.summary.head_threads is None


def test_device_only_daemon_takes_head_threads(tmp_path):
    from splitnet.device import DaemonConfig, LocalDaemon
    from splitnet.export import export_whole

    export_whole(
        "unet-vgg16",
        out_dir=tmp_path / "dev",
        mode="device-only",
        input_shape=(3, 32, 64),
        model_args={"width": 0.125},
        parity_frames=1,
    )
    out = tmp_path / "out"
    args = ["device", "--bundle", str(tmp_path / "dev"), "--frames", "2", "--out", str(out)]
    assert main([*args, "--head-threads", "1"]) == 0
    assert json.loads((out / "summary.json").read_text())["head_threads"] == 1
    daemon = LocalDaemon(DaemonConfig(bundle=tmp_path / "dev", head_threads=2))
    assert _threads(daemon.runner) == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
@pytest.mark.parametrize("command", ["device", "bench-head", "profile"])
def test_bad_head_threads_are_one_line_errors(repository, command, value, capsys):
    bundle = str(repository / "unet")
    args = {
        "device": ["device", "--bundle", bundle, "--server", "127.0.0.1:1"],
        "bench-head": ["bench-head", bundle],
        "profile": ["profile", "unet-vgg16", "--input", "3x32x64", "--measure-fps"],
    }[command]
    assert main([*args, "--head-threads", value]) == 2
    out, err = capsys.readouterr()
    assert not out
    assert len(err.strip().splitlines()) == 1, err
    assert "--head-threads" in err and "positive integer" in err, err


def test_head_threads_from_a_config_file_are_checked(repository, tmp_path, capsys):
    cfg = tmp_path / "device.yaml"
    cfg.write_text("head-threads: 0\n")
    args = ["device", "--config", str(cfg), "--bundle", str(repository / "unet")]
    assert main([*args, "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--head-threads must be a positive integer" in err, err
    from splitnet._errors import ConfigError
    from splitnet.device import DaemonConfig, DeviceDaemon

    with pytest.raises(ConfigError, match="head threads"):
        DeviceDaemon(
            DaemonConfig(bundle=repository / "unet", servers=("127.0.0.1:1",), head_threads=0)
        )


def test_bench_head_times_with_the_thread_count(repository, capsys):
    assert main(["bench-head", str(repository / "unet"), "--seconds", "0.2", "--warmup", "0"]
                + ["--head-threads", "1", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["head_threads"] == 1 and doc["fps"] > 0


def test_profile_measure_fps_passes_head_threads_to_the_benchmark(monkeypatch):
    """profile --measure-fps times each head with the thread count asked for."""
    import splitnet.device
    from splitnet.profile import profile_model

    seen = []
    real = splitnet.device.benchmark_head

    def spy(bundle, **kw):
        seen.append(kw.get("threads"))
        return real(bundle, **{**kw, "seconds": 0.05, "warmup": 0.0})

    monkeypatch.setattr(splitnet.device, "benchmark_head", spy)
    profile_model(
        "unet-vgg16",
        input_shape=(3, 32, 64),
        points=["encoder.block1.pool"],
        measure_fps=True,
        measure_seconds=0.05,
        head_threads=1,
        width=0.125,
    )
    assert seen and set(seen) == {1}
