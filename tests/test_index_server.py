"""Representative search attached to classification answers over gRPC (serve --index,
device --attach-hash)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from _serve_helpers import RESNET, UNET, make_payload, rpc_status, run_with_server

from splitnet.device import DaemonConfig, DeviceDaemon
from splitnet.device._daemon import frame_hash_parameters
from splitnet.index import RepresentativeIndex, build_index
from splitnet.server._representatives import candidate_classes
from splitnet.wire import get_parameter, make_infer_request
from splitnet.wire import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.grpc


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    """Three random references of each of resnet's 10 (unnamed) classes, but class_9."""
    rng = np.random.default_rng(0)
    refs = [
        (f"class_{c}/{i}", f"class_{c}", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        for c in range(9)
        for i in range(3)
    ]
    out = tmp_path_factory.mktemp("rep") / "index"
    build_index(refs, size=(32, 32), hash_methods=["phash", "dhash"]).save(out)
    return out


def test_candidate_classes_is_the_argsort_of_probabilities():
    got = candidate_classes(np.array([4, 7, 1]), np.array([0.2, 0.5, 0.3]), 2)
    assert got == [(7, 0.5), (1, 0.3)]


def test_answers_carry_the_nearest_reference_of_each_top_k_class(repository, models, index_dir):
    idx = RepresentativeIndex.load(index_dir)
    image = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    params = frame_hash_parameters(image, "dhash")
    payload = make_payload(models, RESNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = make_infer_request(RESNET, payload, parameters={**params, "top_k": 10})
            ok = await stub.ModelInfer(req)
            statuses = {}
            bad = {
                "hex": {"index_hash": "zz", "index_method": "dhash"},
                "length": {"index_hash": "00ff", "index_method": "dhash"},
                "method": {**params, "index_method": "whash"},
            }
            for what, p in bad.items():
                r = make_infer_request(RESNET, payload, parameters=p)
                statuses[what] = await rpc_status(lambda r=r: stub.ModelInfer(r))()
            seg = make_infer_request(UNET, make_payload(models, UNET), parameters=params)
            statuses["segmentation"] = await rpc_status(lambda: stub.ModelInfer(seg))()
            again = await stub.ModelInfer(make_infer_request(RESNET, payload))  # still serving
            return ok, statuses, again

    ok, statuses, again = run_with_server(repository, models, body, index=str(index_dir))
    assert set(statuses.values()) == {grpc.StatusCode.INVALID_ARGUMENT}, statuses
    assert "representatives" not in again.parameters
    doc = json.loads(get_parameter(ok.parameters, "representatives"))
    assert len(doc) == 10
    assert [e["probability"] for e in doc] == sorted((e["probability"] for e in doc), reverse=True)
    scores = idx.hash_scores("dhash", np.frombuffer(bytes.fromhex(params["index_hash"]), np.uint8))
    for e in doc:
        assert e["label"] == f"class_{e['class']}"
        if e["class"] == 9:  # no references of this class
            assert e["representatives"] == []
            continue
        (rep,) = e["representatives"]
        assert rep["label"] == e["label"]
        mine = [i for i, lab in enumerate(idx.label_index) if lab == idx.labels.index(e["label"])]
        best = min(mine, key=lambda i: (scores[i], i))
        assert rep["id"] == idx.ids[best] and rep["score"] == scores[best]


def test_a_frame_re_sent_with_a_hash_is_not_answered_from_the_cache_without_one(
    repository, models, index_dir
):
    """The answer cache (device_id/frame_id) keys on the hash too: a re-sent frame that
    now asks for representatives gets them."""
    image = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    frame = {"device_id": "cam", "frame_id": 7}
    payload = make_payload(models, RESNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            plain = make_infer_request(RESNET, payload, parameters=frame)
            hashed = make_infer_request(
                RESNET, payload, parameters={**frame, **frame_hash_parameters(image, "dhash")}
            )
            return await stub.ModelInfer(plain), await stub.ModelInfer(hashed)

    first, again = run_with_server(repository, models, body, index=str(index_dir))
    assert "representatives" not in first.parameters
    assert json.loads(get_parameter(again.parameters, "representatives"))


def test_hash_without_an_index_is_invalid_argument(repository, models):
    params = frame_hash_parameters(np.zeros((32, 32, 3), np.uint8), "phash")

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            r = make_infer_request(RESNET, make_payload(models, RESNET), parameters=params)
            return await rpc_status(lambda: stub.ModelInfer(r))()

    assert run_with_server(repository, models, body) == grpc.StatusCode.INVALID_ARGUMENT


def test_device_attach_hash_writes_representatives(repository, models, index_dir, tmp_path):
    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "resnet",
            servers=(f"127.0.0.1:{port}",),
            frames=3,
            out=tmp_path,
            attach_hash="phash",
        )
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repository, models, body, index=str(index_dir))
    assert (summary.ok, summary.failed) == (3, 0), summary.errors
    for f in sorted(tmp_path.glob("0*.json")):
        doc = json.loads(f.read_text())
        reps = doc["representatives"]
        assert [e["class"] for e in reps] == doc["classes"]
        assert all(len(e["representatives"]) == (0 if e["class"] == 9 else 1) for e in reps)


def test_serve_and_device_cli_reject_bad_index_options(tmp_path, capsys):
    from splitnet.cli import main

    assert (
        main(["device", "--bundle", str(tmp_path), "--server", "x:1", "--attach-hash", "sift"]) == 2
    )
    err = capsys.readouterr().err
    assert "phash" in err and len(err.strip().splitlines()) == 1


def test_serve_with_a_missing_index_is_a_one_line_error(repository, models, tmp_path):
    from _serve_helpers import server_config

    from splitnet.index import IndexError_
    from splitnet.server import InferenceServer

    with pytest.raises(IndexError_, match="no index.json"):
        InferenceServer(server_config(repository, index=str(tmp_path)), models=models)


def test_representatives_over_rest(repository, models, index_dir):
    import httpx

    params = frame_hash_parameters(np.zeros((32, 32, 3), np.uint8), "phash")
    payload = make_payload(models, RESNET)

    def doc(p):
        return {
            "parameters": {**p, "top_k": 2},
            "inputs": [
                {
                    "name": "payload",
                    "datatype": "UINT8",
                    "shape": [len(payload)],
                    "data": list(payload),
                }
            ],
        }

    async def body(server, port):
        url = f"http://127.0.0.1:{server.http_port}/v2/models/{RESNET}/infer"
        async with httpx.AsyncClient() as c:
            ok = await c.post(url, json=doc(params))
            bad = await c.post(url, json=doc({**params, "index_hash": "0"}))
        return ok, bad

    ok, bad = run_with_server(repository, models, body, index=str(index_dir), http_port=0)
    assert ok.status_code == 200, ok.text
    reps = json.loads(ok.json()["parameters"]["representatives"])
    assert len(reps) == 2 and all(len(e["representatives"]) <= 1 for e in reps)
    assert bad.status_code == 400 and "hex" in bad.json()["error"]
