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
    """A handler that aborts with UNAUTHENTICATED. The server reads at most one request
    whatever the method's shape, so a unary handler rejects streams too."""

    async def abort(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)
