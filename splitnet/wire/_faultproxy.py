"""A loopback TCP proxy that injects link faults, for tests and benchmarks (torch-free).

Put it between a daemon and a server (``--server 127.0.0.1:<proxy.port>``) and change
the link while they run::

    proxy = FaultProxy("127.0.0.1", server_port)
    await proxy.start()
    proxy.delay_s = 0.05          # one-way delay, each direction
    proxy.rate_bps = 2e6          # throttle: bytes per second, each direction
    proxy.cut()                   # close every connection, refuse new ones
    proxy.cut(server_notices_after_s=2)  # the client sees the cut now, the server later
    proxy.black_hole()            # stop forwarding, keep the sockets open
    proxy.restore()               # forward again (a black-holed connection resumes)
    await proxy.close()

A "refused" connection is accepted and reset at once (the listening port stays
the proxy's, so a daemon reconnects to the same address when the link comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass

__all__ = ["FaultProxy", "ProxyStats"]

_CHUNK = 64 << 10


@dataclass
class ProxyStats:
    connections: int = 0  # accepted and forwarded
    refused: int = 0  # accepted while cut, reset at once
    cuts: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client


class _Link:
    """One proxied connection: two pumps, client->server and server->client."""

    def __init__(self, proxy: FaultProxy, client: tuple, server: tuple) -> None:
        self.proxy = proxy
        self.client_r, self.client_w = client
        self.server_r, self.server_w = server
        self.cutting = False  # cut(): the proxy closes each side itself
        self.tasks = [
            asyncio.create_task(self._pump(self.client_r, self.server_w, up=True)),
            asyncio.create_task(self._pump(self.server_r, self.client_w, up=False)),
        ]

    async def _pump(self, reader, writer, *, up: bool) -> None:
        proxy = self.proxy
        try:
            while True:
                await proxy._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                due = time.monotonic() + proxy.delay_s
                if proxy.rate_bps:
                    due += len(data) / proxy.rate_bps
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await proxy._flowing.wait()  # black-holed meanwhile: held until restored
                writer.write(data)
                await writer.drain()
                if up:
                    proxy.stats.bytes_up += len(data)
                else:
                    proxy.stats.bytes_down += len(data)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # one side ended: end the other (a half-open proxy would hide the fault)
            if not self.cutting:
                self.close_now(self.server_w if up else self.client_w)

    def close_now(self, *writers) -> None:
        for w in writers or (self.client_w, self.server_w):
            _reset(w)

    def cancel(self) -> None:
        self.cutting = True
        for t in self.tasks:
            t.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes at once with a RST (SO_LINGER 0), as a dropped link looks to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.close()


class FaultProxy:
    """Forwards ``host:port`` (``port=0``: a free one, see ``.port``) to ``target``."""

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host, self.port = host, port
        self.delay_s = 0.0
        self.rate_bps: float | None = None
        self.stats = ProxyStats()
        self.mode = "up"  # up, cut, black-hole
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._server: asyncio.base_events.Server | None = None
        self._late: set[asyncio.Task] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._flowing.set()
        for link in list(self._links):
            link.cancel()
            link.close_now()
        for t in self._late:
            t.cancel()
        self._links.clear()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- faults -----------------------------------------------------------------------------

    def cut(self, *, server_notices_after_s: float = 0.0) -> None:
        """Closes every connection and refuses new ones until :meth:`restore`. With
        ``server_notices_after_s``, the server's side of each connection is held open
        (silent) that long before it is closed: the client knows, the server not yet."""
        self.mode = "cut"
        self.stats.cuts += 1
        for link in list(self._links):
            self._links.discard(link)
            link.cancel()
            _reset(link.client_w)
            if server_notices_after_s > 0:
                task = asyncio.create_task(self._close_later(link, server_notices_after_s))
                self._late.add(task)
                task.add_done_callback(self._late.discard)
            else:
                _reset(link.server_w)

    async def _close_later(self, link: _Link, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            _reset(link.server_w)

    def black_hole(self) -> None:
        """Stops forwarding in both directions; sockets stay open, bytes wait."""
        self.mode = "black-hole"
        self._flowing.clear()

    def restore(self) -> None:
        """Forwards again, accepts new connections; delay and rate stay as set."""
        self.mode = "up"
        self._flowing.set()

    # -- connections ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            self.stats.refused += 1
            _reset(writer)
            return
        try:
            server = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            _reset(writer)  # the server is down: as a refused connection looks
            return
        for w in (writer, server[1]):
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.mode == "cut":  # cut while connecting
            _reset(writer)
            _reset(server[1])
            return
        self.stats.connections += 1
        link = _Link(self, (reader, writer), server)
        self._links.add(link)
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
