"""Prometheus metrics of a server, in a registry of its own (several servers may share a process)."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from splitnet.server._batcher import BatchStats
from splitnet.server._statistics import Statistics

UNKNOWN_MODEL = "_unknown"


class _RequestCounter:
    """The requests counter, whose ``model`` label is a served model's name or ``_unknown``:
    a client's made-up model names must not become metric series (unbounded memory)."""

    def __init__(self, counter: Counter, statistics: Statistics) -> None:
        self.counter = counter
        self.statistics = statistics
        self.known: Callable[[], Container[str]] | None = None

    def labels(self, model: str, status: str):
        served = self.known is None or model in self.known()
        if served and status not in ("ok", "duplicate"):
            self.statistics.count_failure(model)
        return self.counter.labels(model if served else UNKNOWN_MODEL, status)

    def collect(self):
        return self.counter.collect()


__all__ = ["Metrics"]

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BYTES = tuple(2**k for k in range(10, 29, 2))


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: _RequestCounter
    queue_seconds: Histogram
    compute_seconds: Histogram
    batch_size: Histogram
    payload_bytes: Histogram
    statistics: Statistics = field(default_factory=Statistics)
    repository_loads: Counter | None = None

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        statistics = Statistics()
        return cls(
            registry=r,
            statistics=statistics,
            requests=_RequestCounter(
                Counter(
                    "splitnet_requests",
                    "Inference requests by model (a served one, else _unknown) and outcome"
                    " (ok, duplicate, or a gRPC status)",
                    ["model", "status"],
                    registry=r,
                ),
                statistics,
            ),
            queue_seconds=Histogram(
                "splitnet_queue_seconds",
                "Time a frame waited for its batch",
                ["model"],
                buckets=_SECONDS,
                registry=r,
            ),
            compute_seconds=Histogram(
                "splitnet_compute_seconds",
                "Tail compute time per frame (a batch's time / its frames)",
                ["model"],
                buckets=_SECONDS,
                registry=r,
            ),
            batch_size=Histogram(
                "splitnet_batch_size",
                "Size of the batch each frame ran in",
                ["model"],
                buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
                registry=r,
            ),
            payload_bytes=Histogram(
                "splitnet_payload_bytes",
                "Codec payload size",
                ["model"],
                buckets=_BYTES,
                registry=r,
            ),
            repository_loads=Counter(
                "splitnet_repository_loads",
                "Model versions the repository loaded (ok) or could not: incomplete (a manifest"
                " or checksum that does not verify) or broken (it does not load)",
                ["model", "outcome"],
                registry=r,
            ),
        )

    @staticmethod
    def totals(histogram: Histogram, model: str) -> tuple[float, float]:
        """(sum, count) of a histogram for one model."""
        total = count = 0.0
        for metric in histogram.collect():
            for sample in metric.samples:
                if sample.labels.get("model") != model:
                    continue
                if sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
        return total, count

    def observe_batch(
        self, model: str, stats: BatchStats, *, input_s: float = 0.0, output_s: float = 0.0
    ) -> None:
        self.queue_seconds.labels(model).observe(stats.queue_s)
        # one observation per frame: its share of the batch, so the sum is the tail's busy time
        self.compute_seconds.labels(model).observe(stats.compute_s / stats.batch_size)
        self.batch_size.labels(model).observe(stats.batch_size)
        self.statistics.observe_batch(model, stats, input_s=input_s, output_s=output_s)


def serve_metrics(registry: CollectorRegistry, host: str, port: int):
    """Serves ``registry`` at ``http://host:port/metrics`` (404 elsewhere: an HTTP probe of
    ``/v2/health/ready`` on this port must not read "ready"); returns the HTTP server."""
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    app = make_wsgi_app(registry)

    def only_metrics(environ, start_response):
        if environ.get("PATH_INFO", "") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        return app(environ, start_response)

    httpd = make_server(host, port, only_metrics, ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return httpd
