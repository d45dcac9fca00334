"""The GRPCInferenceService servicer: thin methods named as in the proto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from splitnet import __version__
from splitnet.server._admission import caller_identity
from splitnet.server._config import PLATFORM, model_config
from splitnet.server._core import InferenceCore, InferError
from splitnet.server._model_repository import RepositoryError
from splitnet.server._stream import answer_stream
from splitnet.wire import PAYLOAD_INPUT
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc

__all__ = ["InferenceServicer"]

# Triton's extension names, only those that work here
EXTENSIONS = [
    "model_configuration",
    "model_repository",
    "statistics",
    "parameters",
    "binary_tensor_data",
    "streaming",
]


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
        # set by InferenceServer: the repository extension and the statistics
        self.repository = None
        self.statistics = None

    def _version_ok(self, name: str, version: str) -> bool:
        model = self.core.models.get(name)
        return model is not None and version in ("", model.version)

    async def _served(self, name: str, version: str, context):
        try:
            model = self.core.model(name)
        except InferError as e:
            await context.abort(e.code, e.message)
        if version not in ("", model.version):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} has no version {version!r}; served: {model.version}",
            )
        return model

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=self.ready and self._version_ok(request.name, request.version)
        )

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="splitnet", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        model = await self._served(request.name, request.version, context)
        response = pb.ModelMetadataResponse(
            name=model.name, versions=[model.version], platform=PLATFORM
        )
        response.inputs.add(name=PAYLOAD_INPUT, datatype="UINT8", shape=[-1])
        for name, datatype, shape in model.output_metadata():
            response.outputs.add(name=name, datatype=datatype, shape=shape)
        return response

    async def ModelConfig(self, request, context) -> pb.ModelConfigResponse:
        model = await self._served(request.name, request.version, context)
        config = model_config(
            model, max_batch=self.core.max_batch, max_delay_ms=self.core.max_delay_ms
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request, context) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [await self._served(request.name, request.version, context)]
        else:
            models = list(self.core.models.values())
        response = pb.ModelStatisticsResponse()
        for m in models:
            if self.statistics is not None:
                response.model_stats.append(self.statistics.message(m.name, m.version))
        return response

    async def RepositoryIndex(self, request, context) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        if self.repository is not None:
            for name, version, state, reason in self.repository.index(ready_only=request.ready):
                response.models.add(name=name, version=version, state=state, reason=reason)
        return response

    async def RepositoryModelLoad(self, request, context) -> pb.RepositoryModelLoadResponse:
        await self._repository_call("load", request.model_name, context)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context) -> pb.RepositoryModelUnloadResponse:
        await self._repository_call("unload", request.model_name, context)
        return pb.RepositoryModelUnloadResponse()

    async def _repository_call(self, what: str, name: str, context) -> None:
        if self.repository is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server has no repository")
        try:
            await getattr(self.repository, what)(name)
        except RepositoryError as e:
            await context.abort(e.code, e.message)

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
