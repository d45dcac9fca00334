"""The wire format: KServe v2 gRPC messages and helpers between them and numpy.

``inference_pb2`` / ``inference_pb2_grpc`` are generated from
``proto/inference.proto`` by ``proto/generate.py``; this package imports
numpy and protobuf/grpc, never torch (the device daemon uses it).
"""

from splitnet.wire import inference_pb2, inference_pb2_grpc
from splitnet.wire._auth import read_token
from splitnet.wire._tensors import (
    DATATYPES,
    PAYLOAD_INPUT,
    STREAM_INFER_METHOD,
    deserialize_bytes,
    encode_infer_request,
    get_parameter,
    make_infer_request,
    output_arrays,
    serialize_bytes,
    serialize_infer_request,
    set_parameter,
    stream_infer_method,
    to_datatype,
    to_numpy_dtype,
)

__all__ = [
    "DATATYPES",
    "PAYLOAD_INPUT",
    "STREAM_INFER_METHOD",
    "deserialize_bytes",
    "encode_infer_request",
    "get_parameter",
    "inference_pb2",
    "inference_pb2_grpc",
    "make_infer_request",
    "output_arrays",
    "read_token",
    "serialize_bytes",
    "serialize_infer_request",
    "set_parameter",
    "stream_infer_method",
    "to_datatype",
    "to_numpy_dtype",
]
