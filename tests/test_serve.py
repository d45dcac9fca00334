"""Server and device daemon on loopback: KServe v2 with tritonclient, restarts, bad input, auth, TLS."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from splitnet import codec
from splitnet.device import DaemonConfig, DeviceDaemon
from splitnet.server import InferenceServer, ServerConfig, load_repository
from splitnet.server._batcher import DynamicBatcher
from splitnet.wire import (
    inference_pb2 as pb,
)
from splitnet.wire import (
    inference_pb2_grpc as pb_grpc,
)
from splitnet.wire import (
    make_infer_request,
    output_arrays,
)

pytestmark = pytest.mark.grpc


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """A repository with a small U-Net bundle (q4) and a classifier bundle (f16)."""
    from splitnet.export import export_bundle

    root = tmp_path_factory.mktemp("repo")
    export_bundle(
        "unet-vgg16",
        input_shape=(3, 32, 64),
        split="encoder.block3.pool",
        out_dir=root / "unet",
        codec="q4",
        model_args={"width": 0.125},
        parity_frames=1,
    )
    export_bundle(
        "resnet18",
        input_shape=(3, 32, 32),
        split="layer2.0.add",
        out_dir=root / "resnet",
        codec="f16",
        num_classes=10,
        parity_frames=1,
    )
    return root


@pytest.fixture(scope="module")
def models(repository):
    return load_repository(repository, device="cpu")


UNET = "unet-vgg16.encoder.block3.pool"
RESNET = "resnet18.layer2.0.add"


def _config(repository, **kw) -> ServerConfig:
    return ServerConfig(
        repository=repository,
        port=kw.pop("port", 0),
        metrics_port=kw.pop("metrics_port", None),
        **kw,
    )


def _payload(models, name: str, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    m = models[name]
    tensors = [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in m.manifest.crossing]
    return m.manifest.make_codec().encode(tensors)


def run_with_server(repository, models, body, **config):
    """Starts a server, runs ``await body(server, port)``, stops the server."""

    async def main():
        server = InferenceServer(_config(repository, **config), models=models)
        await server.start()
        try:
            return await body(server, server.port)
        finally:
            await server.stop(0)

    return asyncio.run(main())


# -- the server --------------------------------------------------------------------------------


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
    import sys

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    (tmp_path / "unet.bin").write_bytes(_payload(models, UNET))
    (tmp_path / "resnet.bin").write_bytes(_payload(models, RESNET))

    async def body(server, port):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            TRITON_CLIENT,
            str(port),
            UNET,
            RESNET,
            str(tmp_path / "unet.bin"),
            str(tmp_path / "resnet.bin"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out.decode()

    code, out = run_with_server(repository, models, body)
    assert code == 0 and "tritonclient ok" in out, out


def test_server_result_matches_the_tail(repository, models):
    """The mask the server returns is the argmax of the tail on the decoded tensors."""
    import torch

    m = models[UNET]
    payload = _payload(models, UNET)

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


def _status(coro_factory):
    async def run():
        try:
            await coro_factory()
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    return run


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
    good = _payload(models, UNET)

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
            got = await _status(lambda: stub.ModelInfer(req))()
            assert got == code
            ok = await stub.ModelInfer(make_infer_request(UNET, good))  # still serving
            assert output_arrays(ok)["mask"].shape == (32, 64)

    run_with_server(repository, models, body, max_message_mb=1)


def test_stream_answers_a_bad_frame_with_an_error_and_goes_on(repository, models):
    good = _payload(models, UNET)

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
    good = _payload(models, UNET)

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
    good = _payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = make_infer_request(UNET, good)
            assert await _status(lambda: stub.ModelInfer(req))() == grpc.StatusCode.UNAUTHENTICATED
            bad = (("authorization", "Bearer wrong"),)
            assert (
                await _status(lambda: stub.ModelInfer(req, metadata=bad))()
                == grpc.StatusCode.UNAUTHENTICATED
            )
            call = stub.ModelStreamInfer(metadata=bad)
            await call.write(req)
            assert await _status(lambda: call.read())() == grpc.StatusCode.UNAUTHENTICATED
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
    good = _payload(models, UNET)
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
            code = await _status(
                lambda: pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(
                    make_infer_request(UNET, good), timeout=5
                )
            )()
            assert code == grpc.StatusCode.UNAVAILABLE

    run_with_server(
        repository,
        models,
        body,
        tls_cert=certs["server_pem"],
        tls_key=certs["server_key"],
        tls_ca=certs["ca_pem"],
    )


def test_metrics_endpoint(repository, models):
    import urllib.request

    good = _payload(models, UNET)

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


# -- the device daemon -------------------------------------------------------------------------


def test_device_daemon_streams_every_frame(repository, models, tmp_path):
    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=12,
            out=tmp_path,
            window=4,
        )
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repository, models, body)
    assert (summary.frames_sent, summary.ok, summary.failed, summary.unacknowledged) == (
        12,
        12,
        0,
        0,
    )
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:08d}.png" for i in range(12)]
    assert (tmp_path / "summary.json").is_file()
    assert summary.wire_mbps > 0 and summary.latency_p95_ms >= summary.latency_mean_ms * 0.5


def test_device_daemon_runs_without_torch(repository, models, tmp_path):
    """The daemon as it runs on a device host: its own process, torch not importable."""
    from _no_torch import run_without_torch

    code = """
from splitnet.cli import main
rc = main(["device", "--bundle", sys.argv[1], "--server", sys.argv[2], "--frames", "5", "--out", sys.argv[3]])
assert rc == 0, rc
"""

    async def body(server, port):
        args = (str(repository / "unet"), f"127.0.0.1:{port}", str(tmp_path))
        return await asyncio.to_thread(run_without_torch, code, args=args)

    res = run_with_server(repository, models, body)
    assert res.returncode == 0, res.stderr
    assert "5 frames sent, 5 ok" in res.stdout
    assert len(list(tmp_path.glob("*.png"))) == 5


def test_server_restart_mid_stream_loses_no_frame(repository, models, tmp_path):
    """Stop the server after a few answers, start a new one on the same port: every frame's
    result reaches the output exactly once."""
    from PIL import Image

    n = 24

    async def main():
        first = InferenceServer(_config(repository), models=models)
        await first.start()
        port = first.port
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=n,
            out=tmp_path,
            window=6,
        )
        daemon = DeviceDaemon(cfg)
        run = asyncio.create_task(daemon.run())
        while daemon.summary.ok < 5:
            await asyncio.sleep(0.01)
        await first.stop(0)  # a crash, as far as the device can tell
        await asyncio.sleep(0.5)
        second = InferenceServer(_config(repository, port=port), models=models)
        await second.start()
        try:
            return await asyncio.wait_for(run, 120)
        finally:
            await second.stop(0)

    summary = asyncio.run(main())
    assert summary.ok == n and summary.failed == 0 and summary.unacknowledged == 0
    assert summary.reconnects >= 1 and summary.resent >= 1
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == [f"{i:08d}.png" for i in range(n)]
    assert all(Image.open(tmp_path / f).size == (64, 32) for f in files)


def test_device_refuses_a_wrong_token(repository, models, tmp_path):
    token = tmp_path / "token"
    token.write_text("right")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong")

    async def body(server, port):
        cfg = DaemonConfig(
            bundle=repository / "unet",
            servers=(f"127.0.0.1:{port}",),
            frames=3,
            token_file=wrong,
            out=tmp_path / "o",
        )
        return await DeviceDaemon(cfg).run()

    summary = run_with_server(repository, models, body, token_file=token)
    assert summary.ok == 0 and summary.unacknowledged >= 1
    assert "UNAUTHENTICATED" in summary.fatal


# -- pieces ------------------------------------------------------------------------------------


def test_batcher_groups_requests_and_isolates_failures():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        return [ValueError("bad") if i < 0 else i * 10 for i in items]

    async def main():
        b = DynamicBatcher(run_batch, max_batch=4, max_delay_s=0.05)
        results = await asyncio.gather(
            *(b.submit(i) for i in [1, 2, -3, 4, 5]), return_exceptions=True
        )
        await b.stop()
        return results

    results = asyncio.run(main())
    assert [len(c) for c in calls] == [4, 1]
    assert results[0][0] == 10 and results[0][1].batch_size == 4
    assert isinstance(results[2], ValueError) and results[4][0] == 50


def test_generated_code_is_fresh(tmp_path):
    import importlib.util

    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("generate", root / "proto" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path in gen.generate(tmp_path):
        committed = root / "splitnet" / "wire" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make proto`"


TRITON_FIELDS = """
import json
from tritonclient.grpc import service_pb2 as s
msgs = {}
def walk(d, prefix=""):
    msgs[prefix + d.name] = {f.name: [f.number, f.type, f.is_repeated] for f in d.fields}
    for n in d.nested_types:
        walk(n, prefix + d.name + ".")
for d in s.DESCRIPTOR.message_types_by_name.values():
    walk(d)
svc = s.DESCRIPTOR.services_by_name["GRPCInferenceService"]
methods = {m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming] for m in svc.methods}
print(json.dumps({"messages": msgs, "methods": methods}))
"""


def test_wire_is_compatible_with_tritonclient():
    """Every message, field and method of ours has tritonclient's number, type and shape."""
    import importlib.util
    import json
    import sys

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    theirs = json.loads(
        subprocess.run(
            [sys.executable, "-c", TRITON_FIELDS], check=True, capture_output=True, text=True
        ).stdout
    )

    def walk(d, prefix=""):
        yield prefix + d.name, d
        for n in d.nested_types:
            yield from walk(n, prefix + d.name + ".")

    for top in pb.DESCRIPTOR.message_types_by_name.values():
        for name, d in walk(top):
            for f in d.fields:
                assert theirs["messages"][name][f.name] == [f.number, f.type, f.is_repeated], (
                    f"{name}.{f.name}"
                )
    svc = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for m in svc.methods:
        ours = [
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        ]
        assert theirs["methods"][m.name] == ours, m.name


# -- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve"], "missing option(s): --repository"),
        (["serve", "--repository", "/no/such/dir"], "model repository not found"),
        (["serve", "--repository", ".", "--max-batch", "0"], "--max-batch must be >= 1"),
        (["device", "--server", "127.0.0.1:1"], "missing option(s): --bundle"),
        (
            ["device", "--bundle", "/no/such/bundle", "--server", "127.0.0.1:1"],
            "bundle folder not found",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, message):
    from splitnet.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_config_file(tmp_path, capsys, repository):
    from splitnet.cli import main

    cfg = tmp_path / "device.yaml"
    cfg.write_text("bundle: /no/such/bundle\nserver: [127.0.0.1:1]\nwindow: 2\n")
    assert main(["device", "--config", str(cfg)]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
    cfg.write_text("bundel: x\n")
    assert main(["device", "--config", str(cfg)]) == 2
    assert "unknown option 'bundel'" in capsys.readouterr().err


def test_two_servers_are_balanced_round_robin(repository, models, tmp_path):
    async def main():
        a = InferenceServer(_config(repository), models=models)
        b = InferenceServer(_config(repository), models=models)
        await a.start()
        await b.start()
        try:
            cfg = DaemonConfig(
                bundle=repository / "unet",
                servers=(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"),
                frames=10,
                window=4,
            )
            summary = await DeviceDaemon(cfg).run()
            counts = [s.metrics.totals(s.metrics.batch_size, UNET)[1] for s in (a, b)]
            return summary, counts
        finally:
            await a.stop(0)
            await b.stop(0)

    summary, counts = asyncio.run(main())
    assert summary.ok == 10
    assert sum(counts) == 10 and min(counts) > 0, counts  # both servers took frames


def test_graceful_stop_drains_calls_in_flight(repository, models):
    good = _payload(models, UNET)

    async def main():
        server = InferenceServer(_config(repository), models=models)
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


def test_image_folder_and_video_sources(tmp_path):
    from PIL import Image

    from splitnet.device import open_source

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 70, 3), i * 50, np.uint8)).save(folder / f"{i}.png")
    frames = list(open_source(str(folder), height=32, width=64))
    assert (
        len(frames) == 3
        and frames[0].shape == (32, 64, 3)
        and frames[2].mean() == pytest.approx(100, abs=1)
    )
    synthetic = open_source("synthetic", height=32, width=64, frames=5)
    assert len(list(synthetic)) == 5 and not synthetic.live
    assert open_source("synthetic", height=8, width=8, fps=10).live
    with pytest.raises(ValueError, match="is not 'synthetic'"):
        open_source("/no/such/source", height=8, width=8)

    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 32))
    for i in range(4):
        writer.write(np.full((32, 64, 3), 40 * i, np.uint8))
    writer.release()
    frames = list(open_source(str(video), height=32, width=64))
    assert len(frames) == 4 and frames[0].shape == (32, 64, 3)


@pytest.mark.gpu
def test_tail_on_cuda_matches_cpu(repository):
    from splitnet.server import TailModel
    from splitnet.server._repository import FrameInput

    cpu = TailModel(repository / "unet", device="cpu")
    gpu = TailModel(repository / "unet", device="cuda", precision="fp16")
    rng = np.random.default_rng(0)
    frame = FrameInput(
        [np.abs(rng.normal(size=t.shape)).astype(np.float32) for t in cpu.manifest.crossing], True
    )
    a, b = cpu.run_batch([frame, frame]), gpu.run_batch([frame, frame])
    np.testing.assert_allclose(a[0]["probabilities"], b[0]["probabilities"], atol=2e-2)


def test_pre_serialized_requests_are_the_protobuf_message():
    from splitnet.wire import encode_infer_request

    payload = bytes(range(256)) * 3000
    kw = {"request_id": "d/3", "parameters": {"device_id": "d", "frame_id": 3}, "outputs": ["mask"]}
    fast = pb.ModelInferRequest.FromString(encode_infer_request("m", payload, **kw))
    assert fast == make_infer_request("m", payload, **kw)
    assert list(fast.inputs[0].shape) == [len(payload)] and fast.raw_input_contents[0] == payload


def test_batcher_stop_finishes_the_batch_that_is_running():
    import time as _time

    def slow(items):
        _time.sleep(0.2)
        return list(items)

    async def main():
        b = DynamicBatcher(slow, max_batch=2, max_delay_s=0)
        tasks = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await asyncio.sleep(0.05)  # the first batch is running
        await b.stop()
        return [t.result()[0] for t in tasks if t.done()]

    assert asyncio.run(main()) == [0, 1, 2]
