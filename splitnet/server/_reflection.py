"""Server reflection under both ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1``.

grpcio-reflection ships only v1alpha; v1's messages are the same (same fields and
numbers, another package), so v1 is the v1alpha servicer under v1's method name.
Newer grpcurl, grpcui and Postman ask v1 first.
"""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as _pb

__all__ = ["V1_SERVICE_NAME", "enable_reflection"]

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names, server: grpc.aio.Server) -> None:
    """Serves reflection of ``service_names`` (plus both reflection services) on ``server``."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=_pb.ServerReflectionRequest.FromString,
            response_serializer=_pb.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
