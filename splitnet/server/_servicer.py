"""The GRPCInferenceService servicer: thin methods named as in the proto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from splitnet import __version__
from splitnet.server._core import InferenceCore, InferError
from splitnet.wire import PAYLOAD_INPUT
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc

__all__ = ["InferenceServicer"]

EXTENSIONS = ["model_repository", "streaming", "dynamic_batching", "binary_tensor_data"]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over :class:`InferenceCore`.

    Unary errors end the call with their status; on ``ModelStreamInfer`` a
    failed request is answered with ``error_message`` (``"INVALID_ARGUMENT: ..."``)
    and the stream goes on, so one bad frame never costs a device its stream.
    """

    def __init__(self, core: InferenceCore, *, max_stream_inflight: int = 64) -> None:
        self.core = core
        self.ready = True
        self.max_stream_inflight = max_stream_inflight

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.ready and request.name in self.core.models)

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="splitnet", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        try:
            model = self.core.model(request.name)
        except InferError as e:
            await context.abort(e.code, e.message)
        response = pb.ModelMetadataResponse(
            name=model.name, versions=["1"], platform="splitnet_torch_export"
        )
        response.inputs.add(name=PAYLOAD_INPUT, datatype="UINT8", shape=[-1])
        for name, datatype, shape in model.output_metadata():
            response.outputs.add(name=name, datatype=datatype, shape=shape)
        return response

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        try:
            return await self.core.infer(request)
        except InferError as e:
            await context.abort(e.code, e.message)

    async def ModelStreamInfer(
        self, request_iterator, context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        responses: asyncio.Queue = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_stream_inflight)
        tasks: set[asyncio.Task] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                out = pb.ModelStreamInferResponse(infer_response=await self.core.infer(request))
            except InferError as e:
                out = pb.ModelStreamInferResponse(error_message=f"{e.code.name}: {e.message}")
                out.infer_response.model_name = request.model_name
                out.infer_response.id = request.id
                for key in ("device_id", "frame_id"):
                    if key in request.parameters:
                        out.infer_response.parameters[key].CopyFrom(request.parameters[key])
            finally:
                slots.release()
            await responses.put(out)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()  # back-pressure: at most max_stream_inflight per stream
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                await responses.put(None)  # end of requests

        reader = asyncio.create_task(read())
        try:
            reading = True
            while reading or tasks or not responses.empty():
                item = await responses.get()
                if item is None:
                    reading = False
                    if tasks:
                        await asyncio.gather(*list(tasks), return_exceptions=True)
                    continue
                yield item
        finally:
            reader.cancel()
            for t in list(tasks):
                t.cancel()
