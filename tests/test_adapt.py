"""Runtime adaptation: the link estimator, the switch policy, plan files, and the daemon on
a plan against a real server while the emulated link steps 50 -> 5 -> 50 Mbit/s."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _plan_docs import profile_doc, profile_point, rate_doc, rate_row, write
from _serve_helpers import server_config, until_candidate

from splitnet.cli import main
from splitnet.device import LinkEstimate, LinkEstimator, SwitchPolicy
from splitnet.plan import (
    Bounds,
    Link,
    PlanCandidate,
    PlanFile,
    make_plan,
    plan_file_from_plan,
    read_plan_file,
    write_plan_file,
)

SPLIT = "encoder.block1.pool"
INPUT = (3, 32, 64)
F16, Q4 = f"{SPLIT} f16", f"{SPLIT} q4"

# -- the estimator ----------------------------------------------------------------------------


def _feed(est, sizes, bandwidth_bps, rtt_s, *, start, seconds, rng, noise_s=0.0, every=0.01):
    """Frames of the first size every ``every`` s, a probe of each other size every 0.25 s."""
    t, last_probe = start, -1.0
    while t < start + seconds:
        names = [next(iter(sizes))]
        if t - last_probe >= 0.25:
            names += list(sizes)[1:]
            last_probe = t
        for n in names:
            lat = 8 * sizes[n] / bandwidth_bps + rtt_s + rng.normal(0, noise_s)
            est.add(n, wire_bytes=sizes[n], seconds=lat, now=t)
        t += every
    return t


@pytest.mark.parametrize(
    ("bandwidth", "rtt"), [(50e6, 0.004), (5e6, 0.030), (1e6, 0.0), (200e6, 0.05)]
)
def test_estimator_recovers_bandwidth_and_rtt(bandwidth, rtt):
    est = LinkEstimator()
    sizes = {"big": 40_000, "small": 10_000}
    t = _feed(est, sizes, bandwidth, rtt, start=0.0, seconds=2.0, rng=np.random.default_rng(0))
    e = est.estimate(now=t)
    assert e.bandwidth_bps == pytest.approx(bandwidth, rel=1e-6)
    assert e.rtt_s == pytest.approx(rtt, abs=1e-9)


def test_estimator_follows_a_step_and_averages_noise():
    rng = np.random.default_rng(1)
    est = LinkEstimator()
    sizes = {"big": 40_000, "small": 10_000, "mid": 20_000}
    t = _feed(est, sizes, 50e6, 0.01, start=0.0, seconds=2.0, rng=rng, noise_s=0.0005)
    assert est.estimate(t).bandwidth_bps == pytest.approx(50e6, rel=0.25)
    t = _feed(est, sizes, 5e6, 0.01, start=t, seconds=2.0, rng=rng, noise_s=0.0005)
    e = est.estimate(t)
    assert e.bandwidth_bps == pytest.approx(5e6, rel=0.1)
    assert e.rtt_s == pytest.approx(0.01, abs=0.003)


def test_estimator_needs_two_sizes_and_forgets_stale_ones():
    est = LinkEstimator(max_age_s=1.0)
    assert est.estimate(0.0) is None
    est.add("a", wire_bytes=1000, seconds=0.01, now=0.0)
    est.add("a2", wire_bytes=1000, seconds=0.02, now=0.0)  # same size: no slope
    assert est.estimate(0.0) is None
    est.add("b", wire_bytes=5000, seconds=0.03, now=0.0)
    assert est.estimate(0.5) is not None
    assert est.estimate(1.5) is None  # every sample older than max_age_s
    # a slope of 0 or less: the link is not the limit
    flat = LinkEstimator()
    flat.add("a", wire_bytes=1000, seconds=0.03, now=0.0)
    flat.add("b", wire_bytes=5000, seconds=0.029, now=0.0)
    assert flat.estimate(0.0).bandwidth_bps >= 1e10


def test_probe_target_is_another_size_least_recently_seen():
    est = LinkEstimator()
    sizes = {"a": 1000, "b": 5000, "c": 9000, "a-twin": 1000}
    assert est.probe_target("a", sizes) in {"b", "c"}
    est.add("b", wire_bytes=5000, seconds=0.01, now=1.0)
    assert est.probe_target("a", sizes) == "c"
    est.add("c", wire_bytes=9000, seconds=0.01, now=2.0)
    assert est.probe_target("a", sizes) == "b"
    assert LinkEstimator().probe_target("a", {"a": 1, "a-twin": 1}) is None


# -- the policy -------------------------------------------------------------------------------


def _policy(**kw):
    # a's score is fixed at 100; b's score is the estimate's bandwidth in Mbit/s
    def score(name, est):
        return 100.0 if name == "a" else est.bandwidth_bps / 1e6

    return SwitchPolicy(["a", "b"], score, current="a", **kw)


def _est(mbps):
    return LinkEstimate(mbps * 1e6, 0.0, 10)


def test_policy_switches_after_the_dwell_and_not_within_the_hysteresis():
    p = _policy(hysteresis=0.15, dwell_s=0.5)
    for t in np.arange(0, 5, 0.05):  # 14% better, for ever: stays
        assert p.update(_est(114), t) == "a"
    assert p.update(_est(120), 5.0) == "a"  # 20% better: the dwell starts
    assert p.update(_est(120), 5.49) == "a"
    assert p.update(_est(120), 5.5) == "b"
    assert p.update(_est(100), 6.0) == "b"  # a is no better than b now: stays
    assert p.update(None, 7.0) == "b"


def test_policy_does_not_flap_on_an_estimate_that_crosses_back_and_forth():
    p = _policy(hysteresis=0.15, dwell_s=0.5)
    switches, cur = 0, "a"
    for i, t in enumerate(np.arange(0, 10, 0.1)):  # 130 / 90 Mbit/s every other 0.2 s
        new = p.update(_est(130 if (i // 2) % 2 else 90), t)
        switches += new != cur
        cur = new
    assert switches == 0


def test_policy_rejects_bad_settings():
    with pytest.raises(ValueError, match="hysteresis"):
        _policy(hysteresis=-0.1)
    with pytest.raises(ValueError, match="dwell"):
        _policy(dwell_s=-1)


# -- plan files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapt_repo(tmp_path_factory):
    """Two bundles of one U-Net cut, f16 (41 kB/frame) and q4 (10 kB/frame), and a
    classifier bundle (another model)."""
    from splitnet.export import export_bundle

    root = tmp_path_factory.mktemp("adapt")
    for codec in ("f16", "q4"):
        export_bundle(
            "unet-vgg16",
            input_shape=INPUT,
            split=SPLIT,
            out_dir=root / "repo" / codec,
            codec=codec,
            name=f"unet-vgg16.{SPLIT}.{codec}",
            model_args={"width": 0.125},
            parity_frames=1,
        )
    export_bundle(
        "resnet18",
        input_shape=(3, 32, 32),
        split="layer2.0.add",
        out_dir=root / "other" / "resnet",
        codec="f16",
        num_classes=10,
        parity_frames=1,
    )
    return root


def _measurements(tmp_path, *, model="unet-vgg16", input_shape=INPUT):
    points = [profile_point(SPLIT, 4, elements=20_480, head_ms=4.0, tail_ms=4.0)]
    rows = [
        (
            SPLIT,
            4,
            20_480,
            [rate_row("f16", 41.0, 0.0, 0.0, 0.0), rate_row("q4", 10.5, 0.4, 16.0, 0.0)],
        )
    ]
    profile = write(tmp_path / "p.json", profile_doc(points, model=model, input_shape=input_shape))
    rate = write(
        tmp_path / "r.json",
        rate_doc(rows, [("png", 50.0, 0.0, 5.0, 2.0)], model=model, input_shape=input_shape),
    )
    return profile, rate


def test_plan_file_round_trip_and_best_per_link(adapt_repo, tmp_path):
    profile, rate = _measurements(tmp_path)
    plan = make_plan(profile, rate, bandwidth_bps=50e6, objective="fps")
    bundles = [adapt_repo / "repo" / "f16", adapt_repo / "repo" / "q4"]
    pf = plan_file_from_plan(plan, bundles)
    assert [c.name for c in pf.candidates] == [F16, Q4]
    assert [c.served_name for c in pf.candidates] == [
        f"unet-vgg16.{SPLIT}.f16",
        f"unet-vgg16.{SPLIT}.q4",
    ]
    path = tmp_path / "plan.json"
    write_plan_file(pf, path)
    again = read_plan_file(path)
    assert again == pf
    # the terms are the plan's: f16 is link-bound at 5 Mbit/s, q4 device-bound (20 ms)
    q4 = next(c for c in again.candidates if c.codec == "q4")
    assert q4.device_ms == pytest.approx(20.0)
    assert again.best(50e6).name == F16
    assert again.best(5e6).name == Q4
    fps = again.score(again.candidates[0], 5e6)
    assert fps == pytest.approx(5e6 / (8 * again.candidates[0].wire_bytes))


def test_emit_plan_cli_and_its_bad_input(adapt_repo, tmp_path, capsys):
    profile, rate = _measurements(tmp_path)
    base = ["plan", "unet-vgg16", "--input", "3x32x64", "--bandwidth", "50Mbit/s"]
    base += ["--profile", profile, "--rate-accuracy", rate, "--objective", "fps"]
    out = tmp_path / "plan.json"
    repo = adapt_repo / "repo"
    assert (
        main([*base, "--emit-plan", str(out), "--bundles", str(repo / "f16"), str(repo / "q4")])
        == 0
    )
    assert json.loads(out.read_text())["format"] == "splitnet-plan/1"
    capsys.readouterr()

    def fails(args, message):
        assert main(args) == 2
        out, err = capsys.readouterr()
        err = err.strip()
        assert not out
        assert len(err.splitlines()) == 1, err
        assert message in err, err

    other = str(adapt_repo / "other" / "resnet")
    fails(
        [*base, "--emit-plan", str(out), "--bundles", str(repo / "f16"), other], "different models"
    )
    fails([*base, "--emit-plan", str(out)], "--emit-plan and --bundles go together")
    # a bundle of the plan's model that no candidate matches: named
    doc = json.loads(open(rate).read())
    doc["points"][0]["results"] = [r for r in doc["points"][0]["results"] if r["codec"] == "f16"]
    only_f16 = [a if a != rate else write(tmp_path / "r1.json", doc) for a in base]
    fails([*only_f16, "--emit-plan", str(out), "--bundles", str(repo / "q4")], str(repo / "q4"))

    # a plan file whose bundles are of different models
    pf = json.loads(out.read_text())
    pf["candidates"][1]["bundle"] = other
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(pf))
    fails(["device", "--plan", str(bad), "--server", "127.0.0.1:1"], "different models")
    fails(
        ["device", "--plan", str(tmp_path / "p.json"), "--server", "127.0.0.1:1"], "not a plan file"
    )
    fails(
        ["device", "--plan", str(out), "--bundle", str(repo / "f16"), "--server", "127.0.0.1:1"],
        "not both",
    )


# -- the daemon on a plan ---------------------------------------------------------------------


def _synthetic_plan(adapt_repo, path):
    """f16: 4 ms on the device and the server; q4: 20 ms on the device (objective FPS). So
    f16 is best above ~16 Mbit/s, q4 below; with 15% hysteresis the daemon moves to q4
    when it reads < ~14 Mbit/s, back to f16 when > ~19 Mbit/s."""
    from splitnet.bundle import read_manifest
    from splitnet.plan import request_overhead_bytes

    cands = []
    for codec, device_ms, kb in (("f16", 4.0, 41.0), ("q4", 20.0, 10.5)):
        d = adapt_repo / "repo" / codec
        name = read_manifest(d, verify=False).name
        cands.append(
            PlanCandidate(
                name=f"{SPLIT} {codec}",
                bundle=str(d),
                served_name=name,
                split=SPLIT,
                codec=codec,
                device_ms=device_ms,
                wire_bytes=kb * 1e3 + request_overhead_bytes(name, kb * 1e3),
                server_ms=4.0,
                drop_points=0.0,
            )
        )
    pf = PlanFile("unet-vgg16", INPUT, "fps", Bounds(), Link(50e6, 0.004), tuple(cands))
    write_plan_file(pf, path)
    return pf


@pytest.mark.grpc
def test_daemon_moves_to_the_small_candidate_at_5_mbits_and_back(adapt_repo, tmp_path):
    from PIL import Image

    from splitnet.device import AdaptiveDaemon, DaemonConfig, LinkEmulator
    from splitnet.server import InferenceServer, load_repository

    plan = tmp_path / "plan.json"
    _synthetic_plan(adapt_repo, plan)
    models = load_repository(adapt_repo / "repo", device="cpu")
    out = tmp_path / "out"

    async def body():
        server = InferenceServer(server_config(adapt_repo / "repo"), models=models)
        await server.start()
        link = LinkEmulator(50e6, 0.002)
        daemon = AdaptiveDaemon(
            DaemonConfig(
                plan=plan,
                servers=(f"127.0.0.1:{server.port}",),
                frames=100_000,
                out=out,
                window=4,
                emulate_link=link,
            )
        )
        run = asyncio.create_task(daemon.run())
        try:
            assert daemon.current == F16  # the plan's best on its own link
            while daemon.summary.ok < 40 and not run.done():
                await asyncio.sleep(0.05)
            at_50 = daemon.current
            link.set(bandwidth_bps=5e6)
            at_5 = await until_candidate(daemon, run, Q4)
            ok = daemon.summary.ok
            while daemon.summary.ok < ok + 20 and not run.done():
                await asyncio.sleep(0.05)
            link.set(bandwidth_bps=50e6)
            back = await until_candidate(daemon, run, F16)
            ok = daemon.summary.ok
            while daemon.summary.ok < ok + 20 and not run.done():
                await asyncio.sleep(0.05)
            daemon.request_stop()
            summary = await asyncio.wait_for(run, 120)
            return at_50, at_5, back, summary, daemon
        finally:
            if not run.done():
                run.cancel()
            await server.stop(0)

    at_50, at_5, back, summary, daemon = asyncio.run(body())
    assert (at_50, at_5, back) == (F16, Q4, F16)
    assert summary.fatal is None
    # every frame answered exactly once, each result named by its candidate
    n = summary.frames_sent
    assert summary.ok == n == summary.frames_captured and summary.unacknowledged == 0
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert sorted(x["frame_id"] for x in lines) == list(range(n))
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:08d}.png" for i in range(n)]
    by_frame = {x["frame_id"]: x["candidate"] for x in lines}
    for i in range(0, n, max(1, n // 50)):
        assert Image.open(out / f"{i:08d}.png").text["candidate"] == by_frame[i]
    doc = json.loads((out / "summary.json").read_text())
    assert doc["candidates"] == {
        F16: sum(v == F16 for v in by_frame.values()),
        Q4: sum(v == Q4 for v in by_frame.values()),
    }
    moves = [(s["from"], s["to"]) for s in doc["switches"]]
    down = moves.index((F16, Q4))
    assert (Q4, F16) in moves[down + 1 :]
    # a switch takes effect: the next frames (probes aside) are the new candidate's
    assert all(s["first_frame"] is not None for s in doc["switches"])


def test_probes_keep_to_their_share_of_the_link_and_a_switch_records_its_first_frame(
    adapt_repo, tmp_path
):
    """A big probe on a slow link waits (10% of the link's time); the frame after a switch
    is recorded as its first even when a probe was due by the interval alone."""
    import time

    from splitnet.device import AdaptiveDaemon, DaemonConfig
    from splitnet.device._adaptive import PROBE_SHARE

    plan = tmp_path / "plan.json"
    pf = _synthetic_plan(adapt_repo, plan)
    daemon = AdaptiveDaemon(DaemonConfig(plan=plan, servers=("127.0.0.1:1",), frames=1))
    frame = np.zeros((INPUT[1], INPUT[2], 3), np.uint8)
    assert daemon.current == F16
    daemon._encode(frame, 0)
    assert daemon._frame_candidate[0] == Q4  # never sampled: probed at once

    # 1.5 Mbit/s: the 10 kB q4 probe takes ~57 ms, so the next may go ~0.57 s later
    daemon._estimate = LinkEstimate(1.5e6, 0.0, 10)
    wait_s = 8 * pf.candidates[1].wire_bytes / 1.5e6 / PROBE_SHARE
    daemon._last_probe = time.perf_counter() - 0.3  # past the 0.25 s interval, not the share
    assert 0.3 < wait_s
    daemon._switches.append({"to": F16, "first_frame": None, "first_frame_clock": None})
    daemon._encode(frame, 1)
    assert daemon._frame_candidate[1] == F16
    assert daemon._switches[-1]["first_frame"] == 1
    daemon._last_probe = time.perf_counter() - wait_s - 0.01
    daemon._encode(frame, 2)
    assert daemon._frame_candidate[2] == Q4


def test_adaptive_daemon_runs_without_torch(adapt_repo, tmp_path):
    """The plan file and every head load, and a frame encodes, on a host without torch."""
    from _no_torch import run_without_torch

    plan = tmp_path / "plan.json"
    _synthetic_plan(adapt_repo, plan)
    code = """
import numpy as np
from splitnet.device import AdaptiveDaemon, DaemonConfig
d = AdaptiveDaemon(DaemonConfig(plan=sys.argv[1], servers=("127.0.0.1:1",), frames=1))
assert len(d._heads) == 2, d._heads
assert d._encode(np.zeros((32, 64, 3), np.uint8), 0)
"""
    res = run_without_torch(code, args=(str(plan),))
    assert res.returncode == 0, res.stderr
