"""The device daemon: frames -> head (OpenVINO) -> codec -> gRPC stream -> results.

No torch: numpy, OpenVINO, grpc and the codec. The daemon keeps every frame it
has sent until the server answers it; when a stream breaks (a server restart,
a network cut) it reconnects with backoff and sends the unanswered frames
again. The server answers a frame it has already run from its cache, and the
daemon writes each frame's result once, so nothing is lost or doubled.

``--bundle`` may be a model folder of versions (``MODEL/1/``, ``MODEL/2/``: the
layout of the server's repository, see :mod:`splitnet.bundle._versions`): the
daemon runs the highest complete version's head and names that version in every
request, so only the matching tail answers. :meth:`DeviceDaemon.reload` (SIGHUP)
reads the folder again and moves to its highest complete version between two
frames: frames encoded before the move keep their request, and with it the
version that answers them (the server keeps it loaded: ``--version-policy
latest:2``); a spooled frame names its version too, so a resumed daemon sends it
to the right tail. A version that is incomplete, broken or of another input is
refused, logged and listed in ``summary.reloads``, and the daemon stays where it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

from splitnet._errors import ConfigError, SplitnetError
from splitnet.bundle import MANIFEST_FILE, BundleError, complete_versions, version_dirs
from splitnet.device._link import LinkEmulator, parse_link
from splitnet.device._runner import DeviceError
from splitnet.device._sources import open_source
from splitnet.device._spool import Spool
from splitnet.wire import (
    encode_infer_request,
    get_parameter,
    output_arrays,
    stream_infer_method,
)
from splitnet.wire import inference_pb2 as pb
from splitnet.wire._client import bearer_metadata, client_channel
from splitnet.wire._net import grpc_target, parse_addresses

__all__ = ["DaemonConfig", "DeviceDaemon", "Summary", "current_bundle", "run_daemon"]

log = logging.getLogger("splitnet.device")

# statuses after which a stream is opened again; any other ends the run (a configuration problem)
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True)
class DaemonConfig:
    """What ``splitnet device`` takes.

    Attributes:
        bundle: the split bundle folder (head IR, manifest, codec), or a folder of its
            versions (``MODEL/VERSION/``: the highest complete one runs, and
            :meth:`DeviceDaemon.reload` moves to a newer one); or ``plan``.
        servers: ``host:port`` addresses; several are balanced with round_robin.
        source: ``synthetic``, an image folder, a video file or a camera index.
        fps: pace the source at this rate (``None``: as fast as the pipeline goes).
        frames: stop after this many frames (``None``: until the source ends).
        out: write each frame's result here (mask PNG or classes JSON) and ``summary.json``.
        window: frames in flight (sent, not yet answered) at most.
        streams: concurrent streams (default: one per server address).
        device: the OpenVINO device that runs the head.
        head_threads: OpenVINO's inference threads for the head (``INFERENCE_NUM_THREADS``,
            one stream); ``None``: OpenVINO's choice (every core). On a machine the
            device shares with the server, fewer threads keep the two from
            oversubscribing the cores.
        token_file, tls_ca: bearer token and server CA for TLS.
        tls_cert, tls_key: the client certificate (PEM chain) and its key, for a server
            that requires client certificates (mTLS); both or neither.
        retry_timeout_s: give up when no server answers for this long.
        stop_grace_s: after SIGTERM/SIGINT, wait this long for the answers in flight
            (no new frame is captured); what is still unanswered stays in the spool.
        probabilities: ask for class probabilities too.
        seed: seed of the ``synthetic`` source's frames.
        emulate_link: limit the uplink for an experiment: ``"20Mbit/s,15ms"`` (bandwidth,
            one-way delay; see :class:`~splitnet.device.LinkEmulator`), or a
            ``LinkEmulator`` to change during the run (``daemon.link.set(...)``).
        plan: a plan file (``splitnet plan --emit-plan``) instead of ``bundle``: the daemon
            runs its bundles and moves between them as the link changes
            (:class:`~splitnet.device.AdaptiveDaemon`).
        hysteresis, dwell_s, probe_interval_s: how it moves (see :mod:`splitnet.device._adapt`).
        attach_hash: send each frame's perceptual hash by this imagehash method
            (``phash``, ...) for the server's representative search (``serve --index``);
            the answer's ``representatives`` go into the result JSON.
    """

    bundle: str | Path | None = None
    servers: tuple[str, ...] = ()
    source: str = "synthetic"
    fps: float | None = None
    frames: int | None = None
    out: str | Path | None = None
    window: int = 8
    streams: int | None = None
    device: str = "CPU"
    head_threads: int | None = None
    token_file: str | Path | None = None
    tls_ca: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    retry_timeout_s: float = 60.0
    stop_grace_s: float = 5.0
    max_message_mb: int = 64
    probabilities: bool = False
    device_id: str | None = None
    seed: int = 0
    emulate_link: str | LinkEmulator | None = None
    plan: str | Path | None = None
    hysteresis: float = 0.15
    dwell_s: float = 0.5
    probe_interval_s: float = 0.25
    attach_hash: str | None = None


@dataclass
class Summary:
    """What a run did. Latencies are end to end: frame captured -> result received."""

    model: str
    frames_captured: int = 0
    frames_sent: int = 0
    resent: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    unacknowledged: int = 0
    reconnects: int = 0
    elapsed_s: float = 0.0
    fps: float = 0.0
    latency_mean_ms: float = 0.0
    latency_p95_ms: float = 0.0
    wire_bytes: int = 0
    wire_mbps: float = 0.0
    payload_bytes_mean: float = 0.0
    head_ms_mean: float = 0.0
    errors: list[str] = field(default_factory=list)
    fatal: str | None = None  # why the run stopped early (a refused stream, no server)
    stopped_by: str | None = None  # SIGTERM or SIGINT: a graceful stop, not a failure
    candidates: dict[str, int] = field(default_factory=dict)  # a plan's: answers per candidate
    switches: list[dict] = field(default_factory=list)  # a plan's: when it moved, and why
    version: str = ""  # a folder of versions: the head's version at the end
    versions: dict[str, int] = field(default_factory=dict)  # answers per version
    reloads: list[dict] = field(default_factory=list)  # moves to another version, and refusals
    head_threads: int | None = None  # OpenVINO's inference threads (None: its own choice)

    def format(self) -> str:
        text = (
            f"{self.model}: {self.frames_sent} frames sent, {self.ok} ok, {self.failed} failed, "
            f"{self.dropped} dropped, {self.unacknowledged} unacknowledged ({self.resent} re-sent, "
            f"{self.reconnects} reconnects)\n"
            f"{self.fps:.2f} FPS, latency mean {self.latency_mean_ms:.1f} ms, p95 {self.latency_p95_ms:.1f} ms, "
            f"{self.wire_mbps:.2f} Mbit/s on the wire ({self.payload_bytes_mean / 1e3:.1f} kB/frame), "
            f"head {self.head_ms_mean:.1f} ms/frame"
        ) + (
            f"\ncandidates: {', '.join(f'{k} {v}' for k, v in self.candidates.items())}; "
            f"{len(self.switches)} switches"
            if self.candidates
            else ""
        )
        if self.version:
            moves = sum(1 for r in self.reloads if not r["error"])
            text += (
                f"\nversions: {', '.join(f'{k} {v}' for k, v in self.versions.items())} answered;"
                f" now on {self.version} after {moves} moves"
            )
        return text


@dataclass(frozen=True)
class Head:
    """What encodes a frame: the head, its codec and what the requests name.

    Attributes:
        runner: the head (a :class:`~splitnet.device.HeadRunner`, or an image
            bundle's frame).
        codec: the bundle's codec.
        manifest: the bundle's manifest.
        model_name: the served model the requests name.
        version: the version they name (``""``: whichever the server serves).
    """

    runner: object
    codec: object
    manifest: object
    model_name: str
    version: str = ""


def check_head_threads(threads) -> None:
    """``head_threads``: ``None`` or an integer >= 1 (:class:`ConfigError` otherwise)."""
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"head threads must be a positive integer, got {threads!r}")


def frame_hash_parameters(frame: np.ndarray, method: str) -> dict[str, str]:
    """The request parameters of a frame's hash for the server's representative search
    (torch-free: numpy, PIL and imagehash)."""
    from splitnet.index import image_hash

    return {"index_hash": image_hash(frame, method).tobytes().hex(), "index_method": method}


def current_bundle(path: str | Path) -> tuple[Path, str]:
    """The bundle folder the daemon runs for ``--bundle path``, and its version.

    ``path`` itself when it is a bundle (version ``""``), else its highest complete
    version folder (``MODEL/VERSION/``).

    Raises:
        BundleError: neither a bundle nor a folder with a complete version.
    """
    root = Path(path)
    if (root / MANIFEST_FILE).is_file() or not root.is_dir():
        return root, ""
    complete = complete_versions(root)
    if complete:
        version, folder = complete[-1]
        return folder, str(version)
    present = version_dirs(root)
    if present:
        raise BundleError(
            f"{root}: no complete version (a manifest and every checksum verifying) among "
            f"{', '.join(str(v) for v, _ in present)}"
        )
    return root, ""  # let the bundle reader say what is wrong


def _open_head(path: str | Path, *, device: str, threads: int | None = None) -> Head:
    from splitnet.device._modes import open_head

    folder, version = current_bundle(path)
    runner = open_head(folder, device=device, threads=threads)  # image bundles: no head
    manifest = runner.manifest
    return Head(runner, manifest.make_codec(), manifest, manifest.name, version)


@dataclass(frozen=True)
class LocalResult:
    """A frame's outputs computed on the device (``mask``/``classes``...), as the server
    would have answered them: what :meth:`DeviceDaemon._encode` returns for a frame that
    is not sent."""

    outputs: dict


@dataclass
class _Pending:
    frame_id: int
    request: bytes  # the serialized ModelInferRequest, sent as is (and again after a break)
    captured: float
    stream: int
    sent: int = 0
    sent_at: float = 0.0  # when it was last written (or put on the emulated link)


class DeviceDaemon:
    """Runs the pipeline of :class:`DaemonConfig` once; ``await run()`` returns the summary.

    A run that cannot go on (the server refuses the stream, or no server answers
    within ``retry_timeout_s``) stops early with ``summary.fatal`` set; the frames
    it had not got answers for are listed in ``summary.json``.
    """

    def __init__(self, config: DaemonConfig) -> None:
        if not config.servers:
            raise ConfigError("no server address given")
        self._target = grpc_target(parse_addresses(config.servers))
        if config.bundle is None:
            raise ConfigError("no bundle given (--bundle DIR, or --plan plan.json)")
        if config.window < 1:
            raise ConfigError(f"window must be >= 1, got {config.window}")
        if config.fps is not None and config.fps <= 0:
            raise ConfigError(f"fps must be > 0, got {config.fps}")
        check_head_threads(config.head_threads)
        self.config = config
        link = config.emulate_link
        self.link: LinkEmulator | None = parse_link(link) if isinstance(link, str) else link
        self._set_head(_open_head(config.bundle, device=config.device, threads=config.head_threads))
        self._reload_lock = asyncio.Lock()
        self._version_of: dict[int, str] = {}  # frame id -> the version its request names
        h, w = self.manifest.input.frame_shape[:2]
        self.source = open_source(
            config.source, height=h, width=w, frames=config.frames, fps=config.fps, seed=config.seed
        )
        self.out = Path(config.out) if config.out else None
        self.summary = Summary(
            model=self.manifest.name, version=self.head.version, head_threads=config.head_threads
        )
        # the spool under --out: a run started again with the same --out resumes (_spool.py)
        self.spool: Spool | None = None
        self._first_frame = 0
        self._resume: list[tuple[int, bytes]] = []
        state: dict = {}
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            self.spool = Spool(self.out)
            state = self.spool.state()
            self._first_frame = int(state.get("next_frame", 0))
            for frame_id, request in self.spool.pending():
                if self._result_exists(frame_id):
                    self.spool.ack(frame_id)  # answered and written, killed before the ack
                else:
                    self._resume.append((frame_id, request))
        self.device_id = (
            config.device_id
            or state.get("device_id")
            or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        )
        if state.get("running") and self.out is not None:
            # the last run was killed before it wrote its summary: say so now
            doc = asdict(Summary(model=self.manifest.name, fatal="killed; resumed by a new start"))
            doc["unacknowledged_frames"] = [f for f, _ in self._resume]
            _atomic(
                self.out / "summary.json", lambda f: f.write(json.dumps(doc, indent=2).encode())
            )
        self._pending: dict[int, _Pending] = {}
        self._started: float | None = None
        self._next_frame = self._first_frame
        self._latencies: list[float] = []
        self._head_s: list[float] = []
        self._payload_sizes: list[int] = []
        n_streams = config.streams or len(config.servers)
        self._queues: list[asyncio.Queue[_Pending]] = [asyncio.Queue() for _ in range(n_streams)]
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="device")
        self._fatal: BaseException | None = None

    def _set_head(self, head: Head) -> None:
        # one reference, read once per frame: a move happens between two frames
        self.head = head
        self.runner, self.codec, self.manifest = head.runner, head.codec, head.manifest

    # -- versions -------------------------------------------------------------------------------

    async def reload(self) -> dict | None:
        """Reads the bundle folder again and moves to its highest complete version
        (SIGHUP does this); frames already encoded keep theirs.

        The new head is loaded (checksums verified, compiled) beside the running
        one, so frames keep flowing meanwhile. Returns the record added to
        ``summary.reloads`` (``error`` set when the version was refused), or
        ``None`` when there is nothing to move to.
        """
        async with self._reload_lock:
            old = self.head
            loop = asyncio.get_running_loop()
            record = {
                "at_s": round(time.perf_counter() - self._started, 4) if self._started else 0.0,
                "unix_time": round(time.time(), 3),  # to line up with the server's log
                "from": old.version,
                "to": None,
                "after_frame": self._next_frame - 1,
                "first_frame": None,
                "error": None,
            }
            if not old.version:
                log.warning(
                    "%s is a bundle, not a folder of versions: nothing to reload",
                    self.config.bundle,
                )
                return None
            try:
                folder, version = current_bundle(self.config.bundle)
                record["to"] = version
                if version == old.version:
                    newest = version_dirs(self.config.bundle)
                    if newest and str(newest[-1][0]) != version:
                        log.warning(
                            "version %s of %s is not complete yet: staying at %s",
                            newest[-1][0],
                            self.config.bundle,
                            version,
                        )
                    return None
                new = await loop.run_in_executor(
                    None,
                    lambda: _open_head(
                        folder, device=self.config.device, threads=self.config.head_threads
                    ),
                )
                new = Head(new.runner, new.codec, new.manifest, new.model_name, version)
                _check_compatible(old, new)
            except (SplitnetError, OSError) as e:
                record["error"] = str(e)
                log.error(
                    "cannot move to %s: %s; staying at version %s",
                    self.config.bundle,
                    e,
                    old.version,
                )
                self.summary.reloads.append(record)
                return record
            self._set_head(new)
            self.summary.version = version
            log.info("head moved from version %s to %s", old.version, version)
            self.summary.reloads.append(record)
            return record

    # -- channel ------------------------------------------------------------------------------

    def _channel(self) -> grpc.aio.Channel:
        cfg = self.config
        limit = cfg.max_message_mb << 20
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        return client_channel(
            self._target,
            options=options,
            tls_ca=cfg.tls_ca,
            tls_cert=cfg.tls_cert,
            tls_key=cfg.tls_key,
        )

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.config.token_file)

    # -- pipeline -----------------------------------------------------------------------------

    async def run(self) -> Summary:
        start = self._started = time.perf_counter()
        self._slots = asyncio.Semaphore(self.config.window)
        self._idle = asyncio.Event()
        self._idle.set()
        channel = self._channel()
        metadata = self._metadata()
        stream = stream_infer_method(channel)
        if len(self.config.servers) > 1:
            # round_robin sends a new stream to the next *ready* server: let the channel connect
            # to every address before opening the streams, or they would all go to the first
            await self._connect(channel)
        streams = [
            asyncio.create_task(self._stream(stream, i, metadata)) for i in range(len(self._queues))
        ]
        self._producer: asyncio.Task | None = None
        self._grace: asyncio.TimerHandle | None = None
        stopped = self._on_signals(asyncio.current_task())
        try:
            await self._requeue_spooled()
            self._producer = asyncio.create_task(self._produce())
            # a signal cancels the producer only: the frames in flight are still answered
            await asyncio.wait([self._producer])
            if not self._producer.cancelled():
                self._producer.result()
            await self._drain(streams)
        except asyncio.CancelledError:
            if not stopped:
                raise
        except BaseException as e:
            self._fatal = self._fatal or e
            raise
        finally:
            self._off_signals()
            if self._grace is not None:
                self._grace.cancel()
            if self._producer is not None:
                self._producer.cancel()
                await asyncio.gather(self._producer, return_exceptions=True)
            for t in streams:
                t.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            await channel.close()
            self._pool.shutdown(wait=False)
            self._finish(time.perf_counter() - start)  # summary.json on every exit path
        return self.summary

    def _on_signals(self, task: asyncio.Task | None) -> list[str]:
        """SIGTERM and SIGINT stop the run with its summary written; returns a list that
        names the signal once one came."""
        stopped: list[str] = []
        self._signals: list[int] = []

        def stop(sig: signal.Signals) -> None:
            first = not stopped
            stopped.append(sig.name)
            if first:
                # graceful: capture no more, give the answers in flight stop_grace_s
                self.summary.stopped_by = sig.name
                log.info("%s: stopping (answers in flight: %d)", sig.name, len(self._pending))
                if self._producer is not None:
                    self._producer.cancel()
                if task is not None:
                    self._grace = asyncio.get_running_loop().call_later(
                        max(0.0, self.config.stop_grace_s), task.cancel
                    )
            elif task is not None:
                task.cancel()  # a second signal: stop now

        loop = asyncio.get_running_loop()
        for sig, handler, args in (
            (signal.SIGTERM, stop, (signal.SIGTERM,)),
            (signal.SIGINT, stop, (signal.SIGINT,)),
            (signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()), ()),
        ):
            try:
                loop.add_signal_handler(sig, handler, *args)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError, AttributeError):
                pass  # not the main thread (a test's loop): the caller handles signals
        return stopped

    def _off_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)

    async def _requeue_spooled(self) -> None:
        """The frames a killed run had spooled and not got answers for, sent again."""
        for frame_id, request in self._resume:
            version = pb.ModelInferRequest.FromString(request).model_version
            if version:
                self._version_of[frame_id] = version  # the tail its head needs
            await self._slots.acquire()
            pending = _Pending(
                frame_id, request, time.perf_counter(), stream=frame_id % len(self._queues)
            )
            self._pending[frame_id] = pending
            self._idle.clear()
            self.summary.resent += 1
            await self._queues[pending.stream].put(pending)
        self._resume = []

    async def _connect(self, channel: grpc.aio.Channel, settle_s: float = 0.3) -> None:
        try:
            await asyncio.wait_for(channel.channel_ready(), self.config.retry_timeout_s)
        except TimeoutError:
            return  # the streams wait and retry as usual
        await asyncio.sleep(settle_s)

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        frames = iter(self.source)
        period = 1.0 / self.config.fps if self.config.fps else 0.0
        next_at = time.perf_counter()
        frame_id = self._first_frame
        for _ in range(frame_id):  # a resumed run: these were captured before
            if await loop.run_in_executor(self._pool, next, frames, None) is None:
                return
        while self._fatal is None:
            if period:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + period, time.perf_counter() - period)
            frame = await loop.run_in_executor(self._pool, next, frames, None)
            if frame is None:
                return
            captured = time.perf_counter()
            self.summary.frames_captured += 1
            if self.source.live and self._slots.locked():
                self.summary.dropped += 1  # a live source does not wait for the network
                continue
            await self._slots.acquire()
            try:
                request = await loop.run_in_executor(self._pool, self._encode, frame, frame_id)
            except Exception:
                self._slots.release()
                raise
            if isinstance(request, LocalResult):  # computed on the device: nothing to send
                self._slots.release()
                self._next_frame = frame_id + 1
                self._local_answer(frame_id, request.outputs, captured)  # the result first
                if self.spool is not None:
                    self.spool.save_state(
                        device_id=self.device_id, next_frame=frame_id + 1, running=True
                    )
                frame_id += 1
                continue
            pending = _Pending(frame_id, request, captured, stream=frame_id % len(self._queues))
            self._next_frame = frame_id + 1
            if self.spool is not None:  # on disk before it is sent
                self.spool.put(frame_id, request)
                self.spool.save_state(
                    device_id=self.device_id, next_frame=frame_id + 1, running=True
                )
            self._pending[frame_id] = pending
            self._idle.clear()
            self.summary.frames_sent += 1
            await self._queues[pending.stream].put(pending)
            frame_id += 1

    def _encode(self, frame: np.ndarray, frame_id: int) -> bytes | LocalResult:
        """Head, codec, request: runs in a worker thread (OpenVINO and zstd release the GIL).
        A :class:`LocalResult` instead (a plan's device-only candidate) is the frame's
        answer, computed on the device: it is written at once and nothing is sent."""
        return self._encode_with(frame, frame_id, self.head)

    def _local_answer(self, frame_id: int, outputs: dict[str, np.ndarray], captured: float) -> None:
        """A frame answered on the device: counted and written as a server's answer is."""
        self.summary.ok += 1
        self._latencies.append(time.perf_counter() - captured)
        if self.out is not None:
            self._write_result(frame_id, outputs)

    def _encode_with(self, frame, frame_id: int, head: Head) -> bytes:
        """One frame through ``head``: the request names its model and version."""
        if head.version:
            self._version_of[frame_id] = head.version
            last = self.summary.reloads[-1] if self.summary.reloads else None
            if last and last["first_frame"] is None and last["to"] == head.version:
                last["first_frame"] = frame_id
        t0 = time.perf_counter()
        tensors = head.runner(frame)
        self._head_s.append(time.perf_counter() - t0)
        payload = head.codec.encode(tensors)
        limit = self.config.max_message_mb << 20
        if len(payload) > limit - 4096:
            raise ConfigError(
                f"frame {frame_id}: payload of {len(payload)} bytes exceeds the {self.config.max_message_mb} MB limit"
            )
        self._payload_sizes.append(len(payload))
        outputs = (
            ["mask", "probabilities"]
            if self.config.probabilities and self.manifest.task == "segmentation"
            else None
        )
        parameters = {"device_id": self.device_id, "frame_id": frame_id}
        if self.config.attach_hash:
            parameters.update(frame_hash_parameters(frame, self.config.attach_hash))
        return encode_infer_request(
            head.model_name,
            payload,
            request_id=f"{self.device_id}/{frame_id}",
            parameters=parameters,
            outputs=outputs,
            model_version=head.version,
        )

    async def _drain(self, streams: Sequence[asyncio.Task]) -> None:
        """Waits until every sent frame is answered (or a stream gives up)."""
        idle = asyncio.create_task(self._idle.wait())
        try:
            await asyncio.wait([idle, *streams], return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()

    async def _stream(self, stream, index: int, metadata) -> None:
        """One stream, opened again after each break; re-sends what is unanswered."""
        queue = self._queues[index]
        backoff = 0.1
        last_ok = time.perf_counter()
        first = True
        while True:
            # not wait_for_ready: a server that is down, a wrong CA or plain against TLS
            # fail the call at once and count towards retry_timeout_s (issue 13, item 3)
            call = stream(metadata=metadata, wait_for_ready=False)
            if not first:
                self.summary.reconnects += 1
            first = False
            resend = sorted(
                (p for p in self._pending.values() if p.stream == index and p.sent),
                key=lambda p: p.frame_id,
            )
            writer = asyncio.create_task(self._write(call, queue, resend))
            try:
                async for response in call:
                    backoff, last_ok = 0.1, time.perf_counter()
                    if self.link is not None and self.link.delay_s > 0:
                        # the answer's way back through the emulated link
                        asyncio.get_running_loop().call_later(
                            self.link.delay_s, self._answer, response
                        )
                    else:
                        self._answer(response)
                await writer
                return
            except grpc.aio.AioRpcError as e:
                writer.cancel()
                if e.code() not in RETRYABLE:
                    self._fatal = DeviceError(
                        f"server refused the stream: {e.code().name}: {e.details()}"
                    )
                    self._idle.set()
                    return
                if time.perf_counter() - last_ok > self.config.retry_timeout_s:
                    self._fatal = ConnectionError(
                        f"no server answered for {self.config.retry_timeout_s:.0f} s: {e.code().name}: {e.details()}"
                    )
                    self._idle.set()
                    return
                log.warning(
                    "stream %d broke (%s); reconnecting in %.1f s", index, e.code().name, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)

    async def _write(self, call, queue: asyncio.Queue[_Pending], resend: list[_Pending]) -> None:
        if self.link is not None:
            return await self._write_through_link(call, queue, resend)
        for p in resend:
            if p.frame_id in self._pending:
                self.summary.resent += 1
                await self._send(call, p)
        while True:
            p = await queue.get()
            if p.frame_id in self._pending:
                await self._send(call, p)

    async def _send(self, call, p: _Pending) -> None:
        p.sent += 1
        p.sent_at = time.perf_counter()
        self.summary.wire_bytes += len(p.request)
        await call.write(p.request)

    async def _write_through_link(
        self, call, queue: asyncio.Queue[_Pending], resend: list[_Pending]
    ) -> None:
        """:meth:`_write` through the emulated link: each request is written when the
        link says it arrives, in order; a frame in the link counts as sent, so a break
        re-sends it like any other unanswered frame."""
        link = self.link
        assert link is not None
        in_link: asyncio.Queue[tuple[float, _Pending]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                arrives, p = await in_link.get()
                wait = arrives - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                await call.write(p.request)

        def put(p: _Pending) -> None:
            p.sent += 1
            p.sent_at = time.perf_counter()
            self.summary.wire_bytes += len(p.request)
            in_link.put_nowait((link.reserve(len(p.request)), p))

        delivery = asyncio.create_task(deliver())
        try:
            for p in resend:
                if p.frame_id in self._pending:
                    self.summary.resent += 1
                    put(p)
            while True:  # a break shows on the reading side, which cancels this writer
                p = await queue.get()
                if p.frame_id in self._pending:
                    put(p)
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)

    def _answer(self, response: pb.ModelStreamInferResponse) -> None:
        params = response.infer_response.parameters
        frame_id = get_parameter(params, "frame_id")
        if get_parameter(params, "device_id") != self.device_id or frame_id is None:
            return
        p = self._pending.pop(int(frame_id), None)
        if p is None:
            return  # a duplicate answer to a re-sent frame
        self._slots.release()
        if not self._pending:
            self._idle.set()
        version = self._version_of.get(p.frame_id, "")
        error = response.error_message
        answered = response.infer_response.model_version
        if not error and version and answered != version:  # never a mismatched tail
            error = f"sent to version {version}, answered by version {answered or '?'}"
        if error:
            self.summary.failed += 1
            if len(self.summary.errors) < 10:
                self.summary.errors.append(f"frame {frame_id}: {error}")
        else:
            self.summary.ok += 1
            if version:
                self.summary.versions[version] = self.summary.versions.get(version, 0) + 1
            self._latencies.append(time.perf_counter() - p.captured)
            if self.out is not None:
                reps = get_parameter(params, "representatives")
                self._write_result(
                    p.frame_id, output_arrays(response.infer_response), representatives=reps
                )
        self._version_of.pop(p.frame_id, None)
        if self.spool is not None:
            self.spool.ack(p.frame_id)  # after the result: a kill in between writes it once

    def _result_exists(self, frame_id: int) -> bool:
        assert self.out is not None
        return any((self.out / f"{frame_id:08d}{ext}").exists() for ext in (".png", ".json"))

    def _result_tags(self, frame_id: int) -> dict[str, str]:
        """Text written with each result (a PNG text chunk, JSON fields): the version that
        answered it, for a folder of versions."""
        version = self._version_of.get(frame_id)
        return {"version": version} if version else {}

    def _write_result(
        self, frame_id: int, outputs: dict[str, np.ndarray], *, representatives: str | None = None
    ) -> None:
        tags = self._result_tags(frame_id)
        if "mask" in outputs:
            from PIL import Image, PngImagePlugin

            info = PngImagePlugin.PngInfo()
            for k, v in tags.items():
                info.add_text(k, v)
            _atomic(
                self.out / f"{frame_id:08d}.png",
                lambda f: Image.fromarray(outputs["mask"]).save(f, format="PNG", pnginfo=info),
            )
            if "probabilities" in outputs:
                _atomic(
                    self.out / f"{frame_id:08d}.npy", lambda f: np.save(f, outputs["probabilities"])
                )
        else:
            names = self.manifest.output.class_names
            doc = {
                "frame_id": frame_id,
                **tags,
                "classes": outputs["classes"].tolist(),
                "probabilities": [round(float(p), 6) for p in outputs["probabilities"]],
                "class_names": [
                    names[i] if i < len(names) else f"class_{i}"
                    for i in outputs["classes"].tolist()
                ],
            }
            if "uncertain" in outputs:  # the server's abstain flag (calibrated bundles)
                doc["uncertain"] = bool(outputs["uncertain"].reshape(-1)[0])
            if representatives is not None:
                doc["representatives"] = json.loads(representatives)
            _atomic(self.out / f"{frame_id:08d}.json", lambda f: f.write(json.dumps(doc).encode()))

    def _finish(self, elapsed: float) -> None:
        s = self.summary
        s.unacknowledged = len(self._pending)
        s.elapsed_s = round(elapsed, 3)
        s.fps = s.ok / elapsed if elapsed > 0 else 0.0
        if self._latencies:
            lat = np.asarray(self._latencies) * 1000
            s.latency_mean_ms = float(lat.mean())
            s.latency_p95_ms = float(np.percentile(lat, 95))
        s.wire_mbps = s.wire_bytes * 8 / elapsed / 1e6 if elapsed > 0 else 0.0
        s.payload_bytes_mean = float(np.mean(self._payload_sizes)) if self._payload_sizes else 0.0
        s.head_ms_mean = float(np.mean(self._head_s) * 1000) if self._head_s else 0.0
        if self._fatal is not None:
            s.fatal = str(self._fatal)
        if self.spool is not None:
            state = self.spool.state()
            self.spool.save_state(
                device_id=self.device_id,
                next_frame=state.get("next_frame", self._first_frame),
                running=False,
            )
        if self.out is not None:
            doc = asdict(s) | {"unacknowledged_frames": sorted(self._pending)}
            _atomic(
                self.out / "summary.json", lambda f: f.write(json.dumps(doc, indent=2).encode())
            )


def _check_compatible(old: Head, new: Head) -> None:
    """A version the daemon can move to: the same served model, the same frames."""
    if new.model_name != old.model_name:
        raise ConfigError(
            f"version {new.version} is model {new.model_name!r}, not {old.model_name!r}"
        )
    if tuple(new.manifest.input.frame_shape) != tuple(old.manifest.input.frame_shape):
        raise ConfigError(
            f"version {new.version} takes frames of {new.manifest.input.frame_shape}, "
            f"version {old.version} of {old.manifest.input.frame_shape}"
        )


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def run_daemon(config: DaemonConfig) -> Summary:
    """Runs a daemon to the end of its source; the blocking entry point of ``splitnet device``.

    A plan runs the adaptive daemon (:class:`~splitnet.device.AdaptiveDaemon`); a
    ``device-only`` bundle runs on the device alone (:class:`~splitnet.device.LocalDaemon`).
    """
    if config.plan is not None:
        from splitnet.device._adaptive import AdaptiveDaemon

        return asyncio.run(AdaptiveDaemon(config).run())
    from splitnet.bundle import read_manifest
    from splitnet.device._modes import LocalDaemon

    local = read_manifest(current_bundle(config.bundle)[0], verify=False).mode == "device-only"
    return asyncio.run((LocalDaemon if local else DeviceDaemon)(config).run())
