"""The server under hostile clients (issue 13): bounded memory, no cache leaks, bounded decode.

Each test names the item of issue 13 (or 12) it guards against; each fails on
the code before the fix (noted where the failure is an exception rather than
a wrong answer).
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest
from _serve_helpers import RESNET, UNET, make_payload, rpc_status, run_with_server

from splitnet.server._core import InferenceCore, InferError
from splitnet.server._servicer import InferenceServicer
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import make_infer_request, output_arrays

pytestmark = pytest.mark.grpc

CLIENT_MISTAKES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
}


def _ids(device: str, frame: int) -> dict:
    return {"device_id": device, "frame_id": frame}


async def _infer(stub, model, payload, **kw):
    return await stub.ModelInfer(make_infer_request(model, payload, **kw))


# ---- item 2: a stream that never reads its answers ---------------------------------------


def test_a_stream_that_never_reads_stops_being_read(repository, models):
    """Before: the slot was released when an answer was computed, so a stream whose client
    read nothing had every request read and answered into an unbounded queue."""
    good = make_payload(models, UNET)
    sent = 0

    async def requests():
        nonlocal sent
        for i in range(40):
            sent += 1
            yield make_infer_request(UNET, good, parameters=_ids("slow", i))

    async def main():
        core = InferenceCore(models, max_delay_ms=0)
        servicer = InferenceServicer(core, max_stream_inflight=4)
        answers = servicer.ModelStreamInfer(requests(), None)
        first = await answers.__anext__()  # then the client stops reading
        assert not first.error_message
        settled = 0
        for _ in range(400):  # wait until nothing moves (no timing is asserted)
            before = sent
            await asyncio.sleep(0.01)
            settled = settled + 1 if sent == before else 0
            if settled >= 30:
                break
        await answers.aclose()
        await core.close()
        return getattr(core, "admission", None)

    admission = asyncio.run(main())
    # the answer being written, plus max_stream_inflight read behind it, plus one waiting
    assert sent <= 1 + 4 + 1, sent
    assert admission.peak > 0 and admission.used == 0  # every ticket back once closed


# ---- issue 12, same code: answers in request order, with their ids -----------------------


def test_stream_answers_come_in_request_order_and_errors_carry_the_id(repository, models):
    """Before: an error (answered at once) overtook the good frames sent before it."""
    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer()
            for i in range(12):
                payload = good if i % 3 == 0 else b"junk%d" % i
                await call.write(
                    make_infer_request(UNET, payload, request_id=f"r{i}", parameters=_ids("d", i))
                )
            await call.done_writing()
            return [r async for r in call]

    responses = run_with_server(repository, models, body, max_delay_ms=20)
    assert [r.infer_response.id for r in responses] == [f"r{i}" for i in range(12)]
    for i, r in enumerate(responses):
        if i % 3 == 0:
            assert not r.error_message
        else:
            assert r.error_message.startswith("INVALID_ARGUMENT:")
            assert f"'r{i}'" in r.error_message  # tritonclient shows only error_message
            assert r.infer_response.parameters["frame_id"].int64_param == i


# ---- item 4: the answer cache answers only the caller and payload that asked --------------


def test_the_cache_does_not_answer_a_request_that_is_not_a_valid_frame(repository, models):
    """Before: any 68-byte request naming a cached device_id/frame_id got the ~kB answer."""
    good = make_payload(models, UNET)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            await _infer(stub, UNET, good, parameters=_ids("victim", 3))
            tiny = make_infer_request(UNET, b"x", parameters=_ids("victim", 3))
            return await rpc_status(lambda: stub.ModelInfer(tiny))()

    assert run_with_server(repository, models, body) == grpc.StatusCode.INVALID_ARGUMENT


def test_no_client_reads_or_plants_another_devices_answer(repository, models):
    """Before: the key was (model, device_id, frame_id), all chosen by the client."""
    mine, theirs = make_payload(models, UNET, seed=1), make_payload(models, UNET, seed=2)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            truth_mine = output_arrays(await _infer(stub, UNET, mine, outputs=["probabilities"]))
            truth_theirs = output_arrays(
                await _infer(stub, UNET, theirs, outputs=["probabilities"])
            )
            assert not np.array_equal(truth_mine["probabilities"], truth_theirs["probabilities"])
            # reading: the victim's frame 0 is cached; the attacker asks for it with its payload
            await _infer(stub, UNET, mine, parameters=_ids("victim", 0), outputs=["probabilities"])
            read = await _infer(
                stub, UNET, theirs, parameters=_ids("victim", 0), outputs=["probabilities"]
            )
            # planting: the attacker answers the victim's next frame first
            await _infer(
                stub, UNET, theirs, parameters=_ids("victim", 1), outputs=["probabilities"]
            )
            planted = await _infer(
                stub, UNET, mine, parameters=_ids("victim", 1), outputs=["probabilities"]
            )
            return truth_mine, truth_theirs, output_arrays(read), output_arrays(planted)

    truth_mine, truth_theirs, read, planted = run_with_server(repository, models, body)
    np.testing.assert_array_equal(read["probabilities"], truth_theirs["probabilities"])
    np.testing.assert_array_equal(planted["probabilities"], truth_mine["probabilities"])


def test_the_cache_answers_only_the_caller_that_asked(models):
    """Before: ``infer`` took no caller (TypeError); the cache was shared by every caller."""
    good = make_payload(models, RESNET)
    req = make_infer_request(RESNET, good, request_id="first", parameters=_ids("dev", 9))
    again = make_infer_request(RESNET, good, request_id="again", parameters=_ids("dev", 9))

    async def main():
        core = InferenceCore(models, max_delay_ms=0)
        ran = []
        batcher = core._batchers[RESNET]
        original = batcher._run_batch
        batcher._run_batch = lambda frames: ran.append(len(frames)) or original(frames)
        try:
            a = await core.infer(req, caller="alice")
            b = await core.infer(again, caller="alice")  # a re-sent frame: from the cache
            c = await core.infer(req, caller="mallory")  # another caller: runs again
        finally:
            await core.close()
        return a, b, c, ran

    a, b, c, ran = asyncio.run(main())
    assert ran == [1, 1]
    assert b.id == "again" and a.id == c.id == "first"
    assert b.raw_output_contents == a.raw_output_contents


# ---- item 5: decoding costs what the bundle declares, not what a header claims ------------


def test_a_payload_declaring_other_shapes_is_refused_from_its_header(repository, models):
    """Before: the payload was decoded (one rANS model per channel it declared) and only then
    checked against the bundle."""
    from splitnet.codec import get_codec

    shapes = [tuple(t.shape) for t in models[UNET].manifest.crossing]
    # the first tensor's elements as 16,384 channels of one element: 16,384 rANS models
    first = (1, int(np.prod(shapes[0])), 1, 1)
    tensors = [np.ones(s, np.float32) for s in [first, *shapes[1:]]]
    tensors[0][0, ::2] = 0  # two symbols per channel: a real model each
    hostile = get_codec("q4", entropy="ans", ans_model="channel").encode(tensors)

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            try:
                await _infer(stub, UNET, hostile)
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details()
            return grpc.StatusCode.OK, ""

    code, details = run_with_server(repository, models, body)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "declares shape [1, 16384, 1, 1]" in details, details


# ---- item 6: bytes in flight -------------------------------------------------------------


@pytest.fixture
def blocked_tail(models, monkeypatch):
    """The U-Net tail waits for ``release.set()`` before each batch."""
    release = threading.Event()
    model = models[UNET]
    original = model.run_batch

    def run_batch(frames):
        release.wait(30)
        return original(frames)

    monkeypatch.setattr(model, "run_batch", run_batch)
    yield release
    release.set()


def test_requests_past_the_budget_of_bytes_in_flight_are_refused(repository, models, blocked_tail):
    """Before: no budget (ServerConfig took no max_inflight_bytes); every request was held."""
    good = make_payload(models, UNET)
    core = InferenceCore(models)
    cost = make_infer_request(UNET, good).ByteSize() + core._limits[UNET].held_bytes
    budget = 3 * cost

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            calls = [
                asyncio.ensure_future(rpc_status(lambda: _infer(stub, UNET, good))())
                for _ in range(8)
            ]
            while server.core.admission.refused < 5:  # 3 held by the blocked tail, 5 refused
                await asyncio.sleep(0.01)
            blocked_tail.set()
            codes = await asyncio.gather(*calls)
            return codes, server.core.admission

    codes, admission = run_with_server(
        repository, models, body, max_inflight_bytes=budget, max_delay_ms=0, max_batch=1
    )
    assert codes.count(grpc.StatusCode.OK) == 3
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 5
    assert admission.peak <= budget and admission.used == 0


def test_a_message_bigger_than_any_bundle_payload_is_refused_on_receipt(repository, models):
    """Before: the limit was max_message_mb (64 MiB) whatever the bundles; a 2 MiB junk
    request was received and decoded (INVALID_ARGUMENT)."""

    async def body(server, port):
        assert server.core.max_request_bytes < 2 << 20
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 << 20)]
        ) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            return await rpc_status(lambda: _infer(stub, UNET, b"\0" * (2 << 20)))()

    assert run_with_server(repository, models, body) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_unauthenticated_request_is_refused_before_its_body(repository, models, tmp_path):
    """With the receive limit above, reading the body first would answer RESOURCE_EXHAUSTED:
    UNAUTHENTICATED says the message was not read. (The handler before: unary, it read one.)"""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    big = b"\0" * (2 << 20)

    async def body(server, port):
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 << 20)]
        ) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            unary = await rpc_status(lambda: _infer(stub, UNET, big))()
            call = stub.ModelStreamInfer()
            await call.write(make_infer_request(UNET, big))
            stream = await rpc_status(lambda: call.read())()
            return unary, stream

    unary, stream = run_with_server(repository, models, body, token_file=token)
    assert unary == stream == grpc.StatusCode.UNAUTHENTICATED


def test_flood_a_stream_that_never_reads_and_big_requests(repository, models):
    """A stream that never reads and 16 concurrent near-limit requests: the server's bytes in
    flight stay under its budget, every status is a client-mistake status, others are served."""
    good = make_payload(models, UNET)
    budget = 4 << 20

    async def body(server, port):
        limit = server.core.max_request_bytes
        opts = [("grpc.max_send_message_length", 8 << 20)]
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as flood,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as other,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(flood)
            hog = stub.ModelStreamInfer()  # writes, never reads

            async def write_forever():
                for i in range(2000):
                    await hog.write(
                        make_infer_request(
                            UNET, good, parameters=_ids("hog", i), outputs=["probabilities"]
                        )
                    )

            writer = asyncio.ensure_future(write_forever())
            big = b"\1" * (limit - 4096)  # just under the receive limit: junk to decode
            calls = [
                asyncio.ensure_future(rpc_status(lambda: _infer(stub, UNET, big))())
                for _ in range(16)
            ]
            await asyncio.sleep(0.5)
            ok = await pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(
                make_infer_request(UNET, good), timeout=30
            )
            codes = await asyncio.gather(*calls)
            peak = server.core.admission.peak
            writer.cancel()
            hog.cancel()
            for _ in range(500):  # the cancelled stream gives its tickets back
                if server.core.admission.used == 0:
                    break
                await asyncio.sleep(0.01)
            return ok, codes, peak, server.core.admission.used

    ok, codes, peak, left = run_with_server(repository, models, body, max_inflight_bytes=budget)
    assert output_arrays(ok)["mask"].shape == (32, 64)
    assert set(codes) <= CLIENT_MISTAKES, codes
    assert 0 < peak <= budget and left == 0


# ---- client mistakes answered INTERNAL before (issue 13, item 12) ---------------------------


def _core_status(models, req) -> grpc.StatusCode:
    async def main():
        core = InferenceCore(models, max_delay_ms=0)
        try:
            await core.infer(req)
        except InferError as e:
            return e.code
        finally:
            await core.close()
        return grpc.StatusCode.OK

    return asyncio.run(main())


def _typed_request(values) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=UNET)
    t = req.inputs.add(name="payload", datatype="UINT8", shape=[len(values)])
    t.contents.uint_contents.extend(values)
    return req


@pytest.mark.parametrize(
    "case",
    ["uint_contents_256", "frame_id_not_an_integer", "two_raw_contents", "raw_and_typed"],
)
def test_client_mistakes_are_invalid_argument_not_internal(models, case):
    good = make_payload(models, UNET)
    if case == "uint_contents_256":
        req = _typed_request([1, 2, 256])
    elif case == "frame_id_not_an_integer":
        req = make_infer_request(UNET, good, parameters={"device_id": "d", "frame_id": "x7"})
    elif case == "two_raw_contents":
        req = make_infer_request(UNET, good)
        req.raw_input_contents.append(b"more")
    else:
        req = make_infer_request(UNET, good)
        req.inputs[0].contents.uint_contents.extend([1])
    assert _core_status(models, req) == grpc.StatusCode.INVALID_ARGUMENT


def test_typed_uint_contents_still_decode(models):
    good = make_payload(models, RESNET)
    req = _typed_request(list(good))
    req.model_name = RESNET
    assert _core_status(models, req) == grpc.StatusCode.OK


def test_client_chosen_model_names_make_no_metric_series(models):
    """Before: every unknown model name a client sent became a label of its own."""
    from splitnet.server._metrics import Metrics

    async def main():
        core = InferenceCore(models, metrics=Metrics.create())
        for i in range(5):
            try:
                await core.infer(make_infer_request(f"nope-{i}", b""))
            except InferError as e:
                assert e.code == grpc.StatusCode.NOT_FOUND
        await core.close()
        return {
            s.labels["model"] for metric in core.metrics.requests.collect() for s in metric.samples
        }

    assert asyncio.run(main()) == {"_unknown"}


@pytest.mark.parametrize(
    "case",
    ["uint_contents_256", "frame_id_not_an_integer", "frame_id_a_float", "two_raw_contents"],
)
def test_client_mistakes_over_grpc_unary_and_stream(repository, models, case):
    """Item 12 end to end: the same mistakes through the gRPC servicer, unary and on a
    stream (admission runs first there): INVALID_ARGUMENT, and the stream and the
    server keep answering the next good frame."""
    from splitnet.wire import inference_pb2_grpc as pb_grpc

    good = make_payload(models, UNET)
    if case == "uint_contents_256":
        bad = _typed_request([1, 2, 256])
    elif case == "frame_id_not_an_integer":
        bad = make_infer_request(UNET, good, parameters={"device_id": "d", "frame_id": "x7"})
    elif case == "frame_id_a_float":
        bad = make_infer_request(UNET, good, parameters={"device_id": "d"})
        bad.parameters["frame_id"].double_param = 1.5
    else:
        bad = make_infer_request(UNET, good)
        bad.raw_input_contents.append(b"more")
    then = make_infer_request(UNET, good, parameters={"device_id": "d", "frame_id": 1})

    async def body(server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ModelInfer(bad)
            unary = e.value.code()
            call = stub.ModelStreamInfer()
            await call.write(bad)
            first = await call.read()
            await call.write(then)
            second = await call.read()
            await call.done_writing()
            ok = await stub.ModelInfer(then)
            return unary, first, second, ok

    unary, first, second, ok = run_with_server(repository, models, body)
    assert unary == grpc.StatusCode.INVALID_ARGUMENT
    assert first.error_message.startswith("INVALID_ARGUMENT: "), first.error_message
    assert second.error_message == "" and ok.outputs
