"""The KServe v2 protocol without a transport: what the gRPC servicer and the REST app share.

Each method takes the request's fields and returns the protocol's protobuf
message, or raises :class:`InferError` with the status it maps to (gRPC codes;
the REST app turns them into HTTP ones). Inference itself is
:meth:`InferenceCore.infer`; the adapters translate, nothing more.
"""

from __future__ import annotations

import grpc

from splitnet import __version__
from splitnet.server._config import PLATFORM, model_config
from splitnet.server._core import InferenceCore, InferError
from splitnet.server._model_repository import ModelRepository, RepositoryError
from splitnet.server._statistics import Statistics
from splitnet.wire import PAYLOAD_INPUT
from splitnet.wire import inference_pb2 as pb

__all__ = ["EXTENSIONS", "InferenceService"]

# Triton's extension names, only those that work here
EXTENSIONS = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
    "parameters",
    "binary_tensor_data",
    "streaming",
]


class InferenceService:
    """Health, metadata, config, statistics and the repository over an :class:`InferenceCore`.

    Args:
        core: the inference core.
        repository: the repository extension (``None``: load and unload are UNIMPLEMENTED).
        statistics: the per-model statistics (``None``: empty ones).
    """

    def __init__(
        self,
        core: InferenceCore,
        *,
        repository: ModelRepository | None = None,
        statistics: Statistics | None = None,
    ) -> None:
        self.core = core
        self.repository = repository
        self.statistics = statistics
        self.ready = True  # False once the server is stopping

    def model_ready(self, name: str, version: str = "") -> bool:
        if not self.ready:
            return False
        try:
            self.core.model(name, version)
        except InferError:
            return False
        return True

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="splitnet", version=__version__, extensions=EXTENSIONS
        )

    def model_metadata(self, name: str, version: str = "") -> pb.ModelMetadataResponse:
        model = self.core.model(name, version)
        response = pb.ModelMetadataResponse(
            name=model.name,
            versions=sorted(self.core.versions.get(model.name, {model.version: model}), key=int),
            platform=PLATFORM,
        )
        response.inputs.add(name=PAYLOAD_INPUT, datatype="UINT8", shape=[-1])
        for out, datatype, shape in model.output_metadata():
            response.outputs.add(name=out, datatype=datatype, shape=shape)
        return response

    def model_config(self, name: str, version: str = "") -> pb.ModelConfigResponse:
        model = self.core.model(name, version)
        config = model_config(
            model,
            max_batch=self.core.max_batch,
            max_delay_ms=self.core.max_delay_ms,
            instances=self.core.tail_instances,
            threads=self.core.tail_threads,
        )
        return pb.ModelConfigResponse(config=config)

    def model_statistics(self, name: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        """One model's statistics, or every served model's when ``name`` is empty."""
        if name:
            models = [self.core.model(name, version)]
        else:
            models = list(self.core.models.values())
        response = pb.ModelStatisticsResponse()
        statistics = self.statistics or Statistics()
        for m in models:
            response.model_stats.append(statistics.message(m.name, m.version))
        return response

    def repository_index(self, ready_only: bool = False) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        if self.repository is not None:
            for name, version, state, reason in self.repository.index(ready_only=ready_only):
                response.models.add(name=name, version=version, state=state, reason=reason)
        return response

    async def load(self, name: str) -> None:
        await self._repository_call("load", name)

    async def unload(self, name: str) -> None:
        await self._repository_call("unload", name)

    async def _repository_call(self, what: str, name: str) -> None:
        if self.repository is None:
            raise InferError(grpc.StatusCode.UNIMPLEMENTED, "this server has no repository")
        try:
            await getattr(self.repository, what)(name)
        except RepositoryError as e:
            raise InferError(e.code, e.message) from None
