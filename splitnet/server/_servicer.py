"""The GRPCInferenceService servicer: thin methods named as in the proto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from splitnet.server._admission import caller_identity
from splitnet.server._core import InferenceCore, InferError, with_request_id
from splitnet.server._service import EXTENSIONS, InferenceService
from splitnet.server._stream import answer_stream
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc

__all__ = ["EXTENSIONS", "InferenceServicer"]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over gRPC: each method calls :class:`InferenceService` or the core.

    Unary errors end the call with their status (an inference error's message
    ends with the request id); on ``ModelStreamInfer`` a failed request is
    answered with ``error_message`` (``"INVALID_ARGUMENT: ..."``) and the stream
    goes on, so one bad frame never costs a device its stream. Stream answers
    come in request order (see :mod:`splitnet.server._stream`).
    """

    def __init__(
        self,
        core: InferenceCore,
        *,
        service: InferenceService | None = None,
        max_stream_inflight: int = 64,
    ) -> None:
        self.core = core
        self.service = service if service is not None else InferenceService(core)
        self.max_stream_inflight = max_stream_inflight

    @property
    def ready(self) -> bool:
        return self.service.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.service.ready = value

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return self.service.server_metadata()

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        return await _call(context, self.service.model_metadata, request.name, request.version)

    async def ModelConfig(self, request, context) -> pb.ModelConfigResponse:
        return await _call(context, self.service.model_config, request.name, request.version)

    async def ModelStatistics(self, request, context) -> pb.ModelStatisticsResponse:
        return await _call(context, self.service.model_statistics, request.name, request.version)

    async def RepositoryIndex(self, request, context) -> pb.RepositoryIndexResponse:
        return self.service.repository_index(request.ready)

    async def RepositoryModelLoad(self, request, context) -> pb.RepositoryModelLoadResponse:
        await _acall(context, self.service.load, request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context) -> pb.RepositoryModelUnloadResponse:
        await _acall(context, self.service.unload, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:
        try:
            return await self.core.infer(request, caller=caller_identity(context))
        except InferError as e:
            await context.abort(e.code, with_request_id(e.message, request.id))

    async def ModelStreamInfer(
        self, request_iterator, context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        answers = answer_stream(
            self.core, request_iterator, caller_identity(context), self.max_stream_inflight
        )
        async with contextlib.aclosing(answers):  # its tickets are released with the call
            async for out in answers:
                yield out


async def _call(context, method, *args):
    try:
        return method(*args)
    except InferError as e:
        await context.abort(e.code, e.message)


async def _acall(context, method, *args):
    try:
        return await method(*args)
    except InferError as e:
        await context.abort(e.code, e.message)
