"""The server over gRPC on loopback: tritonclient, results, statuses, auth, TLS, metrics."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from _serve_helpers import (
    RESNET,
    UNET,
    make_payload,
    rpc_status,
    run_script,
    run_with_server,
    server_config,
)

from splitnet import codec
from splitnet.server import InferenceServer
from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import make_infer_request, output_arrays

pytestmark = pytest.mark.grpc


# tritonclient's generated code defines the same protobuf package ("inference") as ours, and
# protobuf keeps one global registry per process: a stock client runs in a process of its own,
# as it would in real use.
TRITON_CLIENT = """
import sys, numpy as np
import tritonclient.grpc as tc
port, unet, resnet = sys.argv[1], sys.argv[2], sys.argv[3]
unet_payload, resnet_payload = open(sys.argv[4], "rb").read(), open(sys.argv[5], "rb").read()
c = tc.InferenceServerClient(f"127.0.0.1:{port}")
assert c.is_server_live() and c.is_server_ready()
assert c.is_model_ready(unet) and not c.is_model_ready("nope")
assert c.get_server_metadata(as_json=True)["name"] == "splitnet"
meta = c.get_model_metadata(unet, as_json=True)
assert meta["inputs"] == [{"name": "payload", "datatype": "UINT8", "shape": ["-1"]}], meta
assert [o["name"] for o in meta["outputs"]] == ["mask", "probabilities"], meta
def infer(model, payload, **kw):
    data = np.frombuffer(payload, dtype=np.uint8)
    inp = tc.InferInput("payload", [data.size], "UINT8")
    inp.set_data_from_numpy(data)
    return c.infer(model, [inp], **kw)
mask = infer(unet, unet_payload, outputs=[tc.InferRequestedOutput("mask")]).as_numpy("mask")
assert mask.shape == (32, 64) and mask.dtype == np.uint8 and mask.max() <= 4, (mask.shape, mask.dtype)
result = infer(resnet, resnet_payload, parameters={"top_k": 3})
classes, probs = result.as_numpy("classes"), result.as_numpy("probabilities")
assert classes.shape == (3,) and np.all(np.diff(probs) <= 0) and 0 < probs.sum() <= 1.0001, (classes, probs)
try:
    c.get_model_metadata("nope")
except tc.InferenceServerException as e:
    assert "StatusCode.NOT_FOUND" in str(e.status()), e.status()
else:
    raise AssertionError("unknown model accepted")
print("tritonclient ok")
"""


def test_tritonclient_health_metadata_and_infer(repository, models, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    (tmp_path / "unet.bin").write_bytes(make_payload(models, UNET))
    (tmp_path / "resnet.bin").write_bytes(make_payload(models, RESNET))

    async def body(server, port):
        files = (str(tmp_path / "unet.bin"), str(tmp_path / "resnet.bin"))
        return await run_script(TRITON_CLIENT, str(port), UNET, RESNET, *files, timeout=120)

    code, out = run_with_server(repository, models, body)
    assert code == 0 and "tritonclient ok" in out, out


def test_server_result_matches_the_tail(repository, models):
    """The mask the server returns is the argmax of the tail on the decoded tensors."""
    import torch

    m = models[UNET]
    payload = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = make_infer_request(UNET, payload, outputs=["mask", "probabilities"])
            return output_arrays(await stub.ModelInfer(req))

    out = run_with_server(repository, models, body)
    with torch.no_grad():
        logits = m.module(*[torch.from_numpy(t) for t in codec.decode(payload)])
    probs = logits.sigmoid()[0].numpy()
    np.testing.assert_allclose(out["probabilities"], probs, rtol=1e-5, atol=1e-6)
    best = probs.argmax(0)
    expected = np.where(probs.max(0) >= 0.5, best + 1, 0).astype(np.uint8)
    np.testing.assert_array_equal(out["mask"], expected)


def test_health_and_reflection(repository, models):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            r = await health.Check(
                health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
            )
            assert r.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            call = refl.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            resp = await call.read()
            await call.done_writing()
            names = {s.name for s in resp.list_services_response.service}
            assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names

    run_with_server(repository, models, body)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unknown_model", grpc.StatusCode.NOT_FOUND),
        ("garbage_payload", grpc.StatusCode.INVALID_ARGUMENT),
        ("wrong_tensors", grpc.StatusCode.INVALID_ARGUMENT),
        ("too_many_elements", grpc.StatusCode.INVALID_ARGUMENT),
        ("wrong_input_name", grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown_output", grpc.StatusCode.INVALID_ARGUMENT),
        ("oversize", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(
    repository, models, case, code
):
    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 << 20)]
        ) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            if case == "unknown_model":
                req = make_infer_request("no-such-model", good)
            elif case == "garbage_payload":
                req = make_infer_request(UNET, b"\x00garbage" * 10)
            elif case == "wrong_tensors":
                req = make_infer_request(
                    UNET, codec.get_codec("q4").encode([np.ones((1, 3, 8, 8), np.float32)])
                )
            elif case == "too_many_elements":  # more than the bundle's tensors hold
                big = np.zeros((1, 64, 64, 256), np.float32)
                req = make_infer_request(UNET, codec.get_codec("q4").encode([big]))
            elif case == "wrong_input_name":
                req = make_infer_request(UNET, good)
                req.inputs[0].name = "x"
            elif case == "unknown_output":
                req = make_infer_request(UNET, good, outputs=["logits"])
            else:
                req = make_infer_request(UNET, b"\x00" * (2 << 20))
            got = await rpc_status(lambda: stub.ModelInfer(req))()
            assert got == code
            ok = await stub.ModelInfer(make_infer_request(UNET, good))  # still serving
            assert output_arrays(ok)["mask"].shape == (32, 64)

    run_with_server(repository, models, body, max_message_mb=1)


def test_stream_answers_a_bad_frame_with_an_error_and_goes_on(repository, models):
    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer()
            await call.write(
                make_infer_request(UNET, b"junk", parameters={"device_id": "d", "frame_id": 0})
            )
            await call.write(
                make_infer_request(UNET, good, parameters={"device_id": "d", "frame_id": 1})
            )
            await call.done_writing()
            return [r async for r in call]

    responses = run_with_server(repository, models, body)
    by_frame = {r.infer_response.parameters["frame_id"].int64_param: r for r in responses}
    assert by_frame[0].error_message.startswith("INVALID_ARGUMENT:")
    assert not by_frame[1].error_message and output_arrays(by_frame[1].infer_response)[
        "mask"
    ].shape == (32, 64)


def test_duplicate_frames_run_once(repository, models):
    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = make_infer_request(UNET, good, parameters={"device_id": "dev", "frame_id": 7})
            a, b = await asyncio.gather(stub.ModelInfer(req), stub.ModelInfer(req))
            c = await stub.ModelInfer(req)
            assert a.raw_output_contents == b.raw_output_contents == c.raw_output_contents
            samples = {
                s.labels["status"]: s.value
                for metric in server.metrics.requests.collect()
                for s in metric.samples
                if s.name.endswith("_total")
            }
            assert samples == {"ok": 1.0, "duplicate": 2.0}
            batches = server.metrics.batch_size.labels(UNET)._sum.get()
            assert batches == 1.0  # one frame ran, once

    run_with_server(repository, models, body)


def test_token_auth(repository, models, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = make_infer_request(UNET, good)
            assert (
                await rpc_status(lambda: stub.ModelInfer(req))() == grpc.StatusCode.UNAUTHENTICATED
            )
            bad = (("authorization", "Bearer wrong"),)
            assert (
                await rpc_status(lambda: stub.ModelInfer(req, metadata=bad))()
                == grpc.StatusCode.UNAUTHENTICATED
            )
            call = stub.ModelStreamInfer(metadata=bad)
            await call.write(req)
            assert await rpc_status(lambda: call.read())() == grpc.StatusCode.UNAUTHENTICATED
            ok = await stub.ModelInfer(req, metadata=(("authorization", "Bearer s3cret"),))
            assert ok.model_name == UNET

    run_with_server(repository, models, body, token_file=token)


def _make_certs(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, via openssl."""

    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    )
    for name, san in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "subjectAltName=DNS:client"),
    ):
        ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        (d / f"{name}.ext").write_text(san + "\n")
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
        )
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_and_client_certificates(repository, models, tmp_path):
    certs = _make_certs(tmp_path)
    good = make_payload(models, UNET)
    ca = certs["ca_pem"].read_bytes()

    async def body(server, port):
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=certs["client_key"].read_bytes(),
            certificate_chain=certs["client_pem"].read_bytes(),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            ok = await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
                make_infer_request(UNET, good)
            )
            assert ok.model_name == UNET
        # no client certificate: the handshake fails
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=ca)
        ) as ch:
            code = await rpc_status(
                lambda: pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
                    make_infer_request(UNET, good), timeout=5
                )
            )()
            assert code == grpc.StatusCode.UNAVAILABLE
        # REST: the same certificates
        import ssl

        import httpx

        url = f"https://127.0.0.1:{server.http_port}/v2/health/ready"
        context = ssl.create_default_context(cadata=ca.decode())
        context.load_cert_chain(certs["client_pem"], certs["client_key"])
        async with httpx.AsyncClient(verify=context) as c:
            assert (await c.get(url)).status_code == 200
        async with httpx.AsyncClient(verify=ssl.create_default_context(cadata=ca.decode())) as c:
            with pytest.raises(httpx.HTTPError):  # no client certificate
                await c.get(url)

    run_with_server(
        repository,
        models,
        body,
        http_port=0,
        tls_cert=certs["server_pem"],
        tls_key=certs["server_key"],
        tls_ca=certs["ca_pem"],
    )


def test_metrics_endpoint(repository, models):
    import urllib.request

    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(make_infer_request(UNET, good))
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        return await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )

    text = run_with_server(repository, models, body, metrics_port=0)
    assert f'splitnet_requests_total{{model="{UNET}",status="ok"}} 1.0' in text
    for name in (
        "splitnet_queue_seconds",
        "splitnet_compute_seconds",
        "splitnet_batch_size",
        "splitnet_payload_bytes",
    ):
        assert f"{name}_count" in text


def test_graceful_stop_drains_calls_in_flight(repository, models):
    good = make_payload(models, UNET)

    async def main():
        server = InferenceServer(server_config(repository), models=models)
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            calls = [
                asyncio.ensure_future(stub.ModelInfer(make_infer_request(UNET, good)))
                for _ in range(4)
            ]
            await asyncio.sleep(0.05)  # the calls are in flight
            await server.stop(10)
            return await asyncio.gather(*calls)

    responses = asyncio.run(main())
    assert all(output_arrays(r)["mask"].shape == (32, 64) for r in responses)
