"""splitnet plan: units, readers, the cost model on hand-written inputs, the CLI's errors."""

from __future__ import annotations

import json
import time

import pytest
from _plan_docs import many_points, profile_doc, profile_point, rate_doc, rate_row, write

from splitnet.cli import main
from splitnet.plan import (
    PlanError,
    make_plan,
    parse_bandwidth,
    parse_duration,
    request_overhead_bytes,
)

# -- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("20Mbit/s", 20e6),
        ("20 Mbit/s", 20e6),
        ("20Mbps", 20e6),
        ("20mbps", 20e6),
        ("100kbit/s", 1e5),
        ("100 kbps", 1e5),
        ("1Gbit/s", 1e9),
        ("1 Gbps", 1e9),
        ("512bit/s", 512.0),
        ("512 bps", 512.0),
        ("2.5MB/s", 20e6),
        ("10kB/s", 8e4),
        ("1GB/s", 8e9),
        ("12 B/s", 96.0),
        ("1e3kbit/s", 1e6),
        (".5Mbit/s", 5e5),
    ],
)
def test_parse_bandwidth(text, bps):
    assert parse_bandwidth(text) == pytest.approx(bps)


@pytest.mark.parametrize(
    "text", ["20 furlongs", "20", "Mbit/s", "-5Mbit/s", "20 Mbit", "20 MiB/s", "20Tbit/s", "x"]
)
def test_parse_bandwidth_rejects_other_units_listing_the_good_ones(text):
    with pytest.raises(PlanError, match="kbit/s, Mbit/s, Gbit/s.*kB/s, MB/s") as e:
        parse_bandwidth(text)
    assert "\n" not in str(e.value)


def test_parse_bandwidth_rejects_zero():
    with pytest.raises(PlanError, match="> 0"):
        parse_bandwidth("0Mbit/s")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30ms", 0.03), ("30 ms", 0.03), ("250us", 250e-6), ("1.5s", 1.5), ("0ms", 0.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "30 min", "-1ms", "ms", "30 furlongs"])
def test_parse_duration_rejects_other_units(text):
    with pytest.raises(PlanError, match="us, ms, s"):
        parse_duration(text)


# -- the cost model, on numbers chosen by hand ------------------------------------------------
#
# a: a shallow cut, cheap on the device, 100 kB per frame: head 10, encode 1, decode 1, tail 20 ms
# b: a deep cut, dear on the device, 10 kB per frame:     head 30, encode 1, decode 1, tail 10 ms
# device-only: 500 ms on the device; the image: 1 MB as PNG, 5 ms to encode, 2 to decode, 40 to run
RTT = 0.0


@pytest.fixture
def files(tmp_path):
    points = [
        profile_point("a", 4, elements=50_000, head_ms=10.0, tail_ms=20.0),
        profile_point("b", 9, elements=20_000, head_ms=30.0, tail_ms=10.0),
    ]
    rows = [
        ("a", 4, 50_000, [rate_row("q4", 100.0, 0.3, 1.0, 1.0)]),
        ("b", 9, 20_000, [rate_row("q4", 10.0, 0.8, 1.0, 1.0)]),
    ]
    profile = write(tmp_path / "profile.json", profile_doc(points))
    rate = write(tmp_path / "results.json", rate_doc(rows, [("png", 1000.0, 0.0, 5.0, 2.0)]))
    return profile, rate


def _wire(split: str, kb: float) -> float:
    """What crosses the link for a payload of ``kb``: the payload and the request around it."""
    return 1000 * kb + request_overhead_bytes(f"toy.{split}", 1000 * kb)


def test_the_ranking_flips_where_the_hand_computed_crossover_is(files):
    wa, wb = _wire("a", 100.0), _wire("b", 10.0)
    # latency: 32 + 8000 wa / bw = 42 + 8000 wb / bw  =>  bw = 8000 (wa - wb) / 10 ms (~72 Mbit/s)
    cross = 8000 * (wa - wb) / 10
    # below that, b wins down to where it meets device-only: 42 + 8000 wb / bw = 500
    low = 8000 * wb / (500 - 42)
    for bw, best in [(0.99 * low, "device-only"), (1.01 * low, "b q4")]:
        plan = make_plan(*files, bandwidth_bps=bw, rtt_s=RTT)
        assert plan.best.candidate.name == best
    for bw, best in [(0.99 * cross, "b q4"), (1.01 * cross, "a q4")]:
        plan = make_plan(*files, bandwidth_bps=bw, rtt_s=RTT)
        assert plan.best.candidate.name == best
    got = [(x.below, x.above, x.bandwidth_bps) for x in plan.crossovers]
    assert [g[:2] for g in got] == [("device-only", "b q4"), ("b q4", "a q4")]
    assert got[0][2] == pytest.approx(low, rel=1e-6)
    assert got[1][2] == pytest.approx(cross, rel=1e-6)

    # every term of the best, at the crossover + 1%
    a = plan.best
    assert a.candidate.device_ms == pytest.approx(11.0) and a.candidate.server_ms == 21.0
    assert a.candidate.wire_bytes == wa
    assert a.transfer_ms == pytest.approx(8000 * wa / (1.01 * cross))
    assert a.latency_ms == pytest.approx(32.0 + a.transfer_ms)


def test_rtt_adds_to_every_candidate_that_sends(files):
    plan = make_plan(*files, bandwidth_bps=20e6, rtt_s=0.03)
    by_name = {k.candidate.name: k for k in plan.ranked}
    for name, k in by_name.items():
        rtt = 0.0 if name == "device-only" else 30.0
        assert k.link_ms == pytest.approx(k.transfer_ms + rtt)
        assert k.latency_ms == pytest.approx(
            k.candidate.device_ms + k.link_ms + k.candidate.server_ms
        )


def test_fps_objective_is_the_slowest_stage_and_ignores_the_rtt(files):
    wa, wb = _wire("a", 100.0), _wire("b", 10.0)
    # b's slowest stage is its device (31 ms) above 8000 wb / 31; a overtakes it where a's
    # transfer falls to 31 ms: bw = 8000 wa / 31 (~25.8 Mbit/s)
    cross = 8000 * wa / 31
    slow = make_plan(*files, bandwidth_bps=0.99 * cross, rtt_s=0.1, objective="fps")
    fast = make_plan(*files, bandwidth_bps=1.01 * cross, rtt_s=0.1, objective="fps")
    assert slow.best.candidate.name == "b q4" and slow.best.fps == pytest.approx(1000 / 31)
    assert fast.best.candidate.name == "a q4" and fast.best.bottleneck == "link"
    assert fast.best.fps == pytest.approx(1000 / (8000 * wa / (1.01 * cross)))
    fps_cross = [x for x in fast.crossovers if x.below == "b q4" and x.above == "a q4"]
    assert fps_cross[0].bandwidth_bps == pytest.approx(cross, rel=1e-6)
    # device-only gives 2 FPS; b beats it where its 8000 wb / bw transfer falls under 500 ms
    assert fast.crossovers[0].bandwidth_bps == pytest.approx(8000 * wb / 500, rel=1e-6)


def test_bounds_exclude_and_the_baselines_are_always_there(files):
    plan = make_plan(*files, bandwidth_bps=20e6, max_drop_points=0.5, max_device_memory_mb=5)
    names = [k.candidate.name for k in plan.ranked]
    assert "b q4" not in names and "device-only" not in names  # drop 0.8, 7 MB
    assert {"a q4", "image png"} <= set(names)
    excluded = {k.candidate.name: k.misses for k in plan.excluded}
    assert excluded["b q4"] == {"drop_points": pytest.approx(0.3)}
    assert excluded["device-only"] == {"device_memory_bytes": pytest.approx(2e6)}
    # the table shows the baselines even when they are excluded or below --top
    table = plan.format_table(top=1)
    assert "device-only" in table and "image png" in table and "b q4" not in table
    doc = json.loads(plan.to_json())
    assert doc["best"] == plan.best.candidate.name
    row = doc["ranked"][0]
    for term in ("head_ms", "encode_ms", "wire_bytes", "transfer_ms", "link_ms", "decode_ms"):
        assert term in row
    assert {"tail_ms", "latency_ms", "fps", "drop_points", "device_memory_bytes"} <= set(row)


def test_bench_head_timing_replaces_the_profile_head(files, tmp_path):
    bench = {
        "label": "toy.b on CPU",
        "fps": 100.0,
        "latency_ms_mean": 5.0,
        "device": "MYRIAD",
        "model": "toy",
        "input": [3, 64, 64],
        "split": "b",
        "codec": "q4",
    }
    path = write(tmp_path / "bench.json", bench)
    plan = make_plan([files[0], path], files[1], bandwidth_bps=20e6)
    b = next(k for k in plan.ranked if k.candidate.name == "b q4")
    assert b.candidate.head_ms == 5.0


def test_missing_codec_times_are_estimated_and_said_so(tmp_path):
    points = [profile_point("a", 4, elements=50_000, head_ms=10.0, tail_ms=20.0)]
    rows = [("a", 4, 50_000, [rate_row("q4", 100.0, 0.3, None, None)])]
    profile = write(tmp_path / "p.json", profile_doc(points))
    rate = write(tmp_path / "r.json", rate_doc(rows, [("png", 100.0, 0.0, None, None)]))
    plan = make_plan(profile, rate, bandwidth_bps=20e6)
    a = next(k.candidate for k in plan.ranked if k.candidate.name == "a q4")
    assert a.encode_ms == pytest.approx(50_000 * 4 / 800e3)  # float32 bytes at 800 MB/s
    assert set(a.estimated) == {"encode_ms", "decode_ms"}
    assert any("estimated" in n for n in plan.notes)
    assert "*" in plan.format_table()


def test_plot_is_a_png(files, tmp_path):
    out = tmp_path / "plan.png"
    assert main(["plan", "toy", "--input", "3x64x64", "--bandwidth", "20Mbit/s",
                 "--profile", files[0], "--rate-accuracy", files[1], "--plot", str(out)]) == 0  # fmt: skip
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_table_and_json(files, tmp_path, capsys):
    argv = ["plan", "toy", "--input", "3x64x64", "--bandwidth", "100Mbit/s", "--rtt", "30ms"]
    argv += ["--profile", files[0], "--rate-accuracy", files[1]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[:3] == ["1", "a", "q4"]
    assert "best: a q4" in out and "RTT 30 ms" in out
    assert main([*argv, "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["link"] == {"bandwidth_bps": 1e8, "rtt_ms": 30.0} and doc["best"] == "a q4"
    saved = tmp_path / "plan.json"
    assert main([*argv, "--json", str(saved)]) == 0
    assert json.loads(saved.read_text())["ranked"] == doc["ranked"]


# -- bad input: one line, exit 2 ---------------------------------------------------------------


def _bad_files(tmp_path):
    """Variants of the inputs, each wrong in one way."""
    ok_points = [profile_point("a", 4, elements=50_000, head_ms=10.0, tail_ms=20.0)]
    rows = [("a", 4, 50_000, [rate_row("q4", 100.0, 0.3, 1.0, 1.0)])]
    jpeg = [("jpeg50", 5.0, 3.0, 1.0, 1.0)]
    return {
        "profile": write(tmp_path / "p.json", profile_doc(ok_points)),
        "rate": write(tmp_path / "r.json", rate_doc(rows, jpeg)),
        "other_model": write(tmp_path / "other.json", rate_doc(rows, jpeg, model="fcn8s")),
        "other_input": write(
            tmp_path / "big.json", rate_doc(rows, jpeg, input_shape=(3, 128, 128))
        ),
        "other_width": write(
            tmp_path / "wide.json", rate_doc([("a", 4, 200_000, rows[0][3])], jpeg)
        ),
        "no_whole": write(tmp_path / "no_whole.json", profile_doc(ok_points, whole_ms=None)),
        "unmeasured": write(
            tmp_path / "unmeasured.json",
            profile_doc(
                [profile_point("a", 4, elements=50_000, head_ms=None, tail_ms=None)],
                whole_ms=None,
                tail_device=None,
            ),
        ),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--bandwidth": "20 furlongs"}, "cannot read the bandwidth '20 furlongs'"),
        ({"--rtt": "30 fortnights"}, "cannot read the duration"),
        ({"--rate-accuracy": "other_model"}, "p.json is toy at 3x64x64 but"),
        ({"--rate-accuracy": "other_input"}, "big.json is toy at 3x128x128"),
        ({"--rate-accuracy": "other_width"}, "not the same model"),
        ({"--profile": "rate"}, "not a profile"),
        ({"--profile": "unmeasured"}, "unmeasured.json has no measured head times"),
        ({"--profile": "no_whole"}, "no timing of the whole model on the device"),
        ({"--profile": "/no/such.json"}, "no such file"),
        ({"MODEL": "resnet18"}, "the command line is resnet18 at 3x64x64 but"),
        (
            {"--max-drop": "0.2", "--max-device-memory": "1"},
            "no candidate meets --max-drop 0.2 and --max-device-memory 1; the closest is a q4 "
            "(drop 0.30 points, 0.10 over; device memory 3.0 MB, 2.0 MB over)",
        ),
        ({"--plot": "plan.pdf"}, "ending in .png"),
        ({"--top": "0"}, "--top must be >= 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, change, message):
    paths = _bad_files(tmp_path)
    opts = {
        "MODEL": "toy",
        "--input": "3x64x64",
        "--bandwidth": "20Mbit/s",
        "--profile": "profile",
        "--rate-accuracy": "rate",
    }
    opts.update(change)
    argv = ["plan", opts.pop("MODEL")]
    for k, v in opts.items():
        argv += [k, paths.get(v, v)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


# -- speed and the device side -----------------------------------------------------------------


def test_plan_on_72_points_is_fast(tmp_path, capsys):
    """72 points x 5 codecs + baselines: the benchmark (benchmarks/bench_plan.py) measures
    it; here only a loose bound, since timing targets belong in benchmarks."""
    profile, rate = many_points(72)
    argv = ["plan", "toy", "--input", "3x64x64", "--bandwidth", "20Mbit/s", "--rtt", "30ms"]
    argv += ["--profile", write(tmp_path / "p.json", profile)]
    argv += ["--rate-accuracy", write(tmp_path / "r.json", rate)]
    start = time.perf_counter()
    assert main([*argv, "--json", "-"]) == 0
    elapsed = time.perf_counter() - start
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["ranked"]) + len(doc["excluded"]) == 72 * 5 + 3
    assert elapsed < 5.0, elapsed


def test_planner_runs_without_torch(files):
    from _no_torch import run_without_torch

    code = """
from splitnet.cli import main
rc = main(["plan", "toy", "--input", "3x64x64", "--bandwidth", "20Mbit/s",
           "--profile", sys.argv[1], "--rate-accuracy", sys.argv[2]])
assert rc == 0, rc
"""
    res = run_without_torch(code, args=files)
    assert res.returncode == 0, res.stderr
    assert "best:" in res.stdout


# -- the pipeline: window, shared cores, source time, batching delay --------------------------
#
# validated against the real daemon and server in experiments/validate_plan.py


def _cost(files, bw, **pipeline):
    from splitnet.plan import Link, Pipeline, build_candidates, evaluate, read_profile
    from splitnet.plan import read_rate_accuracy as read_ra

    cands, _ = build_candidates(read_profile(files[0]), read_ra(files[1]))
    link = Link(bw, 0.02)
    by = {c.name: c for c in cands}
    return {n: evaluate(c, link, pipeline=Pipeline(**pipeline)) for n, c in by.items()}, link


def test_a_full_window_bounds_the_fps_by_window_over_latency(files):
    # "b q4" at 100 Mbit/s: device 31, transfer ~0.8, RTT 20, server 11 ms: 62.8 ms a frame;
    # two frames in flight give at most 2 / 62.8 ms = 31.8 FPS, under the device's 32.3
    costs, link = _cost(files, 100e6, window=2)
    k = costs["b q4"]
    one = 31.0 + k.transfer_ms + 20.0 + 11.0
    assert k.latency_ms == pytest.approx(one)
    assert k.bottleneck == "window" and k.fps == pytest.approx(2000 / one)
    # without a window (the phase-1 model) it was the device's 1000 / 31
    free, _ = _cost(files, 100e6)
    assert free["b q4"].fps == pytest.approx(1000 / 31) and free["b q4"].bottleneck == "device"


def test_a_stream_waits_in_the_full_window_unless_the_device_bounds_it(files):
    # "a q4" at 10 Mbit/s: its ~80 ms transfer is the bottleneck; 8 frames queue in the
    # window, and the source's next frame waits for a slot: (8 + 1) x 80 - (11 + 2) ms
    costs, _ = _cost(files, 10e6, window=8, source_ms=2.0)
    a = costs["a q4"]
    assert a.bottleneck == "link" and a.fps == pytest.approx(1000 / a.transfer_ms)
    assert a.stream_latency_ms == pytest.approx(9 * a.transfer_ms - 13.0)
    assert a.stream_latency_ms > 5 * a.latency_ms
    # "b q4" at 100 Mbit/s is bound by its device (31 + 2 ms): no queue, a frame's latency
    costs, _ = _cost(files, 100e6, window=8, source_ms=2.0)
    b = costs["b q4"]
    assert b.bottleneck == "device" and b.fps == pytest.approx(1000 / 33)
    assert b.stream_latency_ms == pytest.approx(b.latency_ms)
    # device-only has no window (nothing in flight) and no link
    d = costs["device-only"]
    assert d.fps == pytest.approx(1000 / 502) and d.stream_latency_ms == pytest.approx(500)


def test_shared_cores_add_the_device_and_server_compute(files):
    # one core for the device's loop and the server: b q4 needs 31 + 11 = 42 ms of it a frame
    costs, _ = _cost(files, 100e6, shared_cores=1)
    b = costs["b q4"]
    assert b.bottleneck == "compute" and b.fps == pytest.approx(1000 / 42)
    two, _ = _cost(files, 100e6, shared_cores=2)  # 21 ms: the device (31) bounds it again
    assert two["b q4"].bottleneck == "device" and two["b q4"].fps == pytest.approx(1000 / 31)
    # the image's device stage is its 5 ms encode, its server 2 + 40 ms: shared, 47 ms
    assert costs["image png"].fps == pytest.approx(1000 / max(47, costs["image png"].transfer_ms))


def test_the_servers_batching_delay_adds_to_what_is_sent_only(files):
    costs, _ = _cost(files, 100e6, server_delay_ms=5)
    free, _ = _cost(files, 100e6)
    assert costs["a q4"].latency_ms == pytest.approx(free["a q4"].latency_ms + 5)
    assert costs["device-only"].latency_ms == free["device-only"].latency_ms == 500


def test_curves_and_crossovers_follow_the_pipeline(files):
    """The plot's curves and the crossovers use the same model as the ranking."""
    import numpy as np

    from splitnet.plan import Link, Pipeline, build_candidates, curves, evaluate, read_profile
    from splitnet.plan import read_rate_accuracy as read_ra

    cands, _ = build_candidates(read_profile(files[0]), read_ra(files[1]))
    p = Pipeline(window=2, shared_cores=1, source_ms=3.0, server_delay_ms=5.0)
    grid = np.geomspace(1e6, 1e9, 7)
    for objective in ("fps", "latency"):
        got = curves(cands, grid, 0.02, objective, p)
        for i, c in enumerate(cands):
            for j, bw in enumerate(grid):
                k = evaluate(c, Link(bw, 0.02), pipeline=p)
                assert got[i, j] == pytest.approx(k.fps if objective == "fps" else k.latency_ms)
    plan = make_plan(*files, bandwidth_bps=20e6, rtt_s=0.02, objective="fps", pipeline=p)
    for x in plan.crossovers:  # the ranking on each side of a crossover agrees with it
        below = make_plan(*files, bandwidth_bps=0.98 * x.bandwidth_bps, rtt_s=0.02,
                          objective="fps", pipeline=p)  # fmt: skip
        assert below.best.candidate.name == x.below


def test_cli_pipeline_options(files, capsys):
    argv = ["plan", "toy", "--input", "3x64x64", "--bandwidth", "20Mbit/s", "--rtt", "20ms",
            "--profile", str(files[0]), "--rate-accuracy", str(files[1])]  # fmt: skip
    assert main([*argv, "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # the defaults are splitnet device's window and splitnet serve's batching delay
    assert doc["pipeline"] == {
        "window": 8,
        "shared_cores": None,
        "source_ms": 0.0,
        "server_delay_ms": 5.0,
        "head_threads": None,
    }
    assert all("stream_latency_ms" in r for r in doc["ranked"])
    assert main([*argv, "--window", "0", "--server-delay", "0ms", "--shared-cores", "1"]) == 0
    assert "device and server on 1 shared core(s)" in capsys.readouterr().out
    assert main([*argv, "--window", "-1"]) == 2
    assert "--window must be >= 0" in capsys.readouterr().err
    assert main([*argv, "--shared-cores", "0"]) == 2
    assert "shared cores must be > 0" in capsys.readouterr().err


def test_on_shared_cores_no_queue_forms_when_the_device_is_the_larger_share(files):
    # "b q4" at 100 Mbit/s on one shared core: its device loop (31 ms) outweighs the server
    # (11 ms), so the producer, slowed by the server's work, is what limits the stream:
    # the window does not fill; each frame is slowed by the 11 ms computed beside it
    costs, _ = _cost(files, 100e6, window=8, shared_cores=1)
    b = costs["b q4"]
    assert b.bottleneck == "compute" and b.fps == pytest.approx(1000 / 42)
    assert b.stream_latency_ms == pytest.approx(b.latency_ms + 11.0)
    # "a q4" (device 11, server 21 ms) queues before the server: the window fills
    a = costs["a q4"]
    assert a.bottleneck == "compute" and a.fps == pytest.approx(1000 / 32)
    assert a.stream_latency_ms == pytest.approx(9 * 32 - 11)
