"""Representative search: the labelled references nearest to an image.

For each candidate class of a classification, a technician sees reference images of
that class found by classical image comparison (histograms, perceptual hashes, SSIM,
MSE) over labelled images or frames extracted from labelled video clips. Torch-free:
the device side uses :func:`image_hash` to send a frame's hash to the server.

Example:
    >>> from splitnet.index import list_methods
    >>> list_methods()[:2]
    ['hist-correl', 'hist-chisqr']
"""

from splitnet.index._features import (
    COLOUR_SPACES,
    HASH_METHODS,
    METHODS,
    IndexError_,
    Method,
    get_method,
    hamming,
    image_hash,
    list_methods,
)
from splitnet.index._frames import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Frame,
    list_files,
    read_frames,
)
from splitnet.index._index import Match, RepresentativeIndex, build_index, parse_size

__all__ = [
    "COLOUR_SPACES",
    "HASH_METHODS",
    "IMAGE_EXTENSIONS",
    "METHODS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "IndexError_",
    "Match",
    "Method",
    "RepresentativeIndex",
    "build_index",
    "get_method",
    "hamming",
    "image_hash",
    "list_files",
    "list_methods",
    "parse_size",
    "read_frames",
]
