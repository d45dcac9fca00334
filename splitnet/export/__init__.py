"""Export a split as a deployable bundle: the head as OpenVINO IR, the tail as a program.

``export_bundle`` (and ``splitnet export``) writes ``head.xml``/``head.bin``
(FP16 IR with the frame preprocessing built in), ``tail.pt2``
(``torch.export``, dynamic batch) and ``manifest.json``, after checking the
IR against torch. Export targets (``cpu``, ``myriad``) say what IR a device
can take; the Myriad X profile's supported operations are data, in
``myriad_ops.json``. Reading a bundle (``load_tail`` included, re-exported
here) lives in :mod:`splitnet.bundle`; the device runs the head with
:mod:`splitnet.device`.
"""

from splitnet.bundle import load_tail
from splitnet.export._bundle import (
    HEAD_BIN,
    HEAD_XML,
    MAX_BATCH,
    TAIL_FILE,
    ExportError,
    ExportResult,
    export_bundle,
)
from splitnet.export._ir import convert_head, normalize_frame
from splitnet.export._parity import ParityError, ParityReport, TensorParity, compare_outputs
from splitnet.export._targets import (
    ExportTarget,
    OpViolation,
    get_target,
    list_targets,
    load_myriad_ops,
    register_target,
)
from splitnet.export._variants import (
    HEAD_VARIANTS,
    HeadVariant,
    Validation,
    get_variant,
    list_variants,
)
from splitnet.export._whole import WHOLE_MODES, export_whole

__all__ = [
    "HEAD_BIN",
    "HEAD_VARIANTS",
    "HEAD_XML",
    "MAX_BATCH",
    "TAIL_FILE",
    "WHOLE_MODES",
    "ExportError",
    "ExportResult",
    "ExportTarget",
    "HeadVariant",
    "OpViolation",
    "ParityError",
    "ParityReport",
    "TensorParity",
    "Validation",
    "compare_outputs",
    "convert_head",
    "export_bundle",
    "export_whole",
    "get_target",
    "get_variant",
    "list_targets",
    "list_variants",
    "load_myriad_ops",
    "load_tail",
    "normalize_frame",
    "register_target",
]
