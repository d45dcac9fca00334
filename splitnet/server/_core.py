"""The server's logic, without sockets: requests in, responses or ``InferError`` out."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np

from splitnet import codec
from splitnet._errors import ConfigError, SplitnetError
from splitnet.server._admission import (
    Admission,
    Ticket,
    answer_bytes,
    default_inflight_bytes,
    max_payload_bytes,
    max_request_bytes,
)
from splitnet.server._batcher import DynamicBatcher
from splitnet.server._explain import ExplainError, HeatmapRequest, check_heatmap_request
from splitnet.server._metrics import UNKNOWN_MODEL, Metrics
from splitnet.server._repository import FrameInput, TailModel
from splitnet.server._representatives import (
    HASH_PARAMETER,
    RESPONSE_PARAMETER,
    RepresentativeQuery,
    Representatives,
    candidate_classes,
)
from splitnet.wire import (
    PAYLOAD_INPUT,
    get_parameter,
    serialize_bytes,
    set_parameter,
    to_datatype,
)
from splitnet.wire import (
    inference_pb2 as pb,
)

__all__ = [
    "CLASSIFICATION",
    "InferError",
    "InferenceCore",
    "default_tail_instances",
    "default_tail_threads",
    "with_request_id",
]

# Triton's classification extension: an output asked for with this parameter (N)
# comes back as the top N classes, BYTES "score:index[:label]"
CLASSIFICATION = "classification"


class InferError(Exception):
    """A request that failed, with the gRPC status it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def with_request_id(message: str, request_id: str) -> str:
    """An error message that names the request it answers, for clients that show only the
    message (tritonclient's stream callback, its HTTP and unary gRPC exceptions)."""
    return f"{message} (request id {request_id!r})" if request_id else message


class _ResponseCache:
    """The last responses by key, bounded in count and bytes, so that a frame re-sent
    after a reconnect is answered without running it twice.

    The key (see :meth:`InferenceCore.infer`) holds the caller's identity and a
    digest of the payload, so an entry answers only the caller that sent the
    frame, and only for the payload it sent: no client reads or plants another's.
    """

    def __init__(self, max_items: int = 1024, max_bytes: int = 256 << 20) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[tuple, pb.ModelInferResponse] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> pb.ModelInferResponse | None:
        return self._items.get(key)

    def put(self, key: tuple, response: pb.ModelInferResponse) -> None:
        size = response.ByteSize()
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.ByteSize()
        self._items[key] = response
        self._bytes += size
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.ByteSize()


class InferenceCore:
    """Decodes payloads, checks them against the bundle, batches, runs tails, answers.

    Args:
        models: served models by name.
        max_batch, max_delay_ms: dynamic batching (per model; capped by what
            each tail allows).
        metrics: Prometheus metrics to update (optional).
        decode_threads: threads decoding payloads.
        tail_threads: torch's intra-op threads for the tails (``None``: torch's default,
            one per core); see :func:`default_tail_threads`.
        tail_instances: batches of one model that run at once, each in its own thread
            with ``tail_threads`` threads (Triton's instance count).
        max_inflight_bytes: the budget of bytes in flight (see
            :mod:`splitnet.server._admission`); ``None``: 16 of the costliest
            requests the bundles allow, and at least 64 MiB.
    """

    def __init__(
        self,
        models: Mapping[str, TailModel],
        *,
        max_batch: int = 8,
        max_delay_ms: float = 5.0,
        metrics: Metrics | None = None,
        decode_threads: int = 2,
        tail_threads: int | None = None,
        tail_instances: int = 1,
        max_inflight_bytes: int | None = None,
        representatives: Representatives | None = None,
    ) -> None:
        self.models = dict(models)  # the default version of each name (see ``versions``)
        self.representatives = representatives  # serve --index (see _representatives)
        self.metrics = metrics
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        # the tails run in ``tail_instances`` threads, each with ``tail_threads`` intra-op threads (None: as
        # torch chose): fewer than the cores leaves decoding and gRPC a core; on a busy CPU
        # more OpenMP threads than free cores wait at every layer's barrier
        if tail_instances < 1:
            raise ConfigError(f"tail_instances must be >= 1, got {tail_instances}")
        self.tail_threads, self.tail_instances = tail_threads, tail_instances
        self._compute_pool = ThreadPoolExecutor(
            tail_instances,
            thread_name_prefix="tail",
            initializer=_set_torch_threads,
            initargs=(tail_threads,),
        )
        self.max_batch, self.max_delay_ms = max_batch, max_delay_ms
        # every loaded version by name and version; a request without a version gets
        # the highest one (``models``), a request naming one gets that one
        self.versions: dict[str, dict[str, TailModel]] = {
            name: {m.version: m} for name, m in self.models.items()
        }
        # a batcher per loaded model object: a request runs on the tail it was decoded
        # for, even when another version of its name replaced it meanwhile
        self._batcher_of: dict[TailModel, DynamicBatcher] = {
            m: self._batcher(m) for m in self.models.values()
        }
        # the default version's batcher by name
        self._batchers = {name: self._batcher_of[m] for name, m in self.models.items()}
        self._users: dict[TailModel, int] = {}  # requests holding a model, until answered
        self._unused: dict[TailModel, asyncio.Event] = {}
        self._cache = _ResponseCache()
        self._inflight: dict[tuple, asyncio.Future] = {}
        # what a request may hold: its message (at most max_request_bytes), its decoded
        # tensors and its answer
        self._limits = {name: _limits(m) for name, m in self.models.items()}
        self.max_request_bytes = max(
            (lim.request_bytes for lim in self._limits.values()), default=0
        )
        if max_inflight_bytes is None:
            max_inflight_bytes = default_inflight_bytes(
                lim.request_bytes + lim.held_bytes for lim in self._limits.values()
            )
        self.admission = Admission(max_inflight_bytes)

    def _batcher(self, m: TailModel) -> DynamicBatcher:
        return DynamicBatcher(
            m.run_batch,
            max_batch=max(1, min(self.max_batch, m.max_batch)),
            max_delay_s=self.max_delay_ms / 1000,
            executor=self._compute_pool,
            instances=self.tail_instances,
        )

    def add_model(self, model: TailModel) -> None:
        """Serves ``model`` as version ``model.version`` of its name (replacing a loaded
        copy of that version: the requests it has taken still finish on it). The highest
        loaded version becomes the default."""
        old = self.versions.get(model.name, {}).get(model.version)
        self._batcher_of[model] = self._batcher(model)
        self.versions.setdefault(model.name, {})[model.version] = model
        self._limits[model.name] = _limits_of(self.versions[model.name].values())
        self._choose_default(model.name)
        if old is not None:
            asyncio.ensure_future(self._retire(old))

    async def remove_model(self, name: str, version: str | None = None) -> None:
        """Stops taking requests for ``name`` (one ``version``, or all), then waits until
        the requests it has taken are answered and unloads it."""
        loaded = self.versions.get(name, {})
        gone = [loaded.pop(v) for v in list(loaded) if version in (None, v)]
        if not loaded:
            self.versions.pop(name, None)
            self._limits.pop(name, None)
        self._choose_default(name)
        await asyncio.gather(*(self._retire(m) for m in gone))

    def _choose_default(self, name: str) -> None:
        loaded = self.versions.get(name)
        if not loaded:
            self.models.pop(name, None)
            self._batchers.pop(name, None)
            return
        best = loaded[max(loaded, key=int)]
        self.models[name] = best
        self._batchers[name] = self._batcher_of[best]

    async def _retire(self, model: TailModel) -> None:
        """Waits for the requests holding ``model``, then stops its batcher and drops it."""
        if self._users.get(model):
            event = self._unused.setdefault(model, asyncio.Event())
            await event.wait()
        batcher = self._batcher_of.pop(model, None)
        if batcher is not None:
            await batcher.stop()

    def _hold(self, model: TailModel | None) -> TailModel | None:
        if model is not None:
            self._users[model] = self._users.get(model, 0) + 1
        return model

    def _release(self, model: TailModel | None) -> None:
        if model is None:
            return
        left = self._users[model] - 1
        if left:
            self._users[model] = left
            return
        del self._users[model]
        event = self._unused.pop(model, None)
        if event is not None:
            event.set()

    def resolve(self, name: str, version: str = "") -> TailModel | None:
        """The model a request for ``name`` (``version``: ``""`` for the default) runs on."""
        if version == "":
            return self.models.get(name)
        return self.versions.get(name, {}).get(version)

    def model(self, name: str, version: str = "") -> TailModel:
        """The served model ``name`` at ``version`` (``""``: the highest loaded one);
        NOT_FOUND for an unknown name or a version that is not loaded."""
        model = self.resolve(name, version)
        if model is not None:
            return model
        if name in self.versions:
            raise InferError(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} has no version {version!r}; served: "
                f"{', '.join(sorted(self.versions[name], key=int))}",
            )
        known = ", ".join(sorted(self.models)) or "none"
        raise InferError(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; served: {known}")

    def cost(self, request: pb.ModelInferRequest) -> int:
        """What ``request`` holds in flight: its message, its decoded tensors, its answer."""
        limits = self._limits.get(request.model_name)
        return request.ByteSize() + (limits.held_bytes if limits is not None else 0)

    def admit(self, request: pb.ModelInferRequest) -> Ticket:
        """Charges ``request`` to the budget of bytes in flight until the ticket is released.

        Raises:
            InferError: RESOURCE_EXHAUSTED when the budget cannot take it now.
        """
        cost = self.cost(request)
        ticket = self.admission.admit(cost)
        if ticket is None:
            self._count(request.model_name, "resource_exhausted")
            raise InferError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {self.admission.used} of {self.admission.max_bytes} bytes in "
                f"flight, this request needs {cost}; retry later",
            )
        return ticket

    async def infer(
        self,
        request: pb.ModelInferRequest,
        *,
        caller: str = "",
        ticket: Ticket | None = None,
    ) -> pb.ModelInferResponse:
        """Answers one request; raises :class:`InferError` with the right status.

        Args:
            request: the request.
            caller: who asked (:func:`~splitnet.server._admission.caller_identity`);
                the answer cache answers only the same caller.
            ticket: the request's charge from :meth:`admit`, released by the caller
                once the answer is written; without one, ``infer`` charges the
                request itself for as long as it runs.
        """
        own = ticket is None
        if own:
            ticket = self.admit(request)
        # the version this request runs on is held until it is answered, so that a newer
        # version's arrival unloads it only afterwards (``_infer`` resolves the same model:
        # nothing is awaited in between)
        held = self._hold(self.resolve(request.model_name, request.model_version))
        try:
            return await self._infer(request, caller)
        finally:
            self._release(held)
            if own:
                ticket.release()

    async def _infer(self, request: pb.ModelInferRequest, caller: str) -> pb.ModelInferResponse:
        model_name = request.model_name
        try:
            model = self.model(model_name, request.model_version)
            # every check, the payload's decoding included, comes before the cache: a
            # request that is not a valid frame gets no answer, cached or not
            prepared = await self._prepare(model, request)
            key = None
            if prepared.frame_key is not None:
                key = (
                    model_name,
                    model.version,
                    caller,
                    *prepared.frame_key,
                    prepared.digest,
                    prepared.asked,
                )
                cached = self._cache.get(key)
                if cached is not None:
                    self._count(model_name, "duplicate")
                    return _for_request(cached, request)
                pending = self._inflight.get(key)
                if pending is not None:
                    self._count(model_name, "duplicate")
                    return _for_request(await asyncio.shield(pending), request)
            if key is None:
                response = await self._run(model, request, prepared)
            else:
                response = await self._run_once(key, model, request, prepared)
        except InferError as e:
            self._count(model_name, e.code.name.lower())
            raise
        except Exception as e:  # a bug or a failing tail: INTERNAL, and keep serving
            self._count(model_name, "internal")
            raise InferError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}") from e
        self._count(model_name, "ok")
        return response

    async def _run_once(
        self, key: tuple, model: TailModel, request: pb.ModelInferRequest, prepared: _Prepared
    ) -> pb.ModelInferResponse:
        """Runs a frame; requests for the same key meanwhile wait for this answer.

        The frame runs in a task of its own: when the stream that sent it first is
        cancelled (a dropped link), the copy re-sent on a new stream still gets the
        answer, instead of the cancellation (issue 13, item 1)."""
        task = asyncio.ensure_future(self._run(model, request, prepared))
        self._inflight[key] = task
        self._hold(model)  # the task may outlive the request that started it

        def done(t: asyncio.Future) -> None:
            self._release(model)
            self._inflight.pop(key, None)
            if not t.cancelled() and t.exception() is None:
                self._cache.put(key, t.result())

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _prepare(self, model: TailModel, request: pb.ModelInferRequest) -> _Prepared:
        """Every check of ``request``, cheap ones first, then the payload's decoding."""
        wanted = {o.name for o in request.outputs}
        valid = {name for name, _, _ in model.output_metadata()} | {"heatmap"}
        unknown = wanted - valid
        if unknown:
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model {model.name} has no output {sorted(unknown)[0]!r}; outputs: {', '.join(sorted(valid))}",
            )
        confidence = getattr(model, "confidence", None)
        top_k = get_parameter(request.parameters, "top_k", confidence.top_k if confidence else 5)
        if not _positive_int(top_k):
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be a positive integer, got {top_k!r}"
            )
        cap = _fraction(request, "min_confidence")
        margin = _fraction(request, "min_margin")
        try:
            heatmap = check_heatmap_request(model, wanted, request.parameters)
        except ExplainError as e:
            raise InferError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        classification = _classification(model, request)
        representative = _representative_query(self.representatives, model, request)
        frame_key = _frame_key(request)
        payload = _payload(request)
        if self.metrics is not None:
            self.metrics.payload_bytes.labels(model.name).observe(len(payload))
        digest = hashlib.blake2b(payload, digest_size=16).digest() if frame_key else b""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            tensors = await loop.run_in_executor(
                self._decode_pool, _decode_and_check, model, payload
            )
        except (codec.CodecError, SplitnetError, ValueError) as e:
            raise InferError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        decode_s = time.perf_counter() - start
        return _Prepared(
            tensors,
            wanted,
            top_k,
            classification,
            frame_key,
            digest,
            cap=cap,
            margin=margin,
            decode_s=decode_s,
            representative=representative,
            heatmap=heatmap,
        )

    async def _run(
        self, model: TailModel, request: pb.ModelInferRequest, prepared: _Prepared
    ) -> pb.ModelInferResponse:
        wanted = prepared.wanted
        top_k = prepared.top_k
        frame = FrameInput(
            prepared.tensors,
            probabilities="probabilities" in wanted,
            top_k=max(top_k, *prepared.classification.values(), 0),
            cap=prepared.cap,
            margin=prepared.margin,
            heatmap=prepared.heatmap.wanted,
            heatmap_class=prepared.heatmap.target,
            heatmap_layer=prepared.heatmap.layer,
        )
        result, stats = await self._batcher_of[model].submit(frame)
        answered = time.perf_counter()
        if model.task == "segmentation" and not wanted:
            wanted = {"mask"}
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        for key in ("device_id", "frame_id"):
            value = get_parameter(request.parameters, key)
            if value is not None:
                set_parameter(response.parameters, key, value)
        # decimal strings: string_param is in every v2 client's proto (KServe's lacks
        # Triton's double_param), and float() reads them
        set_parameter(response.parameters, "queue_ms", f"{stats.queue_s * 1000:.3f}")
        set_parameter(response.parameters, "compute_ms", f"{stats.compute_s * 1000:.3f}")
        set_parameter(response.parameters, "batch_size", stats.batch_size)
        if prepared.representative is not None:
            candidates = candidate_classes(result["classes"], result["probabilities"], top_k)
            names = model.manifest.output.class_names
            doc = self.representatives.attach(prepared.representative, candidates, names)
            set_parameter(response.parameters, RESPONSE_PARAMETER, doc)
        for name, array in result.items():
            if wanted and name not in wanted:  # asked-for outputs only
                continue
            count = prepared.classification.get(name)
            if count is not None:
                labels = model.manifest.output.class_names
                items = _classes(array[:count], result["classes"][:count], labels)
                response.outputs.add(name=name, datatype="BYTES", shape=[len(items)])
                response.raw_output_contents.append(serialize_bytes(items))
                continue
            if model.task != "segmentation" and name != "heatmap":
                array = array[:top_k]  # a class_count asked for more than top_k
            array = np.ascontiguousarray(array)
            response.outputs.add(
                name=name, datatype=to_datatype(array.dtype), shape=list(array.shape)
            )
            response.raw_output_contents.append(
                array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            )
        if self.metrics is not None:
            self.metrics.observe_batch(
                model.name,
                stats,
                input_s=prepared.decode_s,
                output_s=time.perf_counter() - answered,
            )
        return response

    def _count(self, model: str, status: str) -> None:
        if self.metrics is not None:
            # a client-chosen name is no label: one series per name would grow without bound
            label = model if model in self.models else UNKNOWN_MODEL
            self.metrics.requests.labels(label, status).inc()

    async def close(self) -> None:
        """Finishes what is queued, then stops the batchers and thread pools."""
        for batcher in list(self._batcher_of.values()):
            await batcher.stop()
        self._decode_pool.shutdown(wait=True)
        self._compute_pool.shutdown(wait=True)


def default_tail_threads(device: str) -> int | None:
    """The tails' intra-op threads when ``serve`` is not told: on the CPU half the
    cores this process may use (at least one), so that payload decoding, gRPC and the
    event loop keep the other half; on a GPU, torch's default (``None``).

    Measured on a 2-core CPU shared with other jobs (perf_analyzer, gRPC, unet-vgg16
    tail, 3 interleaved rounds; benchmarks/results/batching/): one tail thread instead
    of torch's two gave p95 at concurrency 1 of 171-321 ms instead of 300-1036 ms, and
    more throughput at concurrency 8 too (3.0-6.7 against 2.5-3.6 infer/s): two OpenMP
    threads wait at every layer for a core that decoding or another process holds.
    """
    if device != "cpu":
        return None
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // 2)


def default_tail_instances(device: str) -> int:
    """Batches run at once when ``serve`` is not told: two on a CPU of two cores or more
    (each with :func:`default_tail_threads`, so the tails can fill every core under
    load while one request at a time still gets a core to itself), one on a GPU.

    Measured as :func:`default_tail_threads` was: with one tail thread, two instances
    gave 3.9-5.8 infer/s at concurrency 8 against 2.6-5.6 with one, concurrency 1
    unchanged.
    """
    if device != "cpu":
        return 1
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 if (cores or 1) >= 2 else 1


def _set_torch_threads(n: int | None) -> None:
    """The compute thread's initializer: torch's intra-op threads for the tails."""
    if n is not None:
        import torch

        torch.set_num_threads(n)


@dataclass(frozen=True)
class _Limits:
    """What one model's requests may cost: the largest message, and what a request holds
    besides its message (decoded tensors, the answer)."""

    request_bytes: int
    held_bytes: int


def _limits_of(models) -> _Limits:
    """What a request to any of ``models`` (the versions of one name) may cost."""
    each = [_limits(m) for m in models]
    return _Limits(max(x.request_bytes for x in each), max(x.held_bytes for x in each))


def _limits(model: TailModel) -> _Limits:
    shapes = [tuple(t.shape) for t in model.manifest.crossing]
    answer = answer_bytes(model.output_metadata(), model.manifest.num_classes or 1)
    return _Limits(
        max_request_bytes(max_payload_bytes(shapes)), 4 * model.crossing_elements + answer
    )


@dataclass(frozen=True)
class _Prepared:
    """A checked request: its decoded tensors and what it asked for."""

    tensors: list[np.ndarray]
    wanted: set[str]
    top_k: int
    classification: dict[str, int]  # output name -> class count
    frame_key: tuple[str, int] | None
    digest: bytes
    cap: float | None = None  # min_confidence / min_margin asked for; None: the bundle's
    margin: float | None = None
    decode_s: float = 0.0  # the payload's decoding and checks (Triton's compute_input)
    representative: RepresentativeQuery | None = None
    heatmap: HeatmapRequest = HeatmapRequest()

    @property
    def asked(self) -> tuple:
        """What shapes the answer besides the payload: a frame re-sent with other
        outputs asked for is not answered from the cache."""
        return (
            self.top_k,
            tuple(sorted(self.wanted)),
            tuple(sorted(self.classification.items())),
            self.cap,
            self.margin,
            self.heatmap,
            None
            if self.representative is None
            else (self.representative.method, self.representative.packed.tobytes()),
        )


def _representative_query(
    representatives: Representatives | None, model: TailModel, request: pb.ModelInferRequest
) -> RepresentativeQuery | None:
    """The request's frame hash for representative search; INVALID_ARGUMENT when bad."""
    if representatives is None:
        if get_parameter(request.parameters, HASH_PARAMETER) is not None:
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{HASH_PARAMETER}: this server has no representative index (serve --index)",
            )
        return None
    return representatives.parse(request.parameters, model.task)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _fraction(request: pb.ModelInferRequest, key: str) -> float | None:
    """A request parameter in [0, 1] (a number, or a decimal string: KServe's proto has
    no double parameter); None when absent."""
    value = get_parameter(request.parameters, key)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not 0 <= number <= 1:
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{key} must be a number in [0, 1], got {value!r}"
        )
    return number


def _classification(model: TailModel, request: pb.ModelInferRequest) -> dict[str, int]:
    """The class count asked for per output (Triton's classification extension):
    a classifier's ``probabilities`` only, the scores it is about."""
    counts = {}
    for out in request.outputs:
        count = get_parameter(out.parameters, CLASSIFICATION)
        if count is None:
            continue
        if not _positive_int(count):
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output {out.name!r}: class count must be a positive integer, got {count!r}",
            )
        if model.task == "segmentation" or out.name != "probabilities":
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output {out.name!r} of model {model.name} cannot be classified: a class "
                "count applies to a classifier's 'probabilities'",
            )
        counts[out.name] = count
    return counts


def _classes(scores: np.ndarray, indices: np.ndarray, labels: tuple[str, ...]) -> list[bytes]:
    """Triton's classification strings: ``"score:index"``, ``":label"`` when the bundle
    names its classes."""
    out = []
    for score, index in zip(scores.tolist(), indices.tolist(), strict=True):
        text = f"{score:f}:{index}"
        if 0 <= index < len(labels):
            text += f":{labels[index]}"
        out.append(text.encode())
    return out


def _frame_key(request: pb.ModelInferRequest) -> tuple[str, int] | None:
    """``(device_id, frame_id)`` when both are given; INVALID_ARGUMENT when malformed."""
    device_id = get_parameter(request.parameters, "device_id")
    frame_id = get_parameter(request.parameters, "frame_id")
    if device_id is None or frame_id is None:
        return None
    if isinstance(frame_id, str) and frame_id.strip().lstrip("-").isdigit():
        frame_id = int(frame_id)
    if not isinstance(frame_id, int) or isinstance(frame_id, bool):
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT, f"frame_id must be an integer, got {frame_id!r}"
        )
    if isinstance(device_id, bool) or not isinstance(device_id, str | int):
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"device_id must be a string or an integer, got {device_id!r}",
        )
    return str(device_id), frame_id


def _for_request(
    response: pb.ModelInferResponse, request: pb.ModelInferRequest
) -> pb.ModelInferResponse:
    """A cached or shared answer, with this request's id."""
    if response.id == request.id:
        return response
    out = pb.ModelInferResponse()
    out.CopyFrom(response)
    out.id = request.id
    return out


def _payload(request: pb.ModelInferRequest) -> bytes:
    names = [t.name for t in request.inputs]
    if names != [PAYLOAD_INPUT]:
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a splitnet model takes one input {PAYLOAD_INPUT!r} (UINT8, shape [-1]), got {names}",
        )
    tensor = request.inputs[0]
    if tensor.datatype != "UINT8":
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {PAYLOAD_INPUT!r} must be UINT8, got {tensor.datatype}",
        )
    if len(request.raw_input_contents) > 1:
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{len(request.raw_input_contents)} raw input contents for 1 input",
        )
    if request.raw_input_contents:
        if len(tensor.contents.uint_contents):
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input {PAYLOAD_INPUT!r} has both raw and typed contents",
            )
        payload = request.raw_input_contents[0]
    else:
        values = tensor.contents.uint_contents
        if len(values) and max(values) > 255:
            raise InferError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input {PAYLOAD_INPUT!r} is UINT8, but uint_contents holds {max(values)}",
            )
        payload = bytes(values)
    if list(tensor.shape) != [len(payload)]:
        raise InferError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {PAYLOAD_INPUT!r} has shape {list(tensor.shape)} but {len(payload)} bytes",
        )
    return payload


def _decode_and_check(model: TailModel, payload: bytes) -> list[np.ndarray]:
    # a payload may not declare more elements than the bundle's tensors hold: no hostile
    # header makes the server allocate more than a real frame needs
    # and no other shapes than the bundle's: a header declaring other tensors (say, one
    # rANS model per element) is refused before any entropy model is built
    shapes = [tuple(t.shape) for t in model.manifest.crossing]
    return model.check(
        model.codec.decode(payload, max_elements=model.crossing_elements, shapes=shapes)
    )
