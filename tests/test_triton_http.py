"""KServe v2 over REST (``splitnet serve --http-port``): the request and response
translation without sockets, then every endpoint through the stock tritonclient.http
and the KServe SDK's REST client, and bad input answered 4xx while the server keeps
serving."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import httpx
import numpy as np
import pytest
from _serve_helpers import RESNET, UNET, make_payload, run_script, run_with_server
from hypothesis import given
from hypothesis import strategies as st

from splitnet.server._http import (
    HEADER_LENGTH,
    HttpError,
    OutputPlan,
    message_json,
    parse_infer_request,
    write_infer_response,
)
from splitnet.server._repository import TailModel
from splitnet.wire import deserialize_bytes, get_parameter, serialize_bytes
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import triton_model_config_pb2 as mc

pytestmark = pytest.mark.grpc


def _binary_request(payload: bytes, **doc) -> tuple[bytes, int]:
    inputs = [
        {
            "name": "payload",
            "datatype": "UINT8",
            "shape": [len(payload)],
            "parameters": {"binary_data_size": len(payload)},
        }
    ]
    header = json.dumps({"inputs": inputs, **doc}).encode()
    return header + payload, len(header)


# -- without sockets ------------------------------------------------------------------------------


def test_message_json_writes_64_bit_integers_as_numbers():
    config = mc.ModelConfig(name="m", max_batch_size=0)
    config.input.add(name="payload", data_type=mc.TYPE_UINT8, dims=[-1])
    config.dynamic_batching.max_queue_delay_microseconds = 5000
    doc = message_json(config)
    assert doc["input"] == [{"name": "payload", "data_type": "TYPE_UINT8", "dims": [-1]}]
    assert doc["max_batch_size"] == 0  # a default, written
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    stats = pb.ModelStatisticsResponse()
    s = stats.model_stats.add(name="m", version="1", inference_count=3)
    s.inference_stats.success.ns = 2**40
    s.batch_stats.add(batch_size=2).compute_infer.count = 1
    doc = message_json(stats)["model_stats"][0]
    assert doc["inference_count"] == 3 and doc["inference_stats"]["success"]["ns"] == 2**40
    assert doc["batch_stats"][0]["batch_size"] == 2


def test_binary_and_json_inputs_give_the_same_request():
    payload = bytes(range(256)) * 3
    body, length = _binary_request(payload, id="a", parameters={"top_k": 2, "device_id": "cam"})
    binary, plan = parse_infer_request(body, length, "m", "3")
    doc = {
        "id": "a",
        "parameters": {"top_k": 2, "device_id": "cam"},
        "inputs": [
            {
                "name": "payload",
                "datatype": "UINT8",
                "shape": [len(payload)],
                "data": [list(payload)],
            }
        ],
    }
    as_json, _ = parse_infer_request(json.dumps(doc).encode(), None, "m", "3")
    assert binary == as_json
    assert binary.raw_input_contents == [payload] and binary.model_version == "3"
    assert get_parameter(binary.parameters, "top_k") == 2
    assert not plan.default_binary and not plan.binary


def test_outputs_binary_flags_and_classification():
    body, length = _binary_request(
        b"xy",
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "probabilities", "parameters": {"classification": 3, "binary_data": False}},
            {"name": "classes"},
        ],
    )
    request, plan = parse_infer_request(body, length, "m")
    assert [o.name for o in request.outputs] == ["probabilities", "classes"]
    assert get_parameter(request.outputs[0].parameters, "classification") == 3
    assert "binary_data_output" not in request.parameters  # the adapter's, not the core's
    assert not plan.is_binary("probabilities") and plan.is_binary("classes")


def test_write_response_binary_and_json():
    response = pb.ModelInferResponse(model_name="m", model_version="1", id="r")
    response.parameters["queue_ms"].string_param = "0.5"
    mask = np.arange(6, dtype=np.uint8).reshape(2, 3)
    response.outputs.add(name="mask", datatype="UINT8", shape=[2, 3])
    response.raw_output_contents.append(mask.tobytes())
    response.outputs.add(name="probabilities", datatype="BYTES", shape=[2])
    response.raw_output_contents.append(serialize_bytes([b"0.5:1:a", b"0.25:0:b"]))

    body, length = write_infer_response(response, OutputPlan(binary={"mask": True}))
    doc = json.loads(body[:length])
    assert doc["id"] == "r" and doc["parameters"] == {"queue_ms": "0.5"}
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 6}
    assert body[length:] == mask.tobytes()
    assert doc["outputs"][1]["data"] == ["0.5:1:a", "0.25:0:b"]

    body, length = write_infer_response(response, OutputPlan())
    assert length is None and json.loads(body)["outputs"][0]["data"] == list(range(6))


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "a JSON object"),
        (b'{"inputs": []}', None, "non-empty list of inputs"),
        (b'{"id": 7, "inputs": [{}]}', None, "request id must be a string"),
        (
            b'{"inputs": [{"name": "payload", "datatype": "FLOAT", "shape": [1], "data": [1]}]}',
            None,
            "unknown datatype 'FLOAT'",
        ),
        (
            b'{"inputs": [{"name": "payload", "datatype": "UINT8", "shape": [2], "data": ["a", "b"]}]}',
            None,
            "must be integers",
        ),
        (
            b'{"inputs": [{"name": "payload", "datatype": "UINT8", "shape": [1], "data": [256]}]}',
            None,
            "out of bounds",
        ),
        (
            b'{"inputs": [{"name": "payload", "datatype": "UINT8", "shape": [3], "data": [1, 2]}]}',
            None,
            "2 elements of data for its shape (3)",
        ),
        (
            b'{"inputs": [{"name": "payload", "datatype": "UINT8", "shape": [-1], "data": [1]}]}',
            None,
            "non-negative integers",
        ),
        (b'{"inputs": [{"name": "payload", "datatype": "UINT8", "shape": [1]}]}', None, "neither"),
        (b"{}", 99, "but the request body has 2 bytes"),
    ],
)
def test_malformed_requests_are_400_with_what_is_wrong(body, length, message):
    with pytest.raises(HttpError) as e:
        parse_infer_request(body, length, "m")
    assert e.value.status == 400 and message in e.value.message, e.value.message


@pytest.mark.parametrize(
    ("sizes", "extra", "message"),
    [
        ([5], b"", "run past"),  # says 5, sends 4
        ([3], b"", "3 bytes of binary data for 4 UINT8 elements"),
        ([4], b"x", "add up to 4 bytes, but 5 follow"),
        ([4, 1], b"", "run past"),
        ([2, 2], b"", "2 bytes of binary data for 4 UINT8 elements"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_400(sizes, extra, message):
    inputs = [
        {"name": f"in{i}", "datatype": "UINT8", "shape": [4], "parameters": {"binary_data_size": n}}
        for i, n in enumerate(sizes)
    ]
    header = json.dumps({"inputs": inputs}).encode()
    with pytest.raises(HttpError) as e:
        parse_infer_request(header + b"abcd" + extra, len(header), "m")
    assert message in e.value.message, e.value.message


@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(-5, 250)))
def test_any_body_parses_or_is_a_400(body, length):
    try:
        parse_infer_request(body, length, "m")
    except HttpError as e:
        assert e.status == 400


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["inputs", "name", "datatype", "shape", "data", "parameters", "id"]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_parses_or_is_a_400(doc):
    try:
        parse_infer_request(json.dumps(doc).encode(), None, "m")
    except HttpError as e:
        assert e.status == 400


def test_bytes_tensors_round_trip():
    items = [b"", b"a", b"0.5:3:label", bytes(range(256))]
    assert deserialize_bytes(serialize_bytes(items)) == items
    for bad in (b"\x05\x00\x00\x00abc", b"\x01\x00"):
        with pytest.raises(ValueError):
            deserialize_bytes(bad)


# -- through sockets --------------------------------------------------------------------------------


def _tritonclient_http(port: int, unet_payload: bytes, resnet_payload: bytes) -> str:
    """Every REST endpoint through the stock tritonclient.http (runs in a thread: its
    gevent client blocks)."""
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    c = th.InferenceServerClient(f"127.0.0.1:{port}")

    def status(call) -> str:
        try:
            call()
        except InferenceServerException as e:
            return str(e.status())
        return "200"

    def infer(model, payload, binary=True, **kw):
        data = np.frombuffer(payload, dtype=np.uint8)
        inp = th.InferInput("payload", [data.size], "UINT8")
        inp.set_data_from_numpy(data, binary_data=binary)
        return c.infer(model, [inp], **kw)

    assert c.is_server_live() and c.is_server_ready()
    ext = c.get_server_metadata()["extensions"]
    assert {"model_configuration", "statistics", "model_repository", "classification"} <= set(ext)

    config = c.get_model_config(UNET)
    assert config["name"] == UNET and config["max_batch_size"] == 0, config
    assert config["input"] == [{"name": "payload", "data_type": "TYPE_UINT8", "dims": [-1]}]
    assert status(lambda: c.get_model_config("nope")) == "404"

    # versions: REPO/NAME/3/ serves version 3 only
    assert c.is_model_ready(UNET) and c.is_model_ready(UNET, "3")
    assert not c.is_model_ready(UNET, "2") and not c.is_model_ready("nope")
    meta = c.get_model_metadata(UNET)
    assert meta["versions"] == ["3"] and meta["inputs"][0]["shape"] == [-1], meta
    assert status(lambda: c.get_model_metadata(UNET, model_version="2")) == "404"

    # infer: binary and JSON input, binary and JSON output, the same mask
    r = infer(UNET, unet_payload, request_id="r1")
    mask = r.as_numpy("mask")
    assert mask.shape == (32, 64) and r.get_response()["id"] == "r1"
    assert r.get_response()["model_version"] == "3"
    as_json = infer(
        UNET,
        unet_payload,
        binary=False,
        outputs=[th.InferRequestedOutput("mask", binary_data=False)],
    )
    assert np.array_equal(as_json.as_numpy("mask"), mask)
    assert "data" in as_json.get_output("mask")
    assert infer(UNET, unet_payload, model_version="3").as_numpy("mask").shape == (32, 64)
    assert status(lambda: infer(UNET, unet_payload, model_version="2")) == "404"
    try:
        infer(UNET, b"not a payload", request_id="req-9")
        raise AssertionError("a bad payload was answered")
    except InferenceServerException as e:
        assert e.status() == "400" and "req-9" in e.message(), e

    stats = c.get_inference_statistics(UNET)["model_stats"]
    assert stats[0]["version"] == "3" and stats[0]["inference_count"] == 3, stats
    assert stats[0]["inference_stats"]["compute_infer"]["ns"] > 0, stats
    assert [s["name"] for s in c.get_inference_statistics()["model_stats"]] == [UNET]

    # the repository: index, load (a missing model 404, a broken bundle 400), unload
    index = {(m["name"], m["version"]): m["state"] for m in c.get_model_repository_index()}
    assert index == {
        (UNET, "3"): "READY",
        (RESNET, "1"): "UNAVAILABLE",
        ("broken", "1"): "UNAVAILABLE",
    }
    assert status(lambda: c.load_model("nope")) == "404"
    assert status(lambda: c.load_model("broken")) == "400"
    c.load_model(RESNET)
    assert c.is_model_ready(RESNET)

    # class_count: Triton's classification extension
    out = [th.InferRequestedOutput("probabilities", class_count=3)]
    top = infer(RESNET, resnet_payload, outputs=out).as_numpy("probabilities")
    classes = infer(RESNET, resnet_payload, parameters={"top_k": 3}).as_numpy("classes")
    assert [int(t.decode().split(":")[1]) for t in top] == list(classes), (top, classes)
    out = [th.InferRequestedOutput("probabilities", binary_data=False, class_count=2)]
    r = infer(RESNET, resnet_payload, outputs=out)
    assert (
        r.get_output("probabilities")["datatype"] == "BYTES"
        and len(r.as_numpy("probabilities")) == 2
    )

    # heatmaps (issue 15): Grad-CAM as a UINT8 output, its class as a request parameter
    out = [th.InferRequestedOutput("heatmap"), th.InferRequestedOutput("classes")]
    r = infer(RESNET, resnet_payload, outputs=out, parameters={"heatmap_class": 2})
    heat = r.as_numpy("heatmap")
    assert heat.shape == (1, 32, 32) and heat.dtype == np.uint8 and heat.max() in (0, 255), (
        heat.shape
    )
    bad = {"heatmap_layer": "nope"}
    assert status(lambda: infer(RESNET, resnet_payload, outputs=out, parameters=bad)) == "400"

    c.unload_model(RESNET)
    assert not c.is_model_ready(RESNET) and c.is_model_ready(UNET)
    assert status(lambda: infer(RESNET, resnet_payload)) == "404"
    assert status(lambda: c.unload_model(RESNET)) == "404"
    c.close()
    return "tritonclient.http ok"


def test_tritonclient_http_drives_every_endpoint(versioned, models):
    if importlib.util.find_spec("tritonclient.http") is None:
        pytest.skip("tritonclient[http] is not installed")
    unet = TailModel(versioned / UNET / "3")
    unet.version = "3"
    payloads = make_payload(models, UNET), make_payload(models, RESNET)

    async def body(server, port):
        return await asyncio.to_thread(_tritonclient_http, server.http_port, *payloads)

    assert run_with_server(versioned, {UNET: unet}, body, http_port=0) == "tritonclient.http ok"


def test_bad_rest_input_is_4xx_and_the_server_keeps_serving(repository, models):
    payload = make_payload(models, UNET)
    good, length = _binary_request(payload)
    infer = f"/v2/models/{UNET}/infer"

    async def body(server, port):
        answers = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as c:

            async def post(key, path, content, headers=None):
                r = await c.post(path, content=content, headers=headers or {})
                answers[key] = r.status_code, r.json()

            binary = {HEADER_LENGTH: str(length)}
            await post("malformed", infer, b'{"inputs": [')
            wrong = {"name": "payload", "datatype": "INT32", "shape": [2], "data": [1, 2]}
            await post("datatype", infer, json.dumps({"inputs": [wrong]}).encode())
            await post("short", infer, good[:-1], binary)
            await post("long", infer, good + b"x", binary)
            await post("header", infer, good, {HEADER_LENGTH: "12a"})
            await post("past", infer, good, {HEADER_LENGTH: str(len(good) + 1)})
            await post("model", "/v2/models/nope/infer", good, binary)
            await post("version", f"/v2/models/{UNET}/versions/9/infer", good, binary)
            await post(
                "payload",
                infer,
                json.dumps(
                    {
                        "id": "x1",
                        "inputs": [
                            {
                                "name": "payload",
                                "datatype": "UINT8",
                                "shape": [3],
                                "data": [1, 2, 3],
                            }
                        ],
                    }
                ).encode(),
            )
            await post("encoding", infer, good, binary | {"content-encoding": "br"})
            r = await c.get(infer)
            answers["method"] = r.status_code, r.json()
            r = await c.get("/v2/nothing/here")
            answers["path"] = r.status_code, r.json()
            r = await c.post(infer, content=good, headers=binary)
            return answers, r.status_code, r.json()

    answers, ok, doc = run_with_server(repository, models, body, http_port=0)
    expected = {
        "malformed": 400,
        "datatype": 400,
        "short": 400,
        "long": 400,
        "header": 400,
        "past": 400,
        "model": 404,
        "version": 404,
        "payload": 400,
        "encoding": 400,
        "method": 405,
        "path": 404,
    }
    assert {k: v[0] for k, v in answers.items()} == expected, answers
    assert all(isinstance(v[1]["error"], str) and v[1]["error"] for v in answers.values())
    assert "must be UINT8" in answers["datatype"][1]["error"]
    assert answers["payload"][1]["id"] == "x1" and "x1" in answers["payload"][1]["error"]
    assert "no version '9'" in answers["version"][1]["error"]
    assert ok == 200 and doc["outputs"][0]["name"] == "mask"  # and it still serves


def test_rest_limits_auth_and_compression(repository, models, tmp_path):
    import gzip

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    payload = make_payload(models, UNET)
    good, length = _binary_request(payload, parameters={"binary_data_output": True})
    infer = f"/v2/models/{UNET}/infer"

    async def body(server, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as c:
            auth = {"authorization": "Bearer s3cret"}
            binary = {HEADER_LENGTH: str(length)}
            codes = {
                "no token": (await c.post(infer, content=good, headers=binary)).status_code,
                "bad token": (
                    await c.post(
                        infer, content=good, headers=binary | {"authorization": "Bearer x"}
                    )
                ).status_code,
                "probe": (await c.get("/v2/health/ready")).status_code,
                "model probe": (await c.get(f"/v2/models/{UNET}/ready")).status_code,
                "metadata": (await c.get("/v2")).status_code,
            }
            r = await c.post(
                infer,
                content=gzip.compress(good),
                headers=binary | auth | {"content-encoding": "gzip"},
            )
            codes["gzip"] = r.status_code
            huge = b" " * (server.core.max_request_bytes * 8)
            codes["huge"] = (await c.post(infer, content=huge, headers=auth)).status_code
            bomb = gzip.compress(huge)
            r = await c.post(infer, content=bomb, headers=auth | {"content-encoding": "gzip"})
            codes["bomb"] = r.status_code
            codes["after"] = (await c.post(infer, content=good, headers=binary | auth)).status_code
            return codes, r.json()["error"]

    codes, bomb = run_with_server(repository, models, body, http_port=0, token_file=token)
    assert codes == {
        "no token": 401,
        "bad token": 401,
        "probe": 200,
        "model probe": 200,
        "metadata": 401,
        "gzip": 200,
        "huge": 413,
        "bomb": 413,
        "after": 200,
    }, codes
    assert "decompressed" in bomb


def test_readiness_follows_the_server_state(repository, models):
    """While stopping, the REST probes say not ready (400), as gRPC's health says NOT_SERVING."""

    async def body(server, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as c:
            before = (await c.get("/v2/health/ready")).status_code
            server.service.ready = False
            after = (await c.get("/v2/health/ready")).status_code
            model = (await c.get(f"/v2/models/{UNET}/ready")).status_code
            live = (await c.get("/v2/health/live")).status_code
            server.service.ready = True
            return before, after, model, live

    assert run_with_server(repository, models, body, http_port=0) == (200, 400, 400, 200)


# the KServe SDK registers protobuf files of the names ours use: its own process
KSERVE_CLIENT = """
import asyncio, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
port, model, payload = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read()
base = f"http://127.0.0.1:{port}"

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    assert await client.is_server_live(base) and await client.is_server_ready(base)
    assert await client.is_model_ready(base, model) and not await client.is_model_ready(base, "nope")
    for binary in (True, False):
        data = np.frombuffer(payload, dtype=np.uint8)
        inp = InferInput("payload", [data.size], "UINT8")
        inp.set_data_from_numpy(data, binary_data=binary)
        request = InferRequest(model_name=model, infer_inputs=[inp], request_id="k1")
        response = await client.infer(base, request, model_name=model)
        assert response.id == "k1", response
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        assert outputs["mask"].shape == (32, 64), outputs
    await client.close()
    print("kserve ok")

asyncio.run(main())
"""


def test_kserve_rest_client(repository, models, tmp_path):
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("the KServe SDK is not installed")
    (tmp_path / "unet.bin").write_bytes(make_payload(models, UNET))

    async def body(server, port):
        return await run_script(
            KSERVE_CLIENT, str(server.http_port), UNET, str(tmp_path / "unet.bin")
        )

    code, out = run_with_server(repository, models, body, http_port=0)
    assert code == 0 and "kserve ok" in out, out


def test_stop_lets_rest_requests_in_flight_finish(repository, models):
    from _serve_helpers import server_config

    from splitnet.server import InferenceServer

    good, length = _binary_request(make_payload(models, UNET))

    async def main():
        server = InferenceServer(server_config(repository, http_port=0), models=models)
        await server.start()
        url = f"http://127.0.0.1:{server.http_port}/v2/models/{UNET}/infer"
        async with httpx.AsyncClient() as c:
            calls = [
                asyncio.ensure_future(
                    c.post(url, content=good, headers={HEADER_LENGTH: str(length)})
                )
                for _ in range(4)
            ]
            while server.metrics.payload_bytes.labels(UNET)._sum.get() == 0:
                await asyncio.sleep(0.001)  # the first request has been taken
            await server.stop(10)
            answers = await asyncio.gather(*calls, return_exceptions=True)
            return [getattr(r, "status_code", r) for r in answers]

    codes = asyncio.run(main())
    # those taken are answered; one not yet connected when the socket closed may be refused
    assert 200 in codes and all(c == 200 or isinstance(c, httpx.HTTPError) for c in codes), codes


def test_rest_connections_turn_nagle_off(repository, models):
    """The listening socket is made with IPPROTO_TCP, so that asyncio sets TCP_NODELAY on
    its connections (with Nagle on, an answer on a kept-alive connection waited for the
    client's delayed ACK, ~40 ms; benchmarks/bench_rest.py measures it)."""
    import socket

    async def body(server, port):
        return server._http._socket.proto

    assert run_with_server(repository, models, body, http_port=0) == socket.IPPROTO_TCP


def test_rest_request_past_the_budget_is_429(repository, models):
    """The budget of bytes in flight covers REST too: past it, 429 with the core's message."""
    good, length = _binary_request(make_payload(models, UNET))

    async def body(server, port):
        url = f"http://127.0.0.1:{server.http_port}/v2/models/{UNET}/infer"
        async with httpx.AsyncClient() as c:
            r = await c.post(url, content=good, headers={HEADER_LENGTH: str(length)})
            return r.status_code, r.json()["error"]

    code, error = run_with_server(repository, models, body, http_port=0, max_inflight_bytes=1)
    assert code == 429 and "server busy" in error, error
