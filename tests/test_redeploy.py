"""Retrain -> redeploy (issue 14, seed 004): a new version of a bundle is picked up by the
server without a restart and without failing requests in flight, and the daemon moves to
the new head without losing a frame or having one answered by a mismatched tail."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import threading

import grpc
import pytest
from _serve_helpers import UNET, make_payload, run_with_server

from splitnet.bundle import publish_version
from splitnet.cli.main import main
from splitnet.device import DaemonConfig, DeviceDaemon
from splitnet.server._model_repository import parse_version_policy
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import make_infer_request

pytestmark = pytest.mark.grpc


@pytest.fixture
def v2_bundle(repository, tmp_path):
    """Version 2 of the session repository's U-Net: a copy (the tests tell the versions
    apart by the version that answers; ``experiments/redeploy_demo.py`` retrains)."""
    out = tmp_path / "v2"
    shutil.copytree(repository / "unet", out)
    return out


def _repo(repository, tmp_path, name="repo"):
    """REPO/UNET/1/ (a copy of the session repository's U-Net)."""
    root = tmp_path / name
    publish_version(repository / "unet", root / UNET, version=1)
    return root


async def _until(predicate, timeout_s=30.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _infer(stub, payload, version=""):
    return stub.ModelInfer(make_infer_request(UNET, payload, model_version=version))


def test_version_policy_parses_triton_policies_and_refuses_others():
    assert str(parse_version_policy("latest")) == "latest:1"
    assert str(parse_version_policy("latest:2")) == "latest:2"
    assert str(parse_version_policy("all")) == "all"
    assert parse_version_policy("specific:3,1").versions == (1, 3)
    for bad in ("latest:0", "newest", "specific:", "specific:0", "all:2", "latest:x"):
        with pytest.raises(Exception, match="version policy must be"):
            parse_version_policy(bad)


def test_serve_cli_refuses_a_bad_policy_or_interval(repository, capsys):
    for args, message in (
        (["--version-policy", "newest"], "version policy must be"),
        (["--poll-interval", "0"], "--poll-interval must be > 0"),
        (["--decode-threads", "0"], "--decode-threads must be >= 1"),
    ):
        assert main(["serve", "--repository", str(repository), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


class _HeldCodec:
    """A codec whose decoding waits for ``gate``: requests held between their model's
    lookup and the batcher."""

    def __init__(self, codec) -> None:
        self.codec, self.gate, self.started = codec, threading.Event(), 0

    def decode(self, *args, **kw):
        self.started += 1
        self.gate.wait(120)  # longer than _until's timeout: a missing request fails it
        return self.codec.decode(*args, **kw)


def _counting(batcher, runs: list) -> None:
    submit = batcher.submit

    async def counted(frame):
        runs.append(frame)
        return await submit(frame)

    batcher.submit = counted


def test_poll_serves_a_new_version_and_unloads_the_old_once_its_requests_are_answered(
    repository, models, v2_bundle, tmp_path
):
    """latest:1, polling: requests that v1 took (held while decoding) finish on v1's tail
    after v2 arrived; requests without a version go to v2 at once; a request naming v1
    is then NOT_FOUND; v1 is unloaded after its last answer."""
    root = _repo(repository, tmp_path)
    payload = make_payload(models, UNET)

    async def body(server, port):
        core = server.core
        v1 = core.models[UNET]
        v1.codec = held = _HeldCodec(v1.codec)
        try:
            return await steps(core, v1, held, port)
        finally:
            held.gate.set()  # on a failure too: the server's stop waits for the decoders

    async def steps(core, v1, held, port):
        v1_runs, v2_runs = [], []
        _counting(core._batcher_of[v1], v1_runs)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            taken = [asyncio.ensure_future(_infer(stub, payload, v)) for v in ("", "1", "")]
            await _until(lambda: held.started == 3)
            assert core._users.get(v1) == 3
            publish_version(v2_bundle, root / UNET)  # copied aside, then renamed
            await _until(lambda: core.models[UNET].version == "2")
            _counting(core._batcher_of[core.models[UNET]], v2_runs)
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=UNET))
            after = await _infer(stub, payload)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _infer(stub, payload, "1")
            still_loaded = v1 in core._batcher_of  # waiting for its three requests
            held.gate.set()
            answers = await asyncio.gather(*taken)
            await _until(lambda: v1 not in core._batcher_of)
            ready = await stub.ModelReady(pb.ModelReadyRequest(name=UNET, version="1"))
            runs = (len(v1_runs), len(v2_runs))
            return meta, after, refused.value, still_loaded, answers, ready.ready, runs

    meta, after, refused, still_loaded, answers, v1_ready, runs = run_with_server(
        # three decoding threads held by v1's requests, a fourth for the requests after
        root,
        None,
        body,
        poll_interval_s=0.05,
        decode_threads=4,
    )
    assert list(meta.versions) == ["2"] and after.model_version == "2"
    assert refused.code() == grpc.StatusCode.NOT_FOUND and "no version '1'" in refused.details()
    assert still_loaded and [a.model_version for a in answers] == ["1", "1", "1"]
    assert runs == (3, 1)  # each on the tail it was decoded for, not the newest one
    assert not v1_ready


def test_half_written_version_waits_and_a_broken_one_is_reported_while_v1_serves(
    repository, models, v2_bundle, tmp_path, caplog
):
    root = _repo(repository, tmp_path)
    payload = make_payload(models, UNET)
    half = root / UNET / "2"

    async def body(server, port):
        repo = server.service.repository
        loads = server.metrics.repository_loads
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            async def index():
                r = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
                return {(m.name, m.version): (m.state, m.reason) for m in r.models}

            # a copy in place, cut short: the manifest is there, the tail half written
            shutil.copytree(v2_bundle, half)
            tail = (half / "tail.pt2").read_bytes()
            (half / "tail.pt2").write_bytes(tail[: len(tail) // 2])
            await repo.poll()
            await repo.poll()  # unchanged: not tried (nor counted) again
            half_state = await index()
            half_answer = await _infer(stub, payload)
            (half / "tail.pt2").write_bytes(tail)  # the copy ends
            await repo.poll()
            done_answer = await _infer(stub, payload)
            # a version whose files verify but whose tail does not load
            broken = root / UNET / "3"
            shutil.copytree(v2_bundle, broken)
            (broken / "tail.pt2").write_bytes(b"not a torch.export program")
            doc = json.loads((broken / "manifest.json").read_text())
            import hashlib

            doc["files"]["tail.pt2"] = hashlib.sha256(b"not a torch.export program").hexdigest()
            (broken / "manifest.json").write_text(json.dumps(doc))
            await repo.poll()
            broken_state = await index()
            with pytest.raises(grpc.aio.AioRpcError) as load:
                await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=UNET))
            broken_answer = await _infer(stub, payload)
            counts = {
                s.labels["outcome"]: s.value
                for m in loads.collect()
                for s in m.samples
                if s.name.endswith("_total")
            }
            return (
                half_state,
                half_answer,
                done_answer,
                broken_state,
                load.value,
                broken_answer,
                counts,
            )

    with caplog.at_level(logging.ERROR, logger="splitnet.server"):
        half_state, half_answer, done_answer, broken_state, load, broken_answer, counts = (
            run_with_server(root, None, body)
        )
    state, reason = half_state[(UNET, "2")]
    assert state == "UNAVAILABLE" and "incomplete or corrupt" in reason, half_state
    assert half_state[(UNET, "1")][0] == "READY" and half_answer.model_version == "1"
    assert done_answer.model_version == "2"
    state, reason = broken_state[(UNET, "3")]
    assert state == "UNAVAILABLE" and "does not load" in reason, broken_state
    assert broken_state[(UNET, "2")][0] == "READY" and broken_answer.model_version == "2"
    assert load.code() == grpc.StatusCode.INVALID_ARGUMENT and "version 3" in load.details()
    # the half copy once, the broken version at its poll and at the explicit load
    assert counts == {"incomplete": 1.0, "ok": 1.0, "broken": 2.0}, counts
    assert any(
        "cannot load" in r.getMessage() and "version 3" in r.getMessage() for r in caplog.records
    )


def test_daemon_moves_to_v2_on_sighup_and_every_frame_is_answered_once_by_its_version(
    repository, v2_bundle, tmp_path
):
    """Publish v2 to the server (polling, latest:2) while a stream runs, then to the
    device's folder, then SIGHUP: frames before the move are answered by v1, after it by
    v2, each exactly once, none failed."""
    from PIL import Image

    server_repo = _repo(repository, tmp_path, "server")
    device_dir = tmp_path / "device" / UNET
    publish_version(repository / "unet", device_dir, version=1)
    out = tmp_path / "out"
    n = 40

    async def body(server, port):
        daemon = DeviceDaemon(
            DaemonConfig(
                bundle=device_dir,
                servers=(f"127.0.0.1:{port}",),
                frames=n,
                fps=12,  # a paced source drops a frame when the window is full: it never is
                window=n,
                out=out,
            )
        )
        run = asyncio.ensure_future(daemon.run())
        await _until(lambda: daemon.summary.ok >= 8)
        publish_version(v2_bundle, server_repo / UNET)
        await _until(lambda: server.core.models[UNET].version == "2")
        v1_still = "1" in server.core.versions[UNET]
        publish_version(v2_bundle, device_dir)
        os.kill(os.getpid(), signal.SIGHUP)  # the daemon's own handler
        await _until(lambda: daemon.summary.reloads)
        summary = await asyncio.wait_for(run, 60)
        return summary, v1_still

    summary, v1_still = run_with_server(
        server_repo, None, body, poll_interval_s=0.05, version_policy="latest:2"
    )
    assert v1_still
    assert summary.ok == n and summary.failed == 0 and summary.unacknowledged == 0, summary
    assert summary.version == "2" and set(summary.versions) == {"1", "2"}
    (move,) = summary.reloads
    assert move["from"] == "1" and move["to"] == "2" and move["error"] is None
    first = move["first_frame"]
    assert 8 <= first < n
    tags = {int(p.stem): Image.open(p).text["version"] for p in sorted(out.glob("*.png"))}
    assert sorted(tags) == list(range(n))  # every frame once
    assert all(v == ("1" if f < first else "2") for f, v in tags.items()), tags
    assert summary.versions == {"1": first, "2": n - first}
    doc = json.loads((out / "summary.json").read_text())
    assert doc["reloads"][0]["to"] == "2" and doc["versions"] == summary.versions


def test_daemon_refuses_an_incomplete_or_foreign_version_and_spools_its_version(
    repository, tmp_path
):
    """A half-copied version is not moved to; a version of other frames is refused and
    reported; a request (spooled before it is sent) names the version of its head."""
    device_dir = tmp_path / UNET
    publish_version(repository / "unet", device_dir, version=1)
    daemon = DeviceDaemon(
        DaemonConfig(bundle=device_dir, servers=("127.0.0.1:9",), out=tmp_path / "out")
    )
    assert daemon.head.version == "1"
    frame = next(iter(daemon.source))
    request = pb.ModelInferRequest.FromString(daemon._encode(frame, 0))
    assert (request.model_name, request.model_version) == (UNET, "1")

    half = device_dir / "2"
    shutil.copytree(repository / "unet", half)
    (half / "head.bin").write_bytes(b"")  # the copy under way
    assert asyncio.run(daemon.reload()) is None and daemon.head.version == "1"

    shutil.rmtree(half)
    other = tmp_path / "other"
    shutil.copytree(repository / "unet", other)
    doc = json.loads((other / "manifest.json").read_text())
    doc["input"]["shape"], doc["input"]["frame_shape"] = [3, 32, 32], [32, 32, 3]  # other frames
    (other / "manifest.json").write_text(json.dumps(doc))
    publish_version(other, device_dir, version=2)
    record = asyncio.run(daemon.reload())
    assert record["to"] == "2" and "takes frames of" in record["error"]
    assert daemon.head.version == "1" and daemon.summary.reloads == [record]

    # a killed run's spooled v1 frame, resumed by a daemon now on another version, keeps v1
    daemon.spool.put(7, daemon._encode(frame, 7))
    resumed = DeviceDaemon(
        DaemonConfig(bundle=device_dir / "1", servers=("127.0.0.1:9",), out=tmp_path / "out")
    )
    assert [f for f, _ in resumed._resume] == [7]
    spooled = pb.ModelInferRequest.FromString(resumed._resume[0][1])
    assert spooled.model_version == "1"


def test_publish_cli_numbers_versions_and_refuses_to_overwrite(repository, tmp_path, capsys):
    model_dir = tmp_path / "repo" / UNET
    assert main(["publish", str(repository / "unet"), str(model_dir)]) == 0
    assert main(["publish", str(repository / "unet"), str(model_dir)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(model_dir / "1"), str(model_dir / "2")]
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]  # no temporary left
    assert main(["publish", str(repository / "unet"), str(model_dir), "--version", "2"]) == 2
    assert "versions are immutable" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(repository / "unet", broken)
    (broken / "head.bin").write_bytes(b"")
    assert main(["publish", str(broken), str(model_dir)]) == 2
    assert "checksum mismatch for head.bin" in capsys.readouterr().err
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]
