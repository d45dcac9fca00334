"""The plan file carries the pipeline it was costed with; the adaptive daemon costs its
candidates again with it (and runs its heads with its head threads); an older plan file
without it still loads, as the default pipeline."""

from __future__ import annotations

import json

import pytest

from splitnet.plan import (
    Bounds,
    Link,
    Pipeline,
    PlanCandidate,
    PlanFile,
    read_plan_file,
    write_plan_file,
)

SPLIT = "encoder.block1.pool"
INPUT = (3, 32, 64)
F16, Q4 = f"{SPLIT} f16", f"{SPLIT} q4"
LINK = Link(50e6, 0.004)


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    from splitnet.export import export_bundle

    root = tmp_path_factory.mktemp("pipeline")
    for codec in ("f16", "q4"):
        export_bundle(
            "unet-vgg16",
            input_shape=INPUT,
            split=SPLIT,
            out_dir=root / codec,
            codec=codec,
            name=f"unet-vgg16.{SPLIT}.{codec}",
            model_args={"width": 0.125},
            parity_frames=1,
        )
    return root


def _plan(root, pipeline: Pipeline) -> PlanFile:
    """f16: 2 ms device, 2 ms server, 50 kB; q4: 9 ms device, 2 ms server, 1 kB. At
    50 Mbit/s, RTT 4 ms: with no window f16 is faster (its slowest stage 8 ms against
    9 ms); with a window of one frame a frame's whole latency counts, and q4's
    (15.2 ms) beats f16's (16 ms)."""
    cands = tuple(
        PlanCandidate(
            name=f"{SPLIT} {codec}",
            bundle=str(root / codec),
            served_name=f"unet-vgg16.{SPLIT}.{codec}",
            split=SPLIT,
            codec=codec,
            device_ms=device_ms,
            wire_bytes=wire,
            server_ms=2.0,
            drop_points=0.0,
        )
        for codec, device_ms, wire in (("f16", 2.0, 50_000.0), ("q4", 9.0, 1_000.0))
    )
    return PlanFile("unet-vgg16", INPUT, "fps", Bounds(), LINK, cands, pipeline)


def test_plan_file_round_trips_its_pipeline_and_scores_with_it(two_bundles, tmp_path):
    p = Pipeline(window=1, shared_cores=None, source_ms=0.0, server_delay_ms=0.0, head_threads=1)
    pf = _plan(two_bundles, p)
    path = tmp_path / "plan.json"
    write_plan_file(pf, path)
    doc = json.loads(path.read_text())
    assert doc["pipeline"] == p.to_dict()
    again = read_plan_file(path)
    assert again == pf and again.pipeline == p
    assert again.best(LINK.bandwidth_bps, LINK.rtt_s).name == Q4
    # the same candidates on the default pipeline: f16
    assert _plan(two_bundles, Pipeline()).best(LINK.bandwidth_bps, LINK.rtt_s).name == F16
    f16 = again.candidates[0]
    assert again.score(f16, LINK.bandwidth_bps, LINK.rtt_s) == pytest.approx(1000 / 16.0)


def test_an_old_plan_file_without_a_pipeline_loads_with_the_defaults(two_bundles, tmp_path):
    doc = _plan(two_bundles, Pipeline(window=1)).to_dict()
    del doc["pipeline"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    old = read_plan_file(path)
    assert old.pipeline == Pipeline()
    assert old.best(LINK.bandwidth_bps, LINK.rtt_s).name == F16
    # a partial pipeline: the missing settings take their defaults
    doc["pipeline"] = {"window": 1}
    path.write_text(json.dumps(doc))
    assert read_plan_file(path).pipeline == Pipeline(window=1)


def test_a_bad_pipeline_in_a_plan_file_is_a_one_line_error(two_bundles, tmp_path, capsys):
    from splitnet.cli import main

    doc = _plan(two_bundles, Pipeline()).to_dict()
    doc["pipeline"]["head_threads"] = 0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    assert main(["device", "--plan", str(path), "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "head threads must be a positive integer" in err, err


def test_adaptive_daemon_costs_with_the_plans_pipeline(two_bundles, tmp_path):
    from splitnet.device import AdaptiveDaemon, DaemonConfig, LinkEstimate

    path = tmp_path / "plan.json"
    write_plan_file(_plan(two_bundles, Pipeline(window=1, head_threads=1)), path)
    daemon = AdaptiveDaemon(DaemonConfig(plan=path, servers=("127.0.0.1:1",), window=1))
    assert daemon.current == Q4  # the plan's pipeline, not the default one (f16)
    est = LinkEstimate(LINK.bandwidth_bps, LINK.rtt_s, 10)
    assert daemon._score(Q4, est) > daemon._score(F16, est)
    # the heads run with the threads the plan's times were measured with
    for head in daemon._heads.values():
        assert int(head.runner.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert daemon.summary.head_threads == 1
    # the daemon's own --head-threads win; so does the window it runs
    wide = AdaptiveDaemon(
        DaemonConfig(plan=path, servers=("127.0.0.1:1",), window=8, head_threads=2)
    )
    assert wide.plan.pipeline.window == 8
    assert wide.current == F16  # a window of 8 does not bound either: f16 again
    assert int(wide.runner.compiled.get_property("INFERENCE_NUM_THREADS")) == 2


def test_plan_cli_records_its_pipeline_in_the_plan_file(two_bundles, tmp_path):
    from _plan_docs import profile_doc, profile_point, rate_doc, rate_row, write

    from splitnet.cli import main

    points = [profile_point(SPLIT, 4, elements=20_480, head_ms=4.0, tail_ms=4.0)]
    rows = [(SPLIT, 4, 20_480, [rate_row("f16", 41.0, 0.0, 0.0, 0.0)])]
    profile = write(tmp_path / "p.json", profile_doc(points, model="unet-vgg16", input_shape=INPUT))
    rate = write(
        tmp_path / "r.json",
        rate_doc(rows, [("png", 50.0, 0.0, 5.0, 2.0)], model="unet-vgg16", input_shape=INPUT),
    )
    out = tmp_path / "plan.json"
    argv = ["plan", "unet-vgg16", "--input", "3x32x64", "--bandwidth", "50Mbit/s"]
    argv += ["--profile", profile, "--rate-accuracy", rate, "--objective", "fps"]
    argv += ["--window", "4", "--shared-cores", "1", "--source-ms", "3", "--server-delay", "2ms"]
    argv += ["--head-threads", "1", "--emit-plan", str(out), "--bundles", str(two_bundles / "f16")]
    assert main(argv) == 0
    assert read_plan_file(out).pipeline == Pipeline(
        window=4, shared_cores=1.0, source_ms=3.0, server_delay_ms=2.0, head_threads=1
    )
