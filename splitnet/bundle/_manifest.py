"""The manifest of a split bundle: its dataclasses, parsing, checks and checksums.

Every field of ``manifest.json`` is a field of one dataclass here
(:class:`Manifest`, or the :class:`InputSpec`, :class:`TensorSpec` and
:class:`OutputSpec` it holds); each class reads its own part in
``from_dict`` and ``Manifest.to_dict`` writes them all. A new field is
added in exactly two places: the dataclass (with a default, so older
manifests still read) and that class's ``from_dict``. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from splitnet._errors import SplitnetError

__all__ = [
    "FORMAT_VERSION",
    "HEAD_BIN",
    "HEAD_XML",
    "MANIFEST_FILE",
    "MODES",
    "TAIL_FILE",
    "BundleError",
    "InputSpec",
    "Manifest",
    "OutputSpec",
    "TensorSpec",
    "file_sha256",
    "read_manifest",
    "verify_files",
]

FORMAT_VERSION = 1
# what a bundle deploys: a split (head on the device, tail on the server), the image sent
# to the whole model on the server (no head), or the whole model on the device (no tail)
MODES = ("split", "image", "device-only")
MANIFEST_FILE = "manifest.json"
HEAD_XML, HEAD_BIN, TAIL_FILE = "head.xml", "head.bin", "tail.pt2"


class BundleError(SplitnetError):
    """A bundle that cannot be used: missing or corrupt files, a bad manifest."""


@dataclass(frozen=True)
class InputSpec:
    """What the head takes and how a raw frame becomes the model's input.

    Attributes:
        shape: the model input ``[C, H, W]`` (batch 1).
        frame_shape: the raw frame the device feeds ``[H, W, C]``.
        layout: layout of the raw frame (``"NHWC"``).
        model_layout: layout of the model input (``"NCHW"``).
        color: channel order of the raw frame (``"RGB"``).
        dtype: dtype of the raw frame (``"uint8"``).
        scale: the frame is divided by this first (255: to [0, 1]).
        mean, std: then per channel ``(x - mean) / std``.
        resize: ``"none"``: the frame must already be ``H x W``.
        embedded: the steps above are inside the IR (OpenVINO preprocessing),
            so the device feeds the raw frame as is.
    """

    shape: tuple[int, ...]
    frame_shape: tuple[int, ...]
    layout: str = "NHWC"
    model_layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "uint8"
    scale: float = 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: str = "none"
    embedded: bool = True

    @classmethod
    def from_dict(cls, doc: Any) -> InputSpec:
        """The ``input`` section; a missing key raises ``KeyError`` (named by the caller)."""
        return cls(
            **{
                **doc,
                "shape": _ints(doc["shape"], "input.shape"),
                "frame_shape": _ints(doc["frame_shape"], "input.frame_shape"),
                "mean": tuple(float(v) for v in doc.get("mean", ())),
                "std": tuple(float(v) for v in doc.get("std", ())),
            }
        )


@dataclass(frozen=True)
class TensorSpec:
    """One crossing tensor: its name (the split point that produced it), shape, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_dict(cls, doc: Any) -> TensorSpec:
        """One entry of the ``crossing`` list."""
        return cls(str(doc["name"]), _ints(doc["shape"], "crossing.shape"), str(doc["dtype"]))


@dataclass(frozen=True)
class OutputSpec:
    """What the tail returns: ``kind`` ``"mask"`` (N x classes x H x W logits) or ``"classes"``."""

    kind: str
    multilabel: bool
    class_names: tuple[str, ...]

    @classmethod
    def from_dict(cls, doc: Any) -> OutputSpec:
        """The ``output`` section."""
        return cls(str(doc["kind"]), bool(doc["multilabel"]), tuple(map(str, doc["class_names"])))


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``.

    Attributes:
        format_version: :data:`FORMAT_VERSION` of the writer.
        name: the name a server registers (``<model>.<split point>`` by default).
        model: the registered model name; ``model_args`` the builder's extra keywords.
        task, num_classes: from the model's ``ModelInfo``.
        split: ``{"index", "name", "kind", "op"}`` of the split point.
        input: how to feed the head (:class:`InputSpec`).
        crossing: the tensors the head returns, in order.
        output: what the tail returns.
        codec: ``{"name", "options", "calibration"}`` for the crossing tensors.
        head: ``{"xml", "bin", "target", "precision", "ir_version", "opsets", ...}``.
        tail: ``{"file", "format", "batch": "dynamic" | "static", "max_batch"}``.
        parity: the export-time comparison of OpenVINO and torch.
        versions: library versions that wrote the bundle.
        files: relative path -> sha256 of every file but the manifest.
        mode: one of :data:`MODES`: ``split``; ``image`` (no head: the device codes the
            frame itself as PNG/JPEG, the tail is the whole model, normalisation
            included); ``device-only`` (the head is the whole model, no tail, no codec).
        confidence: a classifier's temperature, abstain cap and margin (see
            :class:`splitnet.bundle.Confidence`); written by ``splitnet calibrate``.
    """

    format_version: int
    name: str
    model: str
    model_args: dict[str, Any]
    task: str
    num_classes: int
    split: dict[str, Any]
    input: InputSpec
    crossing: tuple[TensorSpec, ...]
    output: OutputSpec
    codec: dict[str, Any]
    head: dict[str, Any]
    tail: dict[str, Any]
    parity: dict[str, Any]
    versions: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    mode: str = "split"
    confidence: dict[str, Any] = field(default_factory=dict)

    @property
    def has_head(self) -> bool:
        """Whether the device runs a head IR (not for ``image`` bundles)."""
        return self.mode != "image"

    @property
    def has_tail(self) -> bool:
        """Whether a server runs a tail (not for ``device-only`` bundles)."""
        return self.mode != "device-only"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists); ``mode`` only where it is not ``split``,
        so split bundles keep the manifest they always had."""
        doc = json.loads(json.dumps(asdict(self)))
        if doc["mode"] == "split":
            del doc["mode"]
        if not doc["confidence"]:
            del doc["confidence"]
        return doc

    def to_json(self) -> str:
        """Indented JSON with lists of numbers or strings kept on one line."""
        return _dumps(self.to_dict()) + "\n"

    def make_codec(self):
        """The bundle's codec for the crossing tensors, calibration included (torch-free)."""
        from splitnet.codec import get_codec

        if self.mode == "device-only":
            raise BundleError(f"bundle {self.name} is device-only: nothing is coded or sent")
        options = dict(self.codec.get("options") or {})
        if self.codec.get("calibration") is not None:
            options["calibration"] = self.codec["calibration"]
        return get_codec(self.codec["name"], **options)

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        """Parses and checks a manifest document; raises :class:`BundleError`."""
        if not isinstance(doc, dict):
            raise BundleError("manifest must be a JSON object")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"manifest format_version {version!r} is not supported (this splitnet reads "
                f"{FORMAT_VERSION}); re-export the bundle"
            )
        try:
            m = cls._parse(doc)
        except KeyError as e:
            raise BundleError(f"manifest is missing the field {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, BundleError):
                raise
            raise BundleError(f"manifest is malformed: {e}") from None
        m._check()
        return m

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> Manifest:
        """The fields, each read by its own class; raises ``KeyError``/``TypeError``/...."""
        # the order of the reads decides which missing field a message names: keep it
        spec = InputSpec.from_dict(doc["input"])
        crossing = tuple(TensorSpec.from_dict(t) for t in doc["crossing"])
        output = OutputSpec.from_dict(doc["output"])
        files = doc["files"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise BundleError("manifest 'files' must map paths to sha256 strings")
        return cls(
            format_version=int(doc["format_version"]),
            name=str(doc["name"]),
            model=str(doc["model"]),
            model_args=dict(doc.get("model_args") or {}),
            task=str(doc["task"]),
            num_classes=int(doc["num_classes"]),
            split=dict(doc["split"]),
            input=spec,
            crossing=crossing,
            output=output,
            codec=dict(doc["codec"]),
            head=dict(doc["head"]),
            tail=dict(doc["tail"]),
            parity=dict(doc.get("parity") or {}),
            versions=dict(doc.get("versions") or {}),
            files=dict(files),
            mode=str(doc.get("mode", "split")),
            confidence=dict(doc.get("confidence") or {}),
        )

    def _check(self) -> None:
        """What must hold across fields once they parse; raises :class:`BundleError`."""
        if not self.crossing:
            raise BundleError("manifest lists no crossing tensors")
        if self.output.kind not in ("mask", "classes"):
            raise BundleError(
                f"manifest output.kind must be 'mask' or 'classes', got {self.output.kind!r}"
            )
        if self.mode not in MODES:
            raise BundleError(f"manifest mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for key in ("xml", "bin") if self.has_head else ():
            if key not in self.head:
                raise BundleError(f"manifest head is missing {key!r}")
        if self.has_tail and "file" not in self.tail:
            raise BundleError("manifest tail is missing 'file'")
        paths = [*self.files]
        paths += [self.tail["file"]] if self.has_tail else []
        paths += [self.head["xml"], self.head["bin"]] if self.has_head else []
        for path in paths:
            if not _inside(path):
                raise BundleError(f"manifest file path {path!r} leaves the bundle")
        if self.confidence:
            if self.output.kind != "classes":
                raise BundleError("manifest 'confidence' applies to classifiers only")
            from splitnet.bundle._confidence import Confidence

            Confidence.from_dict(self.confidence)  # raises on bad values


def _inside(path: Any) -> bool:
    """Whether ``path`` names a file inside the bundle folder (relative, no ``..``)."""
    return (
        isinstance(path, str)
        and bool(path)
        and not Path(path).is_absolute()
        and not PureWindowsPath(path).drive
        and ".." not in Path(path).parts
    )


def _dumps(value: Any, indent: int = 0) -> str:
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [f"{pad}{_dumps(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value)


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise BundleError(f"manifest {what} must be a list of positive integers, got {value!r}")
    return tuple(value)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(bundle_dir: str | os.PathLike, manifest: Manifest, *, only=None) -> None:
    """Checks that every file of the manifest (or those in ``only``) exists with its sha256.

    Raises:
        BundleError: a missing file or a checksum mismatch, named.
    """
    root = Path(bundle_dir)
    for rel, digest in manifest.files.items():
        if only is not None and rel not in only:
            continue
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle {root} is missing {rel}")
        actual = file_sha256(path)
        if actual != digest:
            raise BundleError(
                f"checksum mismatch for {rel} in {root}: manifest says {digest[:12]}..., "
                f"file is {actual[:12]}... (corrupt or modified)"
            )


def read_manifest(bundle_dir: str | os.PathLike, *, verify: bool = True, only=None) -> Manifest:
    """Reads ``bundle_dir/manifest.json`` and (by default) checks the files' sha256.

    Args:
        bundle_dir: the bundle folder.
        verify: check the checksums of the files (``only``: just these relative paths).

    Raises:
        BundleError: no such folder or manifest, malformed JSON or fields,
            a missing file or a checksum mismatch.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {root}")
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST_FILE} is missing")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    manifest = Manifest.from_dict(doc)
    for key in ("xml", "bin") if manifest.has_head else ():
        if manifest.head[key] not in manifest.files:
            raise BundleError(f"manifest lists no checksum for the head file {manifest.head[key]}")
    if verify:
        verify_files(root, manifest, only=only)
    return manifest
