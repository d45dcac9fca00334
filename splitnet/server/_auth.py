"""Bearer-token authentication as a server interceptor."""

from __future__ import annotations

import hmac

import grpc

__all__ = ["TokenAuthInterceptor"]

# health checks stay open to load balancers and orchestrators
OPEN_METHODS = ("/grpc.health.v1.Health/",)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(OPEN_METHODS):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        given = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given, self._expected):
            return await continuation(handler_call_details)
        message = "missing bearer token" if not given else "invalid bearer token"
        return _deny(message)


def _deny(message: str) -> grpc.RpcMethodHandler:
    """A handler that aborts with UNAUTHENTICATED before reading any request: as a
    stream handler, it never asks gRPC for a message, so an unauthenticated request's
    body is not received (whatever the method's shape, unary ones included)."""

    async def abort(request_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.stream_stream_rpc_method_handler(abort)
