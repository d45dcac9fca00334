"""The on-disk representative index: build, save, load and query (numpy, torch-free).

An index is a directory::

    index.json        format, version, image size, colour space, histogram bins,
                      class labels, reference ids, hash methods and their bit counts
    labels.npy        int32 class index per reference (N)
    hist.npy          float32 L1-normalised colour histograms (N x B)
    hash-<m>.npy      uint8 packed hash bits per hash method (N x ceil(bits/8))
    thumbs.npy        uint8 grey thumbnails at the index size (N x H x W), SSIM and MSE
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitnet.index._features import (
    COLOUR_SPACES,
    HASH_METHODS,
    IndexError_,
    as_rgb,
    get_method,
    grey,
    hamming,
    hist_scores,
    histogram,
    image_hash,
    mse_scores,
    resize,
    thumb_scores,
)

__all__ = ["FORMAT", "Match", "RepresentativeIndex", "build_index", "parse_size"]

FORMAT = "splitnet-representative-index"
VERSION = 1


def parse_size(text: str) -> tuple[int, int]:
    """``"64x48"`` (width x height, as image tools write it) or ``"64"`` -> (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise IndexError_(f"size must be WxH with both >= 8, e.g. 64x64, got {text!r}")
    return parts[1], parts[0]


@dataclass(frozen=True)
class Match:
    """One reference found by a query: id, label and the method's score."""

    id: str
    label: str
    score: float
    rank: int

    def as_dict(self) -> dict:
        return {"rank": self.rank, "id": self.id, "label": self.label, "score": self.score}


@dataclass
class RepresentativeIndex:
    """References (labelled images or video frames) and their comparison features."""

    size: tuple[int, int]  # (height, width)
    colour_space: str
    labels: list[str]
    ids: list[str]
    label_index: np.ndarray
    hist: np.ndarray
    hashes: dict[str, np.ndarray]
    thumbs: np.ndarray
    hist_bins: int = 8
    meta: dict = field(default_factory=dict)
    _flat: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    # -- queries ------------------------------------------------------------------------

    def check(self, *, size: tuple[int, int] | None = None, colour_space: str | None = None):
        """Raises if the index was built at another size or colour space than asked."""
        if size is not None and tuple(size) != tuple(self.size):
            raise IndexError_(
                f"the index was built at {self.size[1]}x{self.size[0]}, "
                f"not {size[1]}x{size[0]}; rebuild it with --size {size[1]}x{size[0]}"
            )
        if colour_space is not None and colour_space != self.colour_space:
            raise IndexError_(
                f"the index was built in colour space {self.colour_space}, not {colour_space}"
            )

    def scores(self, method: str, image: np.ndarray) -> np.ndarray:
        """``method``'s score of ``image`` (any size, RGB or grey) against every reference."""
        m = get_method(method)
        rgb = as_rgb(image)
        if m.kind == "hash":
            return self.hash_scores(method, image_hash(rgb, method))
        small = resize(rgb, self.size)
        if m.kind == "hist":
            return hist_scores(
                self.hist, histogram(small, self.colour_space, self.hist_bins), method
            )
        if method == "mse":
            if self._flat is None:  # float32 rows and their squared norms, kept per index
                flat = self.thumbs.reshape(len(self), -1).astype(np.float32)
                self._flat = (flat, np.einsum("ij,ij->i", flat, flat))
            return mse_scores(*self._flat, grey(small))
        return thumb_scores(self.thumbs, grey(small), method)

    def hash_scores(self, method: str, packed: np.ndarray) -> np.ndarray:
        """Hamming distances of the packed hash ``packed`` to every reference's."""
        if method not in self.hashes:
            raise IndexError_(
                f"the index holds no {method!r} hashes; it has {', '.join(self.hashes) or 'none'}"
            )
        refs = self.hashes[method]
        packed = np.asarray(packed, dtype=np.uint8).ravel()
        if packed.shape[0] != refs.shape[1]:
            raise IndexError_(
                f"a {method} hash of this index has {refs.shape[1]} bytes, got {packed.shape[0]}"
            )
        return hamming(refs, packed)

    def rank(
        self,
        method: str,
        scores: np.ndarray,
        *,
        k: int = 5,
        per_class: bool = False,
        classes: Sequence[int] | None = None,
    ) -> dict[str, list[Match]]:
        """The ``k`` nearest references overall (key ``"all"``) or of each class.

        ``classes`` (class indices) restricts ``per_class`` to those classes, in that order.
        """
        if k < 1:
            raise IndexError_(f"k must be >= 1, got {k}")
        m = get_method(method)
        # a stable sort with the best first; ties keep the references' order
        order = np.argsort(-scores if m.higher_is_better else scores, kind="stable")

        def matches(idx: np.ndarray) -> list[Match]:
            return [
                Match(self.ids[i], self.labels[self.label_index[i]], float(scores[i]), r + 1)
                for r, i in enumerate(idx[:k])
            ]

        if not per_class:
            return {"all": matches(order)}
        ordered_labels = self.label_index[order]
        wanted = range(len(self.labels)) if classes is None else classes
        return {self.labels[c]: matches(order[ordered_labels == c]) for c in wanted}

    def query(
        self, image: np.ndarray, *, method: str, k: int = 5, per_class: bool = False
    ) -> dict[str, list[Match]]:
        """The nearest references to ``image`` by ``method`` (see :meth:`rank`)."""
        return self.rank(method, self.scores(method, image), k=k, per_class=per_class)

    # -- storage ------------------------------------------------------------------------

    def save(self, out: str | os.PathLike) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "labels.npy", self.label_index.astype(np.int32))
        np.save(out / "hist.npy", self.hist.astype(np.float32))
        np.save(out / "thumbs.npy", self.thumbs.astype(np.uint8))
        for name, bits in self.hashes.items():
            np.save(out / f"hash-{name}.npy", bits.astype(np.uint8))
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "size": {"height": self.size[0], "width": self.size[1]},
            "colour_space": self.colour_space,
            "hist_bins": self.hist_bins,
            "hash_methods": {name: int(bits.shape[1]) for name, bits in self.hashes.items()},
            "labels": self.labels,
            "count": len(self.ids),
            "ids": self.ids,
            **({"meta": self.meta} if self.meta else {}),
        }
        (out / "index.json").write_text(json.dumps(doc, indent=1) + "\n")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> RepresentativeIndex:
        path = Path(path)
        try:
            doc = json.loads((path / "index.json").read_text())
        except FileNotFoundError:
            raise IndexError_(f"not a representative index (no index.json): {path}") from None
        except json.JSONDecodeError as e:
            raise IndexError_(f"{path}/index.json is not JSON: {e}") from None
        if doc.get("format") != FORMAT:
            raise IndexError_(f"{path}/index.json is not a {FORMAT}")
        if doc.get("version") != VERSION:
            raise IndexError_(f"{path}: index version {doc.get('version')}, expected {VERSION}")
        try:
            idx = cls(
                size=(int(doc["size"]["height"]), int(doc["size"]["width"])),
                colour_space=doc["colour_space"],
                labels=list(doc["labels"]),
                ids=list(doc["ids"]),
                label_index=np.load(path / "labels.npy"),
                hist=np.load(path / "hist.npy"),
                hashes={m: np.load(path / f"hash-{m}.npy") for m in doc["hash_methods"]},
                thumbs=np.load(path / "thumbs.npy"),
                hist_bins=int(doc["hist_bins"]),
                meta=doc.get("meta", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IndexError_(f"{path}: corrupt index ({type(e).__name__}: {e})") from None
        n = len(idx.ids)
        arrays = [idx.label_index, idx.hist, idx.thumbs, *idx.hashes.values()]
        if any(a.shape[0] != n for a in arrays):
            raise IndexError_(f"{path}: arrays and ids disagree on the number of references")
        return idx


def build_index(
    references: Iterable[tuple[str, str, np.ndarray]],
    *,
    labels: Sequence[str] | None = None,
    size: tuple[int, int] = (64, 64),
    colour_space: str = "rgb",
    hist_bins: int = 8,
    hash_methods: Sequence[str] = tuple(HASH_METHODS),
) -> RepresentativeIndex:
    """An index of ``references``: ``(id, label, image)`` with uint8 RGB or grey images.

    Example:
        >>> import numpy as np
        >>> refs = [("a", "red", np.full((32, 32, 3), (200, 0, 0), np.uint8)),
        ...         ("b", "blue", np.full((32, 32, 3), (0, 0, 200), np.uint8))]
        >>> idx = build_index(refs, size=(16, 16))
        >>> idx.query(refs[1][2], method="hist-correl", k=1)["all"][0].label
        'blue'
    """
    if colour_space not in COLOUR_SPACES:
        raise IndexError_(
            f"unknown colour space {colour_space!r}; valid: {', '.join(COLOUR_SPACES)}"
        )
    for m in hash_methods:
        if m not in HASH_METHODS:
            raise IndexError_(f"unknown hash method {m!r}; valid: {', '.join(HASH_METHODS)}")
    known = list(labels) if labels is not None else []
    ids, lab, hists, thumbs = [], [], [], []
    hashes: dict[str, list[np.ndarray]] = {m: [] for m in hash_methods}
    for ref_id, label, image in references:
        if label not in known:
            if labels is not None:
                raise IndexError_(f"reference {ref_id}: label {label!r} not in {known}")
            known.append(label)
        rgb = as_rgb(image)
        small = resize(rgb, size)
        ids.append(ref_id)
        lab.append(known.index(label))
        hists.append(histogram(small, colour_space, hist_bins))
        thumbs.append(grey(small))
        for m in hash_methods:
            hashes[m].append(image_hash(rgb, m))
    if not ids:
        raise IndexError_("no references to index")
    return RepresentativeIndex(
        size=tuple(size),
        colour_space=colour_space,
        labels=known,
        ids=ids,
        label_index=np.asarray(lab, dtype=np.int32),
        hist=np.stack(hists),
        hashes={m: np.stack(v) for m, v in hashes.items()},
        thumbs=np.stack(thumbs),
        hist_bins=hist_bins,
    )
