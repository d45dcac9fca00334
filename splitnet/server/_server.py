"""Putting the server together: gRPC (aio), REST (uvicorn, in the same loop), health,
reflection, metrics, auth, TLS."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitnet._errors import ConfigError
from splitnet.server._auth import TokenAuthInterceptor
from splitnet.server._core import InferenceCore, default_tail_instances, default_tail_threads
from splitnet.server._health import HealthServicer
from splitnet.server._http import HttpServer, create_app
from splitnet.server._metrics import Metrics, serve_metrics
from splitnet.server._model_repository import ModelRepository, parse_version_policy
from splitnet.server._reflection import enable_reflection
from splitnet.server._repository import TailModel, load_repository
from splitnet.server._service import InferenceService
from splitnet.server._servicer import InferenceServicer
from splitnet.wire import inference_pb2 as pb
from splitnet.wire import inference_pb2_grpc as pb_grpc
from splitnet.wire import read_token
from splitnet.wire._net import check_tls_files, listen_error, parse_port

__all__ = ["InferenceServer", "ServerConfig"]

log = logging.getLogger("splitnet.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


@dataclass(frozen=True)
class ServerConfig:
    """What ``splitnet serve`` takes.

    Attributes:
        repository: a folder of bundles (each a folder with ``manifest.json``).
        host, port: where to listen (port 0: any free port, see ``InferenceServer.port``).
        device: ``"cuda"``, ``"cpu"`` or ``"auto"`` (CUDA when present).
        precision: ``"fp32"``, or ``"fp16"``/``"bf16"`` autocast for the tails.
        max_batch, max_delay_ms: dynamic batching.
        metrics_port: Prometheus HTTP port (``None``: no metrics endpoint; 0: any free port).
        http_port: the KServe v2 REST port (``None``: no REST endpoint; 0: any free
            port, see ``InferenceServer.http_port``); the same token and TLS as gRPC.
        token_file: require ``authorization: Bearer <token>``.
        tls_cert, tls_key, tls_ca: TLS; with ``tls_ca`` clients must present a certificate.
        max_message_mb: the largest response message, and a cap on the largest
            request (which is otherwise what the largest bundle's payload can need).
        grace_s: how long a shutdown lets calls in flight finish.
        max_inflight_bytes: the budget of bytes held by requests in flight
            (``None``: 16 of the costliest requests the bundles allow, at least
            64 MiB); a request past it is answered RESOURCE_EXHAUSTED.
        max_stream_inflight: requests of one stream in flight, answers not yet
            written included.
        poll_interval_s: poll the repository for new, changed and removed versions
            every this many seconds (``None``: only at start and on ``RepositoryModelLoad``).
        version_policy: which versions of each model are loaded: ``latest:N``, ``all``
            or ``specific:V,V`` (see :mod:`splitnet.server._model_repository`).
        decode_threads: threads that decode and check payloads (entropy decoding runs
            without the GIL; more threads than cores gain nothing).
        tail_threads: torch's intra-op threads for the tails (``None``: on the CPU half
            the cores, at least one; on a GPU torch's default), see
            :func:`splitnet.server._core.default_tail_threads`.
        tail_instances: batches of one model that run at once, each in its own thread
            (Triton's instance count; ``None``: 2 on a CPU of 2 cores or more, else 1),
            see :func:`splitnet.server._core.default_tail_instances`.
        index: a representative index (``splitnet index build``): classification
            answers to requests carrying a frame hash get the nearest reference of each
            top-k class (see :mod:`splitnet.server._representatives`).
    """

    repository: str | Path
    host: str = "127.0.0.1"
    port: int = 8001
    device: str = "auto"
    precision: str = "fp32"
    max_batch: int = 8
    max_delay_ms: float = 5.0
    metrics_port: int | None = 8002
    http_port: int | None = None
    token_file: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    tls_ca: str | Path | None = None
    max_message_mb: int = 64
    grace_s: float = 10.0
    max_inflight_bytes: int | None = None
    max_stream_inflight: int = 64
    poll_interval_s: float | None = None
    version_policy: str = "latest:1"
    decode_threads: int = 2
    tail_threads: int | None = None
    tail_instances: int | None = None
    index: str | Path | None = None


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cuda", "cpu") and not name.startswith("cuda:"):
        raise ConfigError(f"--device must be cuda, cpu or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available here")
    return name


class InferenceServer:
    """A running splitnet server. ``await start()``, then ``await stop()`` (or ``wait()``)."""

    def __init__(self, config: ServerConfig, *, models: dict[str, TailModel] | None = None) -> None:
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if config.tls_ca is not None and config.tls_cert is None:
            raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
        parse_port(config.port, option="--port")
        for option, value in (
            ("--http-port", config.http_port),
            ("--metrics-port", config.metrics_port),
        ):
            if value is not None:
                parse_port(value, option=option)
        if config.poll_interval_s is not None and config.poll_interval_s <= 0:
            raise ConfigError(f"--poll-interval must be > 0 s, got {config.poll_interval_s}")
        if config.decode_threads < 1:
            raise ConfigError(f"--decode-threads must be >= 1, got {config.decode_threads}")
        if config.tail_threads is not None and config.tail_threads < 1:
            raise ConfigError(f"--tail-threads must be >= 1, got {config.tail_threads}")
        if config.tail_instances is not None and config.tail_instances < 1:
            raise ConfigError(f"--tail-instances must be >= 1, got {config.tail_instances}")
        policy = parse_version_policy(config.version_policy)
        self.config = config
        self.device = _device(config.device)
        self.models = (
            models
            if models is not None
            else load_repository(config.repository, device=self.device, precision=config.precision)
        )
        self.metrics = Metrics.create()
        representatives = None
        if config.index is not None:
            from splitnet.server._representatives import Representatives

            representatives = Representatives.load(config.index)
        self.core = InferenceCore(
            self.models,
            max_batch=config.max_batch,
            max_delay_ms=config.max_delay_ms,
            metrics=self.metrics,
            max_inflight_bytes=config.max_inflight_bytes,
            decode_threads=config.decode_threads,
            tail_threads=(
                config.tail_threads
                if config.tail_threads is not None
                else default_tail_threads(self.device)
            ),
            tail_instances=(
                config.tail_instances
                if config.tail_instances is not None
                else default_tail_instances(self.device)
            ),
            representatives=representatives,
        )
        self.metrics.requests.known = lambda: self.core.models
        # the protocol without a transport: the gRPC servicer and the REST app share it
        self.service = InferenceService(
            self.core,
            repository=ModelRepository(
                config.repository,
                self.core,
                device=self.device,
                precision=config.precision,
                policy=policy,
            ),
            statistics=self.metrics.statistics,
        )
        self.servicer = InferenceServicer(
            self.core, service=self.service, max_stream_inflight=config.max_stream_inflight
        )
        self._poller: asyncio.Task | None = None
        self.health = HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
        self._metrics_server = None

    async def start(self) -> None:
        cfg = self.config
        repository = self.service.repository
        if cfg.poll_interval_s is not None or cfg.version_policy != "latest:1":
            await repository.poll()  # the versions the policy wants, before the first call
        if cfg.poll_interval_s is not None:
            self._poller = asyncio.create_task(repository.watch(cfg.poll_interval_s))
        interceptors = [TokenAuthInterceptor(read_token(cfg.token_file))] if cfg.token_file else []
        limit = cfg.max_message_mb << 20
        # no request bigger than the largest bundle's payload can need gets received (when
        # polling, versions with larger payloads may come: the cap, and the bundle's checks)
        receive = limit if cfg.poll_interval_s else min(limit, self.core.max_request_bytes or limit)
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", receive),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        enable_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
            self._server,
        )
        address = f"[{cfg.host}]:{cfg.port}" if ":" in str(cfg.host) else f"{cfg.host}:{cfg.port}"
        # checked here, not left to gRPC: it says only "failed to bind" for a bad file
        check_tls_files(cert=cfg.tls_cert, key=cfg.tls_key, ca=cfg.tls_ca)
        try:
            self.port = self._bind(address)
        except RuntimeError:  # grpc's "Failed to bind to address ..."
            self.port = 0
        if not self.port:
            self._server = None
            raise OSError(f"cannot listen on {address}: {listen_error(cfg.host, cfg.port)}")
        if cfg.http_port is not None:
            # bound before gRPC starts: a taken port leaves nothing running
            app = create_app(
                self.service,
                token=read_token(cfg.token_file) if cfg.token_file else None,
                # a payload's JSON data takes up to 4 characters per byte
                max_body_bytes=min(limit, 4 * receive + (1 << 20)),
            )
            self._http = HttpServer(
                app,
                cfg.host,
                cfg.http_port,
                tls_cert=cfg.tls_cert,
                tls_key=cfg.tls_key,
                tls_ca=cfg.tls_ca,
            )
            self.http_port = self._http.port
        await self._server.start()
        if self._http is not None:
            await self._http.start()
        for service in ("", SERVICE_NAME):
            await _maybe_await(self.health.set(service, health_pb2.HealthCheckResponse.SERVING))
        if cfg.metrics_port is not None:
            self._metrics_server = serve_metrics(self.metrics.registry, cfg.host, cfg.metrics_port)
            self.metrics_port = self._metrics_server.server_port
        log.info(
            "serving %s on %s:%s (%s)%s",
            ", ".join(self.models),
            cfg.host,
            self.port,
            self.device,
            f", REST on :{self.http_port}" if self.http_port else "",
        )

    def _bind(self, address: str) -> int:
        cfg = self.config
        assert self._server is not None
        if cfg.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())],
                root_certificates=Path(cfg.tls_ca).read_bytes() if cfg.tls_ca else None,
                require_client_auth=cfg.tls_ca is not None,
            )
            return self._server.add_secure_port(address, credentials)
        return self._server.add_insecure_port(address)

    async def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets those in flight finish (``grace`` seconds), shuts down."""
        if self._server is None:
            return
        grace = self.config.grace_s if grace is None else grace
        self.service.ready = False
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await self.health.close()  # NOT_SERVING, and open Watch calls end
        stops = [self._server.stop(grace)]
        if self._http is not None:
            stops.append(self._http.stop(grace))
        await asyncio.gather(*stops)
        self._http = None
        await self.core.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def _maybe_await(value) -> None:
    if asyncio.iscoroutine(value):
        await value
