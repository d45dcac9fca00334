"""KServe v2 over HTTP/REST: a Starlette app over the same service and core as gRPC.

The app translates, nothing more: an infer request's JSON (and the binary
tensor extension's bytes after it) becomes the ``ModelInferRequest`` that
gRPC would have carried, :meth:`InferenceCore.infer` answers it, and the
``ModelInferResponse`` goes back as JSON, each output as JSON data or, when
asked for (``binary_data``, ``binary_data_output``), as bytes after the JSON.
Metadata, config, statistics and the repository are the protobuf messages of
:class:`InferenceService` written as JSON (Triton's field names; 64-bit
integers as numbers, as Triton's HTTP endpoint writes them).

Errors are ``{"error": "..."}`` with the HTTP status of the gRPC one (400
for a bad request, 404 for an unknown model or version, 413 for a body past
the limit); an infer error also carries the request's ``id``. The server is
uvicorn, run as a task in the loop that runs grpc.aio.

Routes: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``,
``/v2/models/stats``, ``/v2/models/{m}[/versions/{v}]`` and its ``/ready``,
``/config`` and ``/stats``; ``POST /v2/models/{m}[/versions/{v}]/infer``,
``/v2/repository/index``, ``/v2/repository/models/{m}/load`` and ``/unload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from splitnet.server._core import CLASSIFICATION, InferError, with_request_id
from splitnet.server._service import InferenceService
from splitnet.wire import (
    DATATYPES,
    deserialize_bytes,
    get_parameter,
    serialize_bytes,
    set_parameter,
)
from splitnet.wire import inference_pb2 as pb

__all__ = [
    "HEADER_LENGTH",
    "HttpError",
    "HttpServer",
    "OutputPlan",
    "create_app",
    "message_json",
    "parse_infer_request",
    "write_infer_response",
]

# the binary tensor extension: the JSON's length when bytes follow it
HEADER_LENGTH = "Inference-Header-Content-Length"

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_INT64 = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)


class HttpError(Exception):
    """A request that failed, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- protobuf messages as Triton's JSON ---------------------------------------------------------


def message_json(message: Message) -> dict:
    """``message`` as JSON: proto field names, defaults written, 64-bit integers as numbers
    (proto3's JSON mapping writes them as strings; Triton's HTTP endpoint and
    perf_analyzer read numbers)."""
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(doc, message.DESCRIPTOR)


def _numbers(doc: dict, descriptor) -> dict:
    for f in descriptor.fields:
        if f.name not in doc:
            continue
        value = doc[f.name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            inner = f.message_type.fields_by_name["value"]
            doc[f.name] = {k: _convert(inner, v) for k, v in value.items()}
        elif _repeated(f):
            doc[f.name] = [_convert(f, v) for v in value]
        else:
            doc[f.name] = _convert(f, value)
    return doc


def _repeated(f) -> bool:
    if hasattr(f, "is_repeated"):  # newer protobuf, where ``label`` is deprecated
        return f.is_repeated
    return f.label == FieldDescriptor.LABEL_REPEATED


def _convert(f, value):
    if f.message_type is not None and isinstance(value, dict):
        return _numbers(value, f.message_type)
    if f.cpp_type in _INT64 and isinstance(value, str):
        return int(value)
    return value


# -- infer requests and responses -----------------------------------------------------------------


@dataclass
class OutputPlan:
    """How each output goes back: as bytes after the JSON (binary) or as JSON data."""

    binary: dict[str, bool] = field(default_factory=dict)
    default_binary: bool = False

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.default_binary)


def _bad(message: str) -> HttpError:
    return HttpError(400, message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(data, out: list) -> list:
    for v in data:
        if isinstance(v, list):
            _flatten(v, out)
        else:
            out.append(v)
    return out


# what JSON values each datatype's data may hold
_KIND_CHECK = {
    name: (_is_int, "integers") if dtype.kind in "iu" else (_is_float, "numbers")
    for name, dtype in DATATYPES.items()
    if dtype.kind in "iuf"
}
_KIND_CHECK["BOOL"] = (lambda v: isinstance(v, bool), "booleans")


def _json_input_bytes(name: str, datatype: str, count: int, data) -> bytes:
    """An input's JSON ``data`` as its raw contents (what gRPC's raw_input_contents holds)."""
    flat = _flatten(data, []) if isinstance(data, list) else [data]
    if len(flat) != count:
        raise _bad(f"input {name!r} has {len(flat)} elements of data for its shape ({count})")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise _bad(f"input {name!r} is BYTES: its JSON data must be strings")
        return serialize_bytes(v.encode() for v in flat)
    check, what = _KIND_CHECK[datatype]
    if not all(check(v) for v in flat):
        bad = next(v for v in flat if not check(v))
        raise _bad(f"input {name!r} is {datatype}: its data must be {what}, got {bad!r}")
    dtype = DATATYPES[datatype].newbyteorder("<")
    try:
        return np.array(flat, dtype=dtype).tobytes()
    except (OverflowError, ValueError) as e:
        raise _bad(f"input {name!r} is {datatype}: {e}") from None


def _parameters(doc, where: str) -> dict:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise _bad(f"{where} parameters must be a JSON object")
    for key, value in doc.items():
        if not isinstance(value, bool | int | float | str):
            raise _bad(f"{where} parameter {key!r} must be a boolean, number or string")
    return doc


def _set(params, key: str, value, where: str) -> None:
    try:
        set_parameter(params, key, value)
    except (ValueError, TypeError) as e:
        raise _bad(f"{where} parameter {key!r}: {e}") from None


def parse_infer_request(
    body: bytes, header_length: int | None, model: str, version: str = ""
) -> tuple[pb.ModelInferRequest, OutputPlan]:
    """A REST infer request (JSON, then the binary section if ``header_length`` is given)
    as the ``ModelInferRequest`` gRPC would carry, and how to write its outputs.

    Raises:
        HttpError: 400 with what is wrong (malformed JSON, wrong datatypes or
            shapes, binary sizes that do not add up).
    """
    if header_length is None:
        header_length = len(body)
    if not 0 <= header_length <= len(body):
        raise _bad(
            f"{HEADER_LENGTH} is {header_length}, but the request body has {len(body)} bytes"
        )
    try:
        doc = json.loads(body[:header_length])
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(f"malformed JSON in the request: {e}") from None
    if not isinstance(doc, dict):
        raise _bad("the request must be a JSON object")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise _bad(f"request id must be a string, got {request_id!r}")
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    params = dict(_parameters(doc.get("parameters"), "request"))
    plan = OutputPlan()
    default_binary = params.pop("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise _bad("binary_data_output must be a boolean")
    plan.default_binary = default_binary
    for key, value in params.items():
        _set(request.parameters, key, value, "request")

    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("the request must have a non-empty list of inputs")
    binary = memoryview(body)[header_length:]
    offset = 0
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict):
            raise _bad(f"input {i} must be a JSON object")
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if not isinstance(name, str):
            raise _bad(f"input {i} has no name")
        if datatype != "BYTES" and datatype not in DATATYPES:
            known = ", ".join([*DATATYPES, "BYTES"])
            raise _bad(f"input {name!r}: unknown datatype {datatype!r}; known: {known}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _bad(f"input {name!r}: shape must be a list of non-negative integers")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = _parameters(spec.get("parameters"), f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not _is_int(size) or size < 0:
                raise _bad(f"input {name!r}: binary_data_size must be a non-negative integer")
            if "data" in spec:
                raise _bad(f"input {name!r} has both JSON data and binary_data_size")
            if offset + size > len(binary):
                raise _bad(
                    f"input {name!r}: {size} bytes of binary data from byte {offset} run past "
                    f"the {len(binary)} bytes after the JSON"
                )
            if datatype != "BYTES" and size != count * DATATYPES[datatype].itemsize:
                raise _bad(
                    f"input {name!r}: {size} bytes of binary data for {count} {datatype} "
                    f"elements ({count * DATATYPES[datatype].itemsize} bytes)"
                )
            raw = bytes(binary[offset : offset + size])
            offset += size
        elif "data" in spec:
            raw = _json_input_bytes(name, datatype, count, spec["data"])
        else:
            raise _bad(f"input {name!r} has neither data nor binary_data_size")
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    if offset != len(binary):
        raise _bad(
            f"the inputs' binary_data_size add up to {offset} bytes, but {len(binary)} "
            "follow the JSON"
        )

    outputs = doc.get("outputs", [])
    if not isinstance(outputs, list):
        raise _bad("outputs must be a list")
    for i, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _bad(f"output {i} must be a JSON object with a name")
        name = spec["name"]
        out = request.outputs.add(name=name)
        oparams = _parameters(spec.get("parameters"), f"output {name!r}")
        if "binary_data" in oparams:
            if not isinstance(oparams["binary_data"], bool):
                raise _bad(f"output {name!r}: binary_data must be a boolean")
            plan.binary[name] = oparams["binary_data"]
        if CLASSIFICATION in oparams:
            _set(out.parameters, CLASSIFICATION, oparams[CLASSIFICATION], f"output {name!r}")
    return request, plan


def _json_data(datatype: str, raw: bytes) -> list:
    if datatype == "BYTES":
        return [item.decode("utf-8", errors="replace") for item in deserialize_bytes(raw)]
    return np.frombuffer(raw, dtype=DATATYPES[datatype].newbyteorder("<")).tolist()


def write_infer_response(
    response: pb.ModelInferResponse, plan: OutputPlan
) -> tuple[bytes, int | None]:
    """The REST body of ``response`` and, when binary outputs follow the JSON, its length."""
    doc: dict = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    params = {k: get_parameter(response.parameters, k) for k in response.parameters}
    if params:
        doc["parameters"] = params
    outputs, parts = [], []
    for out, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        entry = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if plan.is_binary(out.name):
            entry["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            entry["data"] = _json_data(out.datatype, raw)
        outputs.append(entry)
    doc["outputs"] = outputs
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not parts:
        return header, None
    return header + b"".join(parts), len(header)


# -- the app ------------------------------------------------------------------------------------


def _error(status: int, message: str, request_id: str = "") -> JSONResponse:
    doc = {"error": message}
    if request_id:
        doc["id"] = request_id
    return JSONResponse(doc, status_code=status)


def caller_identity(request: Request) -> str:
    """The HTTP caller's identity for the answer cache: the sha256 of its bearer token
    (as :func:`splitnet.server._admission.caller_identity` does for gRPC)."""
    return hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed when it says it is (gzip, deflate), at most ``limit`` bytes.

    Raises:
        HttpError: 413 past ``limit``; 400 for a body that does not decompress.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise _bad(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    d = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib headers
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise _bad(f"request body does not decompress ({encoding}): {e}") from None
    if len(out) > limit:
        raise HttpError(413, f"decompressed request body over the limit of {limit} bytes")
    if not d.eof:
        raise _bad(f"request body is a truncated {encoding} stream")
    return out


def create_app(
    service: InferenceService, *, token: str | None = None, max_body_bytes: int = 64 << 20
) -> Starlette:
    """The KServe v2 REST app over ``service`` (routes: see the module's docstring).

    Args:
        service: the protocol without a transport, shared with the gRPC servicer.
        token: require ``Authorization: Bearer <token>`` (health stays open to probes).
        max_body_bytes: the largest request body (after decompression).
    """
    core = service.core
    expected = f"Bearer {token}".encode() if token else None

    def endpoint(
        handler: Callable[[Request], Awaitable[Response]], *, open_: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            if expected is not None and not open_:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    message = "missing bearer token" if not given else "invalid bearer token"
                    return _error(401, message)
            try:
                return await handler(request)
            except HttpError as e:
                return _error(e.status, e.message)
            except InferError as e:
                return _error(HTTP_STATUS.get(e.code, 500), e.message)

        return run

    def names(request: Request) -> tuple[str, str]:
        return request.path_params["model"], request.path_params.get("version", "")

    async def json_doc(request: Request) -> dict:
        body = await read_body(request, max_body_bytes)
        if not body.strip():
            return {}
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _bad(f"malformed JSON in the request: {e}") from None
        if not isinstance(doc, dict):
            raise _bad("the request must be a JSON object")
        return doc

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        if not service.ready:
            return JSONResponse({"ready": False, "error": "server is shutting down"}, 400)
        return JSONResponse({"ready": True})

    async def model_ready(request: Request) -> Response:
        name, version = names(request)
        if not service.model_ready(name, version):
            try:
                core.model(name, version)
                message = "server is shutting down"
            except InferError as e:
                message = e.message
            return JSONResponse({"name": name, "ready": False, "error": message}, 400)
        return JSONResponse({"name": name, "ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(message_json(service.server_metadata()))

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(message_json(service.model_metadata(*names(request))))

    async def model_config(request: Request) -> Response:
        return JSONResponse(message_json(service.model_config(*names(request)).config))

    async def all_statistics(request: Request) -> Response:
        return JSONResponse(message_json(service.model_statistics()))

    async def model_statistics(request: Request) -> Response:
        return JSONResponse(message_json(service.model_statistics(*names(request))))

    async def repository_index(request: Request) -> Response:
        ready_only = (await json_doc(request)).get("ready", False)
        if not isinstance(ready_only, bool):
            raise _bad("'ready' must be a boolean")
        index = message_json(service.repository_index(ready_only))
        return JSONResponse(index.get("models", []))

    async def load(request: Request) -> Response:
        params = _parameters((await json_doc(request)).get("parameters"), "load")
        if any(k == "config" or k.startswith("file:") for k in params):
            raise _bad("a load with an override config or files is not supported")
        await service.load(request.path_params["model"])
        return Response(status_code=200)

    async def unload(request: Request) -> Response:
        _parameters((await json_doc(request)).get("parameters"), "unload")
        await service.unload(request.path_params["model"])
        return Response(status_code=200)

    async def infer(request: Request) -> Response:
        body = await read_body(request, max_body_bytes)
        header = request.headers.get(HEADER_LENGTH)
        if header is not None and not header.strip().isdigit():
            raise _bad(f"{HEADER_LENGTH} must be a non-negative integer, got {header!r}")
        infer_request, plan = parse_infer_request(
            body, int(header) if header is not None else None, *names(request)
        )
        try:
            response = await core.infer(infer_request, caller=caller_identity(request))
        except InferError as e:
            message = with_request_id(e.message, infer_request.id)
            return _error(HTTP_STATUS.get(e.code, 500), message, infer_request.id)
        content, json_length = write_infer_response(response, plan)
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(json_length)},
        )

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2/health/live", endpoint(live, open_=True)),
        Route("/v2/health/ready", endpoint(ready, open_=True)),
        Route("/v2", endpoint(server_metadata)),
        Route("/v2/models/stats", endpoint(all_statistics)),
        Route("/v2/repository/index", endpoint(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", endpoint(load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", endpoint(unload), methods=["POST"]),
    ]
    for base in (model, versioned):
        routes += [
            Route(base, endpoint(model_metadata)),
            # model readiness is a health check too: open to probes
            Route(f"{base}/ready", endpoint(model_ready, open_=True)),
            Route(f"{base}/config", endpoint(model_config)),
            Route(f"{base}/stats", endpoint(model_statistics)),
            Route(f"{base}/infer", endpoint(infer), methods=["POST"]),
        ]

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


# -- the server ---------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket made with ``IPPROTO_TCP`` as its protocol: asyncio turns
    Nagle's algorithm off only on such sockets' connections, and with it on, an answer
    on a kept-alive connection waited ~40 ms for the client's delayed ACK
    (``socket.create_server`` makes its sockets with protocol 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """uvicorn serving an app on ``host:port``, as a task of the running loop.

    Args:
        app: the ASGI app.
        host, port: where to listen (port 0: any free port, see :attr:`port`).
        tls_cert, tls_key, tls_ca: TLS; with ``tls_ca`` clients must present a certificate.
    """

    def __init__(
        self,
        app,
        host: str,
        port: int,
        *,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca: str | Path | None = None,
    ) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            # the process's signals are the caller's (splitnet serve stops gRPC and HTTP
            # together); uvicorn's own handlers would stop only this server
            def capture_signals(self):
                return contextlib.nullcontext()

        tls = {}
        if tls_cert is not None:
            tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
            if tls_ca is not None:
                tls |= {"ssl_ca_certs": str(tls_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, log_level="warning", **tls
        )
        self._server = _Server(config)
        try:
            self._socket = _listen(host, port)
        except OSError as e:
            raise OSError(f"cannot listen on {host}:{port} (HTTP): {e.strerror}") from None
        self.port: int = self._socket.getsockname()[1]
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the HTTP server stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self, grace: float) -> None:
        """Stops taking connections; requests in flight get ``grace`` seconds to finish."""
        if self._task is not None:
            self._server.config.timeout_graceful_shutdown = max(grace, 0.001)
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._socket.close()
