"""The server's logic, without sockets: requests in, responses or ``InferError`` out."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from splitnet import codec
from splitnet.server._batcher import DynamicBatcher
from splitnet.server._metrics import Metrics
from splitnet.server._repository import FrameInput, TailModel
from splitnet.wire import (
    PAYLOAD_INPUT,
    get_parameter,
    set_parameter,
    to_datatype,
)
from splitnet.wire import (
    inference_pb2 as pb,
)

__all__ = ["InferError", "InferenceCore"]


class InferError(Exception):
    """A request that failed, with the gRPC status it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _ResponseCache:
    """The last responses by (model, device_id, frame_id), bounded in count and bytes,
    so that a frame re-sent after a reconnect is answered without running it twice."""

    def __init__(self, max_items: int = 1024, max_bytes: int = 256 << 20) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[tuple, pb.ModelInferResponse] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> pb.ModelInferResponse | None:
        return self._items.get(key)

    def put(self, key: tuple, response: pb.ModelInferResponse) -> None:
        size = response.ByteSize()
        if size > self.max_bytes:
            return
        self._items[key] = response
        self._bytes += size
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.ByteSize()


class InferenceCore:
    """Decodes payloads, checks them against the bundle, batches, runs tails, answers.

    Args:
        models: served models by name.
        max_batch, max_delay_ms: dynamic batching (per model; capped by what
            each tail allows).
        metrics: Prometheus metrics to update (optional).
    """

    def __init__(
        self,
        models: Mapping[str, TailModel],
        *,
        max_batch: int = 8,
        max_delay_ms: float = 5.0,
        metrics: Metrics | None = None,
        decode_threads: int = 2,
    ) -> None:
        self.models = dict(models)
        self.metrics = metrics
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._compute_pool = ThreadPoolExecutor(1, thread_name_prefix="tail")
        self._batchers = {
            name: DynamicBatcher(
                m.run_batch,
                max_batch=max(1, min(max_batch, m.max_batch)),
                max_delay_s=max_delay_ms / 1000,
                executor=self._compute_pool,
            )
            for name, m in self.models.items()
        }
        self._cache = _ResponseCache()
        self._inflight: dict[tuple, asyncio.Future] = {}

    def model(self, name: str) -> TailModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise InferError(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; served: {known}")
        return model

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """Answers one request; raises :class:`InferError` with the right status."""
        model_name = request.model_name
        try:
            model = self.model(model_name)
            device_id = get_parameter(request.parameters, "device_id")
            frame_id = get_parameter(request.parameters, "frame_id")
            key = None
            if device_id is not None and frame_id is not None:
                key = (model_name, str(device_id), int(frame_id))
                cached = self._cache.get(key)
                if cached is not None:
                    self._count(model_name, "duplicate")
                    return cached
                pending = self._inflight.get(key)
                if pending is not None:
                    self._count(model_name, "duplicate")
                    return await asyncio.shield(pending)
            if key is None:
                response = await self._run(model, request)
            else:
                response = await self._run_once(key, model, request)
        except InferError as e:
            self._count(model_name, e.code.name.lower())
            raise
        except Exception as e:  # a bug or a failing tail: INTERNAL, and keep serving
            self._count(model_name, "internal")
            raise InferError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}") from e
        self._count(model_name, "ok")
        return response

    async def _run_once(
        self, key: tuple, model: TailModel, request: pb.ModelInferRequest
    ) -> pb.ModelInferResponse:
        """Runs a frame; requests for the same key meanwhile wait for this answer.

        The frame runs in a task of its own: when the stream that sent it first is
        cancelled (a dropped link), the copy re-sent on a new stream still gets the
        answer, instead of the cancellation (issue 13, item 1)."""
        task = asyncio.ensure_future(self._run(model, request))
        self._inflight[key] = task

        def done(t: asyncio.Future) -> None:
            self._inflight.pop(key, None)
            if not t.cancelled() and t.exception() is None:
                self._cache.put(key, t.result())

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _run(self, model: TailModel, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        # the cheap checks first: a bad request costs no decoding
        wanted = {o.name for o in request.outputs}
        valid = {name for name, _, _ in model.output_metadata()}
        unknown = wanted - valid
        if unknown:
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model {model.name} has no output {sorted(unknown)[0]!r}; outputs: {', '.join(sorted(valid))}",
            )
        top_k = get_parameter(request.parameters, "top_k", 5)
        if not isinstance(top_k, int) or top_k < 1:
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be a positive integer, got {top_k!r}"
            )
        payload = _payload(request)
        if self.metrics is not None:
            self.metrics.payload_bytes.labels(model.name).observe(len(payload))
        loop = asyncio.get_running_loop()
        try:
            tensors = await loop.run_in_executor(
                self._decode_pool, _decode_and_check, model, payload
            )
        except (codec.CodecError, ValueError) as e:
            raise InferError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        frame = FrameInput(tensors, probabilities="probabilities" in wanted, top_k=top_k)
        result, stats = await self._batchers[model.name].submit(frame)
        if self.metrics is not None:
            self.metrics.observe_batch(model.name, stats)
        if model.task == "segmentation" and not wanted:
            wanted = {"mask"}
        response = pb.ModelInferResponse(model_name=model.name, model_version="1", id=request.id)
        for key in ("device_id", "frame_id"):
            value = get_parameter(request.parameters, key)
            if value is not None:
                set_parameter(response.parameters, key, value)
        set_parameter(response.parameters, "queue_ms", stats.queue_s * 1000)
        set_parameter(response.parameters, "compute_ms", stats.compute_s * 1000)
        set_parameter(response.parameters, "batch_size", stats.batch_size)
        for name, array in result.items():
            if model.task == "segmentation" and name not in wanted:
                continue
            array = np.ascontiguousarray(array)
            response.outputs.add(
                name=name, datatype=to_datatype(array.dtype), shape=list(array.shape)
            )
            response.raw_output_contents.append(
                array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            )
        return response

    def _count(self, model: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(model, status).inc()

    async def close(self) -> None:
        """Finishes what is queued, then stops the batchers and thread pools."""
        for batcher in self._batchers.values():
            await batcher.stop()
        self._decode_pool.shutdown(wait=True)
        self._compute_pool.shutdown(wait=True)


def _payload(request: pb.ModelInferRequest) -> bytes:
    names = [t.name for t in request.inputs]
    if names != [PAYLOAD_INPUT]:
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a splitnet model takes one input {PAYLOAD_INPUT!r} (UINT8, shape [-1]), got {names}",
        )
    tensor = request.inputs[0]
    if tensor.datatype != "UINT8":
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {PAYLOAD_INPUT!r} must be UINT8, got {tensor.datatype}",
        )
    if request.raw_input_contents:
        payload = request.raw_input_contents[0]
    else:
        payload = bytes(tensor.contents.uint_contents)  # values > 255 raise ValueError below
    if list(tensor.shape) != [len(payload)]:
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {PAYLOAD_INPUT!r} has shape {list(tensor.shape)} but {len(payload)} bytes",
        )
    return payload


def _decode_and_check(model: TailModel, payload: bytes) -> list[np.ndarray]:
    # a payload may not declare more elements than the bundle's tensors hold: no hostile
    # header makes the server allocate more than a real frame needs
    return model.check(model.codec.decode(payload, max_elements=model.crossing_elements))
