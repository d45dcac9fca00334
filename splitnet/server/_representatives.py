"""Representative images attached to classification answers (``splitnet serve --index``).

In split mode the server never sees the image, so the device sends what the index
needs: the frame's perceptual hash (``splitnet device --attach-hash [METHOD]``), as two
KServe request parameters:

- ``index_hash``: the hash's packed bits (``np.packbits``) as a hex string;
- ``index_method``: the imagehash method (``ahash phash dhash whash colorhash``;
  default ``phash``).

The server then adds a response parameter ``representatives``: a JSON string, one
entry per top-k class of the answer, in the answer's order::

    [{"class": 3, "label": "screw", "probability": 0.81,
      "representatives": [{"rank": 1, "id": "screw/clip.mp4#frame=20",
                           "label": "screw", "score": 4.0}]}, ...]

(``score``: the Hamming distance, lower is nearer; ``representatives`` is empty for a
class the index has no references of). A class is looked up in the index by the
bundle's class name, ``class_<i>`` when the bundle names none. A malformed hash, a
method the index does not hold, a hash of another length, a hash sent to a server
without an index or for a segmentation model: INVALID_ARGUMENT.

A parameter and not an output: the answer's outputs stay the bundle's (Triton's model
metadata and config are unchanged), and a client that ignores it sees no difference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from splitnet.wire import get_parameter

__all__ = [
    "HASH_PARAMETER",
    "METHOD_PARAMETER",
    "RESPONSE_PARAMETER",
    "RepresentativeQuery",
    "Representatives",
    "candidate_classes",
]

HASH_PARAMETER = "index_hash"
METHOD_PARAMETER = "index_method"
RESPONSE_PARAMETER = "representatives"
DEFAULT_METHOD = "phash"


@dataclass(frozen=True)
class RepresentativeQuery:
    """A request's hash: the method and its packed bits."""

    method: str
    packed: np.ndarray


def candidate_classes(
    classes: np.ndarray, probabilities: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """The ``k`` most probable ``(class, probability)`` of an answer, most probable first.

    Today the tail's own top-k (argsort of its class probabilities); the seam where a
    calibrated top-k (with its ``uncertain`` flag) plugs in later.
    """
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")[:k]
    return [(int(classes[i]), float(probabilities[i])) for i in order]


class Representatives:
    """A :class:`~splitnet.index.RepresentativeIndex` answering by the device's hash.

    Args:
        index: the index.
        per_class: representatives attached per candidate class.
    """

    def __init__(self, index, *, per_class: int = 1) -> None:
        self.index = index
        self.per_class = per_class

    @classmethod
    def load(cls, path: str | os.PathLike, *, per_class: int = 1) -> Representatives:
        from splitnet.index import RepresentativeIndex

        return cls(RepresentativeIndex.load(path), per_class=per_class)

    def parse(self, parameters, task: str) -> RepresentativeQuery | None:
        """The request's hash (``None`` when it sends none); raises ``InferError``."""
        from splitnet.server._core import InferError

        raw = get_parameter(parameters, HASH_PARAMETER)
        if raw is None:
            return None
        method = get_parameter(parameters, METHOD_PARAMETER, DEFAULT_METHOD)

        def bad(message: str):
            return InferError(grpc.StatusCode.INVALID_ARGUMENT, message)

        if task != "classification":
            raise bad(f"{HASH_PARAMETER}: representatives are attached to classifications only")
        if not isinstance(method, str) or method not in self.index.hashes:
            valid = ", ".join(self.index.hashes) or "none"
            raise bad(f"{METHOD_PARAMETER} {method!r}: the index holds hashes of {valid}")
        try:
            packed = np.frombuffer(bytes.fromhex(raw), dtype=np.uint8)
        except (TypeError, ValueError):
            raise bad(f"{HASH_PARAMETER} must be a hex string, got {str(raw)[:40]!r}") from None
        want = self.index.hashes[method].shape[1]
        if packed.size != want:
            raise bad(
                f"{HASH_PARAMETER}: a {method} hash of this index has {want} bytes "
                f"({2 * want} hex digits), got {packed.size}"
            )
        return RepresentativeQuery(method, packed)

    def attach(
        self,
        query: RepresentativeQuery,
        candidates: Sequence[tuple[int, float]],
        class_names: Sequence[str],
    ) -> str:
        """The ``representatives`` JSON of ``candidates`` (see the module docstring)."""
        idx = self.index
        scores = idx.hash_scores(query.method, query.packed)
        entries = []
        for c, p in candidates:
            label = class_names[c] if 0 <= c < len(class_names) else f"class_{c}"
            found = []
            if label in idx.labels:
                ranked = idx.rank(
                    query.method,
                    scores,
                    k=self.per_class,
                    per_class=True,
                    classes=[idx.labels.index(label)],
                )
                found = [m.as_dict() for m in ranked[label]]
            entries.append({"class": c, "label": label, "probability": p, "representatives": found})
        return json.dumps(entries, separators=(",", ":"))
