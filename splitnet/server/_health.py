"""The gRPC health service, whose open ``Watch`` calls end when the server shuts down
(grpcio-health's own never return, so each one held shutdown for the whole grace period)."""

from __future__ import annotations

from grpc_health.v1 import health
from grpc_health.v1 import health_pb2 as _pb

__all__ = ["HealthServicer"]


class HealthServicer(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._closing = False

    async def Watch(self, request, context) -> None:
        condition = self._server_watchers[request.service]
        last = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(
                        request.service, _pb.HealthCheckResponse.SERVICE_UNKNOWN
                    )
                    if status != last:
                        await context.write(_pb.HealthCheckResponse(status=status))
                        last = status
                        continue  # the status may have changed during the write: look again
                    if self._closing:
                        return  # the watcher has seen NOT_SERVING: end the call
                    await condition.wait()
        finally:
            self._server_watchers.pop(request.service, None)

    async def close(self) -> None:
        """Sets every service NOT_SERVING and ends the open watches."""
        # NOT_SERVING first, then closing: a watch that saw closing before the status changed
        # ended the call on SERVING (its write of SERVING was in flight when close began)
        await self.enter_graceful_shutdown()
        self._closing = True
        for service in list(self._server_watchers):
            condition = self._server_watchers[service]
            async with condition:
                condition.notify_all()
