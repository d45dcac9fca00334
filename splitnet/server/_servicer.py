"""The GRPCInferenceService servicer: thin methods named as in the proto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from splitnet import __version__
from splitnet.server._admission import caller_identity
from splitnet.server._core import InferenceCore, InferError
from splitnet.server._stream import answer_stream
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
    Stream answers come in request order (see :mod:`splitnet.server._stream`).
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
            return await self.core.infer(request, caller=caller_identity(context))
        except InferError as e:
            await context.abort(e.code, e.message)

    async def ModelStreamInfer(
        self, request_iterator, context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        answers = answer_stream(
            self.core, request_iterator, caller_identity(context), self.max_stream_inflight
        )
        async with contextlib.aclosing(answers):  # its tickets are released with the call
            async for out in answers:
                yield out
