"""Explain one image with a split bundle: the head runs here, the heatmap comes from the
tail (issue 15).

:func:`explain_image` runs the bundle's head on the image (OpenVINO, as the device
does), codes the crossing tensors with the bundle's codec and asks for the
``heatmap`` output, either of a running ``splitnet serve`` (``server=HOST:PORT``;
nothing here imports torch then) or of the bundle's tail in this process (no
server; needs the ``server`` extra). :func:`heatmap_overlay` draws the answer over
the image for people to look at, which ``splitnet explain`` writes as PNG.

Classifiers get Grad-CAM of the explained class at a layer of the tail
(``[1, H, W]``); segmentation bundles get the per-class probability maps
(``[C, H, W]``), of which the overlay draws one class.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitnet._errors import ConfigError

__all__ = ["Explanation", "explain_image", "heatmap_overlay", "load_image"]


@dataclass(frozen=True)
class Explanation:
    """What the tail answered about one image.

    Attributes:
        image: the frame the head ran on, ``H x W x 3`` uint8 (resized to the bundle).
        heatmap: ``[1, H, W]`` (a classifier's Grad-CAM) or ``[C, H, W]`` (segmentation
            probabilities), uint8, 255 the strongest.
        task: ``classification`` or ``segmentation``.
        classes: a classifier's top-k classes, most probable first (empty for segmentation).
        probabilities: their (calibrated) probabilities.
        explained: the class the heatmap explains (a classifier's ``--class``, or its top-1;
            for segmentation the class drawn by default: the one with the strongest map).
        class_names: the bundle's class names (may be empty).
        uncertain: the bundle's abstain rule fired (classifiers; None if not answered).
    """

    image: np.ndarray
    heatmap: np.ndarray
    task: str
    classes: tuple[int, ...] = ()
    probabilities: tuple[float, ...] = ()
    explained: int = 0
    class_names: tuple[str, ...] = field(default=())
    uncertain: bool | None = None

    def name(self, k: int) -> str:
        return self.class_names[k] if k < len(self.class_names) else str(k)

    def to_json(self) -> dict:
        doc = {
            "task": self.task,
            "explained": self.explained,
            "explained_name": self.name(self.explained),
        }
        if self.task != "segmentation":
            doc["top_k"] = [
                {"class": c, "name": self.name(c), "probability": p}
                for c, p in zip(self.classes, self.probabilities, strict=True)
            ]
            doc["uncertain"] = self.uncertain
        else:
            doc["peak_per_class"] = [int(m.max()) for m in self.heatmap]
        return doc


def load_image(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """An image file as ``height x width x 3`` uint8 RGB (resized bilinearly if needed).

    Raises:
        ConfigError: the file is not an image PIL can read.
    """
    from PIL import Image, UnidentifiedImageError

    from splitnet.device._sources import _resize  # as the daemon resizes its sources

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ConfigError(f"{path}: not an image file") from None
    return _resize(rgb, height, width)


def _request(manifest, payload: bytes, target: int | None, layer: str | None):
    from splitnet.wire import make_infer_request

    params: dict = {}
    if target is not None:
        params["heatmap_class"] = int(target)
    if layer is not None:
        params["heatmap_layer"] = layer
    outputs = ["heatmap"]
    if manifest.task != "segmentation":
        outputs += ["classes", "probabilities", "uncertain"]
    return make_infer_request(manifest.name, payload, parameters=params, outputs=outputs)


async def _ask_server(server: str, request, *, token_file=None, tls_ca=None):
    import grpc

    from splitnet.wire import inference_pb2_grpc
    from splitnet.wire._client import bearer_metadata, client_channel

    limit = 64 << 20
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    channel = client_channel(server, options=options, tls_ca=tls_ca)
    try:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        return await stub.ModelInfer(request, metadata=bearer_metadata(token_file), timeout=120)
    except grpc.aio.AioRpcError as e:
        raise ConfigError(f"server {server}: {e.code().name}: {e.details()}") from None
    finally:
        await channel.close()


async def _ask_local(bundle: Path, request):
    from splitnet.server import TailModel
    from splitnet.server._core import InferenceCore, InferError

    model = TailModel(bundle)
    core = InferenceCore({model.name: model})
    try:
        return await core.infer(request)
    except InferError as e:
        raise ConfigError(f"{e.code.name}: {e}") from None
    finally:
        await core.close()


def explain_image(
    image: str | os.PathLike | np.ndarray,
    bundle: str | os.PathLike,
    *,
    server: str | None = None,
    target: int | None = None,
    layer: str | None = None,
    head_device: str = "CPU",
    token_file: str | None = None,
    tls_ca: str | None = None,
) -> Explanation:
    """Runs the bundle's head on ``image`` and asks the tail for its heatmap.

    Args:
        image: an image file (resized to the bundle's input) or an ``H x W x 3`` uint8 frame.
        bundle: a split bundle folder (``splitnet export``); the server must serve the same
            model when ``server`` is given.
        server: ``HOST:PORT`` of a ``splitnet serve``; None runs the tail in this process.
        target: the class to explain (default: the most probable one).
        layer: the tail layer for Grad-CAM (default: the bundle's, else the last conv block).

    Raises:
        ConfigError: a bad image or bundle, or the tail's refusal (e.g. nothing to explain,
            a class out of range), with the server's status name.
    """
    from splitnet.bundle import read_manifest
    from splitnet.device._daemon import current_bundle
    from splitnet.device._modes import open_head
    from splitnet.wire import output_arrays

    folder, _ = current_bundle(bundle)
    manifest = read_manifest(folder)
    if manifest.mode != "split":
        raise ConfigError(
            f"{folder} is a {manifest.mode} bundle: heatmaps come from the tail of a split bundle"
        )
    h, w = manifest.input.frame_shape[:2]
    frame = image if isinstance(image, np.ndarray) else load_image(image, h, w)
    head = open_head(folder, device=head_device)
    payload = manifest.make_codec().encode(head(frame))
    request = _request(manifest, payload, target, layer)
    if server is None:
        response = asyncio.run(_ask_local(folder, request))
    else:
        response = asyncio.run(_ask_server(server, request, token_file=token_file, tls_ca=tls_ca))
    out = output_arrays(response)
    heatmap = np.asarray(out["heatmap"], np.uint8)
    names = tuple(manifest.output.class_names)
    if manifest.task == "segmentation":
        explained = (
            int(heatmap.reshape(len(heatmap), -1).max(axis=1).argmax())
            if target is None
            else target
        )
        return Explanation(frame, heatmap, manifest.task, explained=explained, class_names=names)
    classes = tuple(int(c) for c in np.ravel(out["classes"]))
    probs = tuple(float(p) for p in np.ravel(out["probabilities"]))
    uncertain = bool(np.ravel(out["uncertain"])[0]) if "uncertain" in out else None
    explained = classes[0] if target is None else int(target)
    return Explanation(frame, heatmap, manifest.task, classes, probs, explained, names, uncertain)


def heatmap_overlay(
    image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """``heatmap`` (``H x W`` uint8) in a matplotlib colormap blended over ``image``.

    Returns:
        ``H x W x 3`` uint8.
    """
    from matplotlib import colormaps

    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap of shape {heatmap.shape} for an image of shape {image.shape}")
    colors = colormaps[colormap](heatmap.astype(np.float32) / 255.0)[..., :3] * 255.0
    out = (1 - alpha) * image.astype(np.float32) + alpha * colors
    return out.round().clip(0, 255).astype(np.uint8)
