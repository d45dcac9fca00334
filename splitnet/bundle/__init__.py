"""Split bundles: the files a device and a server deploy, described by ``manifest.json``.

A bundle is a folder written by ``splitnet export``::

    head.xml, head.bin   OpenVINO IR of the head (the device runs it)
    tail.pt2             torch.export program of the tail (the server runs it)
    manifest.json        what the files are, how to feed them, and their sha256

This package reads a bundle; the writer lives in :mod:`splitnet.export`.
Importing it imports only the standard library, so the device (no torch) and
the server (no OpenVINO) both use it: :func:`read_manifest` needs nothing
more, :func:`load_tail` (the server's side) imports torch when called.

Example:
    >>> m = read_manifest("bundles/unet-vgg16.encoder.block3.pool")
    >>> m.name, [t.name for t in m.crossing]
    ('unet-vgg16.encoder.block3.pool', ['encoder.block1.relu2', ...])
"""

from splitnet.bundle._confidence import Confidence, expected_calibration_error
from splitnet.bundle._manifest import (
    FORMAT_VERSION,
    HEAD_BIN,
    HEAD_XML,
    MANIFEST_FILE,
    TAIL_FILE,
    BundleError,
    InputSpec,
    Manifest,
    OutputSpec,
    TensorSpec,
    file_sha256,
    read_manifest,
    verify_files,
)
from splitnet.bundle._tail import load_tail
from splitnet.bundle._versions import complete_versions, publish_version, version_dirs

__all__ = [
    "Confidence",
    "expected_calibration_error",
    "FORMAT_VERSION",
    "HEAD_BIN",
    "HEAD_XML",
    "MANIFEST_FILE",
    "TAIL_FILE",
    "BundleError",
    "InputSpec",
    "Manifest",
    "OutputSpec",
    "TensorSpec",
    "complete_versions",
    "file_sha256",
    "load_tail",
    "publish_version",
    "read_manifest",
    "verify_files",
    "version_dirs",
]
