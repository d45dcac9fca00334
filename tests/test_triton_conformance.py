"""Triton's gRPC extensions driven by the stock tritonclient: model config, statistics, the
model repository (index, load, unload, versions); reflection v1, health Watch at shutdown,
metric labels. (The REST protocol: test_triton_http.py.)"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil

import grpc
import pytest
from _serve_helpers import RESNET, UNET, make_payload, run_script, run_with_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from splitnet.server._model_repository import scan
from splitnet.server._repository import TailModel, load_repository
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import make_infer_request

pytestmark = pytest.mark.grpc


def test_scan_reads_both_layouts(versioned):
    entries = {(e.name, e.version): e for e in scan(versioned)}
    assert set(entries) == {(UNET, "3"), (RESNET, "1"), ("broken", "1")}
    assert entries[("broken", "1")].error and not entries[(UNET, "3")].error
    shutil.rmtree(versioned / "broken")
    shutil.copytree(versioned / UNET / "3", versioned / UNET / "1")
    loaded = load_repository(versioned, device="cpu")
    assert {n: m.version for n, m in loaded.items()} == {UNET: "3", RESNET: "1"}


# protobuf keeps one registry per process and tritonclient defines the same "inference"
# package: the stock client runs in a process of its own (as in test_server_grpc.py)
TRITON_CLIENT = """
import sys, numpy as np
import tritonclient.grpc as tc
port, unet, resnet = sys.argv[1], sys.argv[2], sys.argv[3]
unet_payload, resnet_payload = open(sys.argv[4], "rb").read(), open(sys.argv[5], "rb").read()
c = tc.InferenceServerClient(f"127.0.0.1:{port}")
def status(call):
    try:
        call()
    except tc.InferenceServerException as e:
        return str(e.status())
    return "OK"
def infer(model, payload, **kw):
    data = np.frombuffer(payload, dtype=np.uint8)
    inp = tc.InferInput("payload", [data.size], "UINT8")
    inp.set_data_from_numpy(data)
    return c.infer(model, [inp], **kw)

ext = c.get_server_metadata(as_json=True)["extensions"]
assert "dynamic_batching" not in ext and {"model_configuration", "statistics", "model_repository"} <= set(ext), ext

config = c.get_model_config(unet, as_json=True)["config"]
assert config["name"] == unet and config["platform"] == "splitnet_torch_export", config
assert config["input"] == [{"name": "payload", "data_type": "TYPE_UINT8", "dims": ["-1"]}], config
assert [(o["name"], o["data_type"]) for o in config["output"]] == [("mask", "TYPE_UINT8"), ("probabilities", "TYPE_FP32")], config
assert "StatusCode.NOT_FOUND" in status(lambda: c.get_model_config("nope")), "unknown model"

# versions: REPO/NAME/3/ serves version 3 only
assert c.is_model_ready(unet) and c.is_model_ready(unet, "3") and not c.is_model_ready(unet, "2")
assert c.get_model_metadata(unet, as_json=True)["versions"] == ["3"]
assert "StatusCode.NOT_FOUND" in status(lambda: c.get_model_metadata(unet, model_version="2"))
assert "StatusCode.NOT_FOUND" in status(lambda: c.get_model_config(unet, model_version="2"))

for _ in range(3):
    r = infer(unet, unet_payload)
assert r.get_response().model_version == "3"
# the version on an infer request: the served one answers, another is NOT_FOUND
assert "StatusCode.NOT_FOUND" in status(lambda: infer(unet, unet_payload, model_version="2"))
# an error names its request
try:
    infer(unet, b"not a payload", request_id="req-7")
    raise AssertionError("a bad payload was answered")
except tc.InferenceServerException as e:
    assert "StatusCode.INVALID_ARGUMENT" in str(e.status()) and "req-7" in e.message(), e
stats = c.get_inference_statistics(unet, as_json=True)["model_stats"]
assert len(stats) == 1 and stats[0]["name"] == unet and stats[0]["version"] == "3", stats
s = stats[0]
assert int(s["inference_count"]) == 3 and 1 <= int(s["execution_count"]) <= 3, s
assert int(s["inference_stats"]["success"]["count"]) == 3 and int(s["inference_stats"]["queue"]["count"]) == 3, s
assert int(s["inference_stats"]["compute_infer"]["ns"]) > 0, s
# perf_analyzer stops ("Server side statistics compute counts must be the same") unless the
# three compute durations have one count, in the totals and in each batch size's entry
for part in [s["inference_stats"], *s["batch_stats"]]:
    counts = {int(part.get(k, {}).get("count", 0)) for k in ("compute_input", "compute_infer", "compute_output")}
    assert len(counts) == 1 and counts != {0}, s
assert int(s["inference_stats"]["compute_input"]["ns"]) > 0, s  # the payload's decoding

index = {(m["name"], m.get("version")): m for m in c.get_model_repository_index(as_json=True)["models"]}
assert index[(unet, "3")]["state"] == "READY", index
assert index[(resnet, "1")]["state"] == "UNAVAILABLE" and index[("broken", "1")]["state"] == "UNAVAILABLE", index
assert not c.is_model_ready(resnet)

# load: a missing model is NOT_FOUND, a broken bundle INVALID_ARGUMENT, and the others keep serving
assert "StatusCode.NOT_FOUND" in status(lambda: c.load_model("nope"))
err = status(lambda: c.load_model("broken"))
assert "StatusCode.INVALID_ARGUMENT" in err, err
assert infer(unet, unet_payload).as_numpy("mask").shape == (32, 64)
c.load_model(resnet)
assert c.is_model_ready(resnet)
result = infer(resnet, resnet_payload, parameters={"top_k": 2})
assert result.as_numpy("classes").shape == (2,)
# class_count: Triton's classification extension, "score:index[:label]" as BYTES
r = infer(resnet, resnet_payload, outputs=[tc.InferRequestedOutput("probabilities", class_count=3)])
top = r.as_numpy("probabilities")
assert top.shape == (3,) and r.as_numpy("classes") is None, top
scores = [float(t.decode().split(":")[0]) for t in top]
assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1, top
assert [int(t.decode().split(":")[1]) for t in top] == list(infer(resnet, resnet_payload).as_numpy("classes")[:3])
assert "StatusCode.INVALID_ARGUMENT" in status(lambda: infer(unet, unet_payload, outputs=[tc.InferRequestedOutput("mask", class_count=2)]))
# heatmaps (issue 15): Grad-CAM as a UINT8 output; a segmentation tail's are its probability maps
heat = infer(resnet, resnet_payload, outputs=[tc.InferRequestedOutput("heatmap")], parameters={"heatmap_class": 1}).as_numpy("heatmap")
assert heat.shape == (1, 32, 32) and heat.dtype == np.uint8 and heat.max() in (0, 255), heat.max()
maps = infer(unet, unet_payload, outputs=[tc.InferRequestedOutput("heatmap")]).as_numpy("heatmap")
assert maps.dtype == np.uint8 and maps.shape[1:] == (32, 64), maps.shape
assert "StatusCode.INVALID_ARGUMENT" in status(lambda: infer(resnet, resnet_payload, outputs=[tc.InferRequestedOutput("heatmap")], parameters={"heatmap_layer": "nope"}))
ready = [m["name"] for m in c.get_model_repository_index(as_json=True)["models"] if m.get("state") == "READY"]
assert sorted(ready) == sorted([unet, resnet]), ready
c.unload_model(resnet)
assert not c.is_model_ready(resnet) and c.is_model_ready(unet)
assert "StatusCode.NOT_FOUND" in status(lambda: infer(resnet, resnet_payload))
assert "StatusCode.NOT_FOUND" in status(lambda: c.unload_model(resnet))
print("tritonclient ok")
"""


def test_tritonclient_config_statistics_repository(versioned, models, tmp_path):
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    (tmp_path / "unet.bin").write_bytes(make_payload(models, UNET))
    (tmp_path / "resnet.bin").write_bytes(make_payload(models, RESNET))
    unet = TailModel(versioned / UNET / "3")
    unet.version = "3"
    served = {UNET: unet}

    async def body(server, port):
        files = (str(tmp_path / "unet.bin"), str(tmp_path / "resnet.bin"))
        return await run_script(TRITON_CLIENT, str(port), UNET, RESNET, *files, timeout=300)

    code, out = run_with_server(versioned, served, body)
    assert code == 0 and "tritonclient ok" in out, out


def test_unload_lets_requests_in_flight_finish(versioned, models):
    payload = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            calls = [
                asyncio.ensure_future(stub.ModelInfer(make_infer_request(UNET, payload)))
                for _ in range(6)
            ]
            while server.metrics.payload_bytes.labels(UNET)._sum.get() == 0:
                await asyncio.sleep(0.001)  # the first request has been taken
            await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=UNET))
            results = await asyncio.gather(*calls, return_exceptions=True)
            ready = await stub.ModelReady(pb.ModelReadyRequest(name=UNET))
            return results, ready.ready

    results, ready = run_with_server(versioned, {UNET: models[UNET]}, body)
    taken = [r for r in results if isinstance(r, pb.ModelInferResponse)]
    refused = [r for r in results if not isinstance(r, pb.ModelInferResponse)]
    assert taken and not ready
    assert all(e.code() == grpc.StatusCode.NOT_FOUND for e in refused), refused


def test_reflection_v1_and_v1alpha(repository, models):
    async def body(server, port):
        names = {}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for version in ("v1", "v1alpha"):
                call = ch.stream_stream(
                    f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
                )
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                async for response in call(iter([request])):
                    names[version] = {s.name for s in response.list_services_response.service}
        return names

    names = run_with_server(repository, models, body)
    for version in ("v1", "v1alpha"):
        assert "inference.GRPCInferenceService" in names[version], names
        assert f"grpc.reflection.{version}.ServerReflection" in names[version], names


def test_unknown_model_names_are_not_metric_labels(repository, models):
    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            for name in ("made-up-1", "made-up-2"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.ModelInfer(make_infer_request(name, b"x"))
        return {
            s.labels["model"]
            for metric in server.metrics.requests.collect()
            for s in metric.samples
        }

    labels = run_with_server(repository, models, body)
    assert labels == {"_unknown"}, labels


def test_open_health_watch_ends_at_shutdown(repository, models):
    """An open Watch sees NOT_SERVING and its call ends cleanly, instead of being cut at
    the end of the grace period."""
    from _serve_helpers import server_config

    from splitnet.server import InferenceServer

    async def main():
        server = InferenceServer(server_config(repository), models=models)
        await server.start()
        statuses = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
            statuses.append((await call.read()).status)
            stop = asyncio.ensure_future(server.stop(3))
            while (response := await call.read()) is not grpc.aio.EOF:
                statuses.append(response.status)
            code = await call.code()
            await stop
        return statuses, code

    statuses, code = asyncio.run(main())
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert statuses == [serving, not_serving] and code == grpc.StatusCode.OK, (statuses, code)


def test_a_watch_whose_write_is_in_flight_at_shutdown_still_sees_not_serving():
    """Regression: ``close`` set "closing" before NOT_SERVING, so a watch that was writing
    SERVING when shutdown began ended its call without ever writing NOT_SERVING."""
    from splitnet.server._health import HealthServicer

    class _Context:
        def __init__(self):
            self.written, self.gate = [], asyncio.Event()

        async def write(self, response):
            self.written.append(response.status)
            if len(self.written) == 1:
                await self.gate.wait()  # the first write is still in flight when close begins

    async def main():
        health, context = HealthServicer(), _Context()
        watch = asyncio.ensure_future(
            health.Watch(health_pb2.HealthCheckRequest(service=""), context)
        )
        while not context.written:
            await asyncio.sleep(0)
        close = asyncio.ensure_future(health.close())
        for _ in range(10):
            await asyncio.sleep(0)
        context.gate.set()
        await asyncio.wait_for(asyncio.gather(watch, close), 5)
        return context.written

    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert asyncio.run(main()) == [serving, not_serving]


def test_metrics_port_answers_metrics_only(repository, models):
    import urllib.error
    import urllib.request

    async def body(server, port):
        def get(path):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{server.metrics_port}{path}", timeout=5
                ) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, ""

        return [await asyncio.to_thread(get, p) for p in ("/metrics", "/v2/health/ready", "/")]

    (ok, text), (probe, _), (root, _) = run_with_server(repository, models, body, metrics_port=0)
    assert ok == 200 and "splitnet_requests" in text
    assert probe == 404 and root == 404


def test_requested_outputs_only(repository, models):
    """A classifier asked for ``classes`` answers only ``classes``; asked for nothing, all
    of them."""
    from splitnet.wire import output_arrays

    payload = make_payload(models, RESNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            only = await stub.ModelInfer(make_infer_request(RESNET, payload, outputs=["classes"]))
            both = await stub.ModelInfer(make_infer_request(RESNET, payload))
            return output_arrays(only), output_arrays(both)

    only, both = run_with_server(repository, models, body)
    assert set(only) == {"classes"} and set(both) == {"classes", "probabilities", "uncertain"}


def test_timings_are_parameters_every_v2_client_reads(repository, models):
    """queue_ms / compute_ms are string parameters: KServe's proto has no double_param."""
    payload = make_payload(models, RESNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            return await stub.ModelInfer(make_infer_request(RESNET, payload))

    response = run_with_server(repository, models, body)
    for key in ("queue_ms", "compute_ms"):
        param = response.parameters[key]
        assert param.WhichOneof("parameter_choice") == "string_param", param
        assert float(param.string_param) >= 0


def test_class_count_version_and_the_answer_cache(models):
    """Without sockets: ``class_count`` answers "score:index:label" strings that agree
    with ``classes``; a frame re-sent asking for other outputs is run again, not answered
    from the cache; a version other than the served one is NOT_FOUND."""
    from splitnet.server import InferenceCore, InferError
    from splitnet.wire import output_arrays, set_parameter

    payload = make_payload(models, RESNET)
    frame = {"device_id": "cam", "frame_id": 1}

    def request(**kw):
        return make_infer_request(RESNET, payload, parameters=frame, **kw)

    async def main():
        core = InferenceCore({RESNET: models[RESNET]}, max_delay_ms=0)
        try:
            plain = output_arrays(await core.infer(request(outputs=["classes"])))
            asked = request(outputs=["probabilities"])
            set_parameter(asked.outputs[0].parameters, "classification", 3)
            top = output_arrays(await core.infer(asked))
            wrong = request()
            wrong.model_version = "2"
            with pytest.raises(InferError) as e:
                await core.infer(wrong)
            return plain, top, e.value.code
        finally:
            await core.close()

    plain, top, code = asyncio.run(main())
    assert set(plain) == {"classes"} and set(top) == {"probabilities"}
    labels = models[RESNET].manifest.output.class_names
    fields = [t.decode().split(":") for t in top["probabilities"]]
    assert [int(f[1]) for f in fields] == list(plain["classes"][:3])
    assert [f[2] for f in fields] == [labels[int(f[1])] for f in fields]
    assert code == grpc.StatusCode.NOT_FOUND
