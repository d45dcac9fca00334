"""The planner's two baselines as candidates of a plan: the image bundle (no head, the
frame sent as PNG) and the device-only bundle (answered on the device, nothing sent).
The adaptive daemon moves to and from them as the emulated link steps 50 -> 5 -> 50
Mbit/s; every frame is answered once and its result names its candidate."""

from __future__ import annotations

import asyncio
import json

import pytest
from _serve_helpers import server_config, until_candidate

from splitnet.plan import Bounds, Link, PlanCandidate, PlanFile, write_plan_file

SPLIT = "encoder.block1.pool"
INPUT = (3, 32, 64)
ARGS = {"width": 0.125}
F16, Q4, IMAGE, LOCAL = f"{SPLIT} f16", f"{SPLIT} q4", "image png", "device-only"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """REPO/{f16,q4,png} (what the server serves) and DEV (the device-only bundle)."""
    from splitnet.export import export_bundle, export_whole

    root = tmp_path_factory.mktemp("baselines")
    for codec in ("f16", "q4"):
        export_bundle(
            "unet-vgg16",
            input_shape=INPUT,
            split=SPLIT,
            out_dir=root / "repo" / codec,
            codec=codec,
            name=f"unet-vgg16.{SPLIT}.{codec}",
            model_args=ARGS,
            parity_frames=1,
        )
    kw = {"input_shape": INPUT, "model_args": ARGS, "parity_frames": 1}
    export_whole("unet-vgg16", out_dir=root / "repo" / "png", mode="image", **kw)
    export_whole("unet-vgg16", out_dir=root / "dev", mode="device-only", **kw)
    return root


def _candidate(root, folder, name, kind, device_ms, wire_bytes, server_ms):
    from splitnet.bundle import read_manifest

    m = read_manifest(root / folder, verify=False)
    return PlanCandidate(
        name=name,
        bundle=str(root / folder),
        served_name=m.name,
        split=str(m.split["name"]),
        codec=str(m.codec["name"]),
        device_ms=device_ms,
        wire_bytes=wire_bytes,
        server_ms=server_ms,
        drop_points=0.0,
        kind=kind,
    )


def _plan(root, path):
    """Objective FPS. At 50 Mbit/s the image is best (its slowest stage: 3.2 ms on the
    link, 312 FPS), at 5 Mbit/s the device-only baseline (15 ms, 67 FPS; the image's
    32 ms on the link, q4's 20 ms head, f16's 66 ms on the link). f16 and q4 are there
    for the probes: the link is read from two sizes of frames sent."""
    cands = (
        _candidate(root, "repo/f16", F16, "split", 4.0, 41_000.0, 4.0),
        _candidate(root, "repo/q4", Q4, "split", 20.0, 10_500.0, 4.0),
        _candidate(root, "repo/png", IMAGE, "image", 1.0, 20_000.0, 3.0),
        _candidate(root, "dev", LOCAL, "device", 15.0, 0.0, 0.0),
    )
    pf = PlanFile("unet-vgg16", INPUT, "fps", Bounds(), Link(50e6, 0.004), cands)
    write_plan_file(pf, path)
    return pf


def test_plan_file_matches_image_and_device_only_bundles(bundles, tmp_path):
    from _plan_docs import profile_doc, profile_point, rate_doc, rate_row, write

    from splitnet.plan import make_plan, plan_file_from_plan, read_plan_file

    points = [profile_point(SPLIT, 4, elements=20_480, head_ms=4.0, tail_ms=4.0)]
    rows = [(SPLIT, 4, 20_480, [rate_row("f16", 41.0, 0.0, 0.0, 0.0)])]
    doc = profile_doc(points, model="unet-vgg16", input_shape=INPUT)
    profile = write(tmp_path / "p.json", doc)
    rate = write(
        tmp_path / "r.json",
        rate_doc(rows, [("png", 20.0, 0.0, 1.0, 1.0)], model="unet-vgg16", input_shape=INPUT),
    )
    plan = make_plan(profile, rate, bandwidth_bps=5e6, objective="fps")
    pf = plan_file_from_plan(
        plan, [bundles / "repo" / "f16", bundles / "repo" / "png", bundles / "dev"]
    )
    assert [(c.name, c.kind) for c in pf.candidates] == [
        (F16, "split"),
        (IMAGE, "image"),
        (LOCAL, "device"),
    ]
    local = pf.candidates[2]
    assert local.wire_bytes == 0 and local.server_ms == 0 and not local.sends
    image = pf.candidates[1]
    assert image.device_ms == pytest.approx(1.0) and image.wire_bytes > 20_000
    # the device-only candidate's FPS does not depend on the link
    assert pf.score(local, 1e5) == pytest.approx(pf.score(local, 1e9))
    path = tmp_path / "plan.json"
    write_plan_file(pf, path)
    assert read_plan_file(path) == pf


def test_a_plan_of_device_only_candidates_alone_is_refused(bundles, tmp_path):
    from splitnet._errors import ConfigError
    from splitnet.device import AdaptiveDaemon, DaemonConfig

    pf = _plan(bundles, tmp_path / "all.json")
    only = PlanFile(pf.model, pf.input, pf.objective, pf.bounds, pf.link, pf.candidates[3:])
    write_plan_file(only, tmp_path / "local.json")
    with pytest.raises(ConfigError, match="device-only"):
        AdaptiveDaemon(DaemonConfig(plan=tmp_path / "local.json", servers=("127.0.0.1:1",)))


@pytest.mark.grpc
def test_daemon_moves_from_the_image_to_device_only_and_back(bundles, tmp_path):
    from PIL import Image

    from splitnet.device import AdaptiveDaemon, DaemonConfig, LinkEmulator
    from splitnet.server import InferenceServer, load_repository

    plan = tmp_path / "plan.json"
    _plan(bundles, plan)
    models = load_repository(bundles / "repo", device="cpu")
    out = tmp_path / "out"

    async def frames_later(daemon, run, n):
        done = daemon.summary.ok + n
        while daemon.summary.ok < done and not run.done():
            await asyncio.sleep(0.05)

    async def body():
        server = InferenceServer(server_config(bundles / "repo"), models=models)
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
            first = daemon.current
            await frames_later(daemon, run, 30)
            link.set(bandwidth_bps=5e6)
            at_5 = await until_candidate(daemon, run, LOCAL)
            await frames_later(daemon, run, 30)
            link.set(bandwidth_bps=50e6)
            back = await until_candidate(daemon, run, IMAGE)
            await frames_later(daemon, run, 20)
            daemon.request_stop()
            summary = await asyncio.wait_for(run, 60)
            return first, at_5, back, summary
        finally:
            if not run.done():
                run.cancel()
            await server.stop(0)

    first, at_5, back, summary = asyncio.run(body())
    assert (first, at_5, back) == (IMAGE, LOCAL, IMAGE)
    assert summary.fatal is None and summary.failed == 0, summary.errors
    # every frame answered exactly once (sent or computed here), each named by its candidate
    n = summary.frames_captured
    assert summary.ok == n and summary.unacknowledged == 0
    lines = [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]
    assert sorted(x["frame_id"] for x in lines) == list(range(n))
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:08d}.png" for i in range(n)]
    by_frame = {x["frame_id"]: x["candidate"] for x in lines}
    for i in range(n):
        assert Image.open(out / f"{i:08d}.png").text["candidate"] == by_frame[i]
    local = [x for x in lines if x["candidate"] == LOCAL]
    assert local and all(x["bytes"] == 0 for x in local)  # nothing sent for them
    assert summary.frames_sent == n - len(local)
    doc = json.loads((out / "summary.json").read_text())
    assert doc["candidates"][LOCAL] == len(local)
    assert doc["candidates"][IMAGE] == sum(v == IMAGE for v in by_frame.values())
    moves = [(s["from"], s["to"]) for s in doc["switches"]]
    down = moves.index((IMAGE, LOCAL))
    assert (LOCAL, IMAGE) in moves[down + 1 :]
    assert all(s["first_frame"] is not None for s in doc["switches"])
    # the masks computed here and the server's are of one size: the model's output
    shapes = {Image.open(out / f"{i:08d}.png").size for i in range(n)}
    assert shapes == {(INPUT[2], INPUT[1])}
