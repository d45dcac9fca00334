"""Admission control: what a request may cost the server, and who asked.

Every request is charged, before any work, what it holds while in flight:
its message, the float32 tensors its payload decodes to (the bundle's
crossing tensors: a payload that declares anything else is refused from its
header), and the largest answer the model gives. The charge is held until the
answer is written (unary: returned to gRPC; stream: handed to the stream's
writer), so a client that does not read its answers holds its budget, not more.
A request that would take the server past ``max_inflight_bytes`` is answered
RESOURCE_EXHAUSTED at once and costs nothing else.

The largest message a bundle can legitimately be sent bounds gRPC's
``max_receive_message_length``: a bigger message is refused by gRPC while it
arrives (RESOURCE_EXHAUSTED), before the servicer sees it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import grpc

from splitnet.codec import _format as fmt

__all__ = [
    "Admission",
    "Ticket",
    "answer_bytes",
    "caller_identity",
    "default_inflight_bytes",
    "max_payload_bytes",
    "max_request_bytes",
]

_MESSAGE_SLACK = 64 << 10  # model name, ids, parameters, protobuf framing
_MIN_INFLIGHT = 64 << 20


class Ticket:
    """One admitted request's charge; :meth:`release` gives it back (once)."""

    __slots__ = ("_admission", "cost")

    def __init__(self, admission: Admission | None, cost: int) -> None:
        self._admission, self.cost = admission, cost

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release(self.cost)
            self._admission = None


class Admission:
    """The server's budget of bytes in flight (one event loop: no lock needed).

    Attributes:
        max_bytes: the budget.
        used: bytes charged to requests in flight now.
        peak: the most ever charged at once (for tests and benchmarks).
        refused: requests answered RESOURCE_EXHAUSTED for want of budget.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_inflight_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.used = self.peak = self.refused = 0

    def admit(self, cost: int) -> Ticket | None:
        """A ticket for ``cost`` bytes, or ``None`` when the budget cannot take it now."""
        if self.used + cost > self.max_bytes:
            self.refused += 1
            return None
        self.used += cost
        self.peak = max(self.peak, self.used)
        return Ticket(self, cost)

    def _release(self, cost: int) -> None:
        self.used -= cost


def answer_bytes(outputs: Iterable[tuple[str, str, list[int]]], num_classes: int) -> int:
    """The largest answer's outputs in bytes (``-1`` extents: at most ``num_classes``)."""
    size = {"UINT8": 1, "INT64": 8, "FP32": 4}
    return sum(
        size.get(dt, 8) * math.prod(num_classes if d < 0 else d for d in shape)
        for _, dt, shape in outputs
    )


def max_payload_bytes(shapes: Iterable[tuple[int, ...]]) -> int:
    """An upper bound on any codec's payload for tensors of ``shapes``.

    Generous on purpose: 8 bytes an element (float32 is 4; rANS on 16-bit symbols
    and the learned codec's escapes stay below 8), plus per tensor its record,
    per-channel ranges and, per channel, a dense rANS model of up to 65,536 counts.
    """
    total = fmt.PREAMBLE.size + fmt.CRC.size
    for shape in shapes:
        elements = math.prod(shape)
        channels = shape[1] if len(shape) >= 2 else 1
        alphabet = min(1 << 16, max(1, elements // max(channels, 1)))
        total += fmt.RECORD.size + 4 * len(shape) + 8 * channels  # record, lo/step
        total += 1 + 4 + channels * (5 + 4 * alphabet)  # ans mode, word count, models
        total += 8 * elements + 64
    return total


def max_request_bytes(payload_bytes: int) -> int:
    """The largest request message for a payload of at most ``payload_bytes``.

    ``uint_contents`` is a packed varint: values 128..255 take two bytes each.
    """
    return 2 * payload_bytes + _MESSAGE_SLACK


def default_inflight_bytes(request_costs: Iterable[int]) -> int:
    """16 of the costliest requests, and at least 64 MiB."""
    return max(_MIN_INFLIGHT, 16 * max(request_costs, default=0))


def caller_identity(context: grpc.aio.ServicerContext | None) -> str:
    """Something a client cannot forge that tells callers apart, for the answer cache.

    The sha256 of the bearer token and of the TLS client certificate's identity
    (when the server asked for one). Without either, callers share one identity
    and the cache key's payload digest is what keeps answers from crossing over.
    """
    if context is None:
        return ""
    h = hashlib.sha256()
    metadata: Mapping = dict(context.invocation_metadata() or ())
    token = metadata.get("authorization", "")
    h.update(token.encode() if isinstance(token, str) else bytes(token))
    try:
        auth = context.auth_context() or {}
    except Exception:  # noqa: BLE001 - no auth context on this transport
        auth = {}
    for key in ("x509_pem_cert", "x509_subject_alternative_name", "x509_common_name"):
        for value in auth.get(key, ()):
            h.update(b"\0" + key.encode() + b"\0" + bytes(value))
    return h.hexdigest()
