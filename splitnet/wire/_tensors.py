"""numpy arrays <-> KServe v2 tensors, and typed request parameters."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import numpy as np

from splitnet._errors import SplitnetError
from splitnet.wire import inference_pb2 as pb

# the one input of every splitnet model: a codec payload as a UINT8 vector
PAYLOAD_INPUT = "payload"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}

# which InferTensorContents field holds each datatype when raw contents are not used
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


class WireError(SplitnetError):
    """A KServe v2 message or tensor that cannot be built or read."""


def to_datatype(dtype: np.dtype | type) -> str:
    """numpy dtype -> KServe datatype name (``uint8`` -> ``"UINT8"``)."""
    try:
        return _BY_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise WireError(f"no KServe datatype for numpy dtype {np.dtype(dtype)}") from None


def to_numpy_dtype(datatype: str) -> np.dtype:
    """KServe datatype name -> numpy dtype; unknown names raise ``ValueError``."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise WireError(
            f"unsupported datatype {datatype!r}; supported: {', '.join(DATATYPES)}"
        ) from None


def set_parameter(params, key: str, value: bool | int | float | str) -> None:
    """Sets ``params[key]`` (a protobuf map of InferParameter) from a Python value."""
    p = params[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    elif isinstance(value, str):
        p.string_param = value
    else:
        raise TypeError(f"parameter {key!r}: unsupported type {type(value).__name__}")


def get_parameter(params, key: str, default=None):
    """The Python value of ``params[key]``, or ``default`` when absent."""
    if key not in params:
        return default
    p = params[key]
    which = p.WhichOneof("parameter_choice")
    return default if which is None else getattr(p, which)


def make_infer_request(
    model_name: str,
    payload: bytes,
    *,
    request_id: str = "",
    parameters: Mapping[str, bool | int | float | str] | None = None,
    outputs: list[str] | None = None,
    model_version: str = "",
) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying one codec payload as the UINT8 input ``payload``
    (``model_version``: the version that must answer; ``""``: the server's default)."""
    req = pb.ModelInferRequest(model_name=model_name, model_version=model_version, id=request_id)
    req.inputs.add(name=PAYLOAD_INPUT, datatype="UINT8", shape=[len(payload)])
    req.raw_input_contents.append(payload)
    for key, value in (parameters or {}).items():
        set_parameter(req.parameters, key, value)
    for name in outputs or ():
        req.outputs.add(name=name)
    return req


# ModelInferRequest.raw_input_contents is field 7, length-delimited: tag (7 << 3) | 2
_RAW_INPUT_TAG = b"\x3a"
STREAM_INFER_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def serialize_infer_request(request: pb.ModelInferRequest, raw_inputs: list[bytes]) -> bytes:
    """``request`` with ``raw_inputs`` appended as its ``raw_input_contents``, serialized.

    The same bytes as ``SerializeToString`` of the full message (protobuf writes
    fields in number order and ``raw_input_contents``, field 7, is the last), but
    the large payloads are joined rather than copied through the protobuf
    encoder, which is an order of magnitude slower for megabytes.
    """
    if request.raw_input_contents:
        raise WireError("request already holds raw_input_contents")
    parts = [request.SerializeToString()]
    for raw in raw_inputs:
        parts += [_RAW_INPUT_TAG, _varint(len(raw)), raw]
    return b"".join(parts)


def encode_infer_request(
    model_name: str,
    payload: bytes,
    *,
    request_id: str = "",
    parameters: Mapping[str, bool | int | float | str] | None = None,
    outputs: list[str] | None = None,
    model_version: str = "",
) -> bytes:
    """:func:`make_infer_request`, serialized (fast for large payloads): what the device
    daemon writes on a stream opened with :func:`stream_infer_method`."""
    request = make_infer_request(
        model_name,
        b"",
        request_id=request_id,
        parameters=parameters,
        outputs=outputs,
        model_version=model_version,
    )
    request.inputs[0].shape[:] = [len(payload)]
    del request.raw_input_contents[:]
    return serialize_infer_request(request, [payload])


def stream_infer_method(channel):
    """``ModelStreamInfer`` on ``channel`` taking pre-serialized requests (bytes)."""
    return channel.stream_stream(
        STREAM_INFER_METHOD,
        request_serializer=None,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )


def serialize_bytes(items: Iterable[bytes]) -> bytes:
    """A BYTES tensor's raw contents: each element as a 4-byte little-endian length and
    its bytes (the KServe v2 and Triton layout)."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """The elements of a BYTES tensor's raw contents (:func:`serialize_bytes`)."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise WireError(f"BYTES contents end inside an element's length at byte {offset}")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise WireError(
                f"BYTES element of {size} bytes at byte {offset} runs past the contents' {len(raw)}"
            )
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    return items


def output_arrays(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The response's outputs as numpy arrays, by name (raw or typed contents)."""
    arrays = {}
    raw = list(response.raw_output_contents)
    for i, out in enumerate(response.outputs):
        shape = tuple(int(d) for d in out.shape)
        if out.datatype == "BYTES":  # classification results: an object array of bytes
            items = deserialize_bytes(raw[i]) if raw else list(out.contents.bytes_contents)
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            if arr.size != (int(np.prod(shape, dtype=np.int64)) if shape else 1):
                raise WireError(f"output {out.name!r}: {arr.size} elements for shape {list(shape)}")
            arrays[out.name] = arr.reshape(shape)
            continue
        dtype = to_numpy_dtype(out.datatype)
        if raw:
            if i >= len(raw):
                raise WireError(
                    f"response has {len(response.outputs)} outputs but {len(raw)} raw contents"
                )
            arr = np.frombuffer(raw[i], dtype=dtype.newbyteorder("<"))
        else:
            arr = np.asarray(getattr(out.contents, _CONTENTS_FIELD[out.datatype]), dtype=dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if arr.size != count:
            raise WireError(f"output {out.name!r}: {arr.size} elements for shape {list(shape)}")
        arrays[out.name] = arr.reshape(shape).astype(dtype, copy=False)
    return arrays
