"""The wire format: generated code is fresh, fast requests parse, tritonclient's fields match."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from splitnet.wire import inference_pb2 as pb
from splitnet.wire import make_infer_request

pytestmark = pytest.mark.grpc


def test_generated_code_is_fresh(tmp_path):
    import importlib.util

    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("generate", root / "proto" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path in gen.generate(tmp_path):
        committed = root / "splitnet" / "wire" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make proto`"


def test_pre_serialized_requests_are_the_protobuf_message():
    from splitnet.wire import encode_infer_request

    payload = bytes(range(256)) * 3000
    kw = {"request_id": "d/3", "parameters": {"device_id": "d", "frame_id": 3}, "outputs": ["mask"]}
    fast = pb.ModelInferRequest.FromString(encode_infer_request("m", payload, **kw))
    assert fast == make_infer_request("m", payload, **kw)
    assert list(fast.inputs[0].shape) == [len(payload)] and fast.raw_input_contents[0] == payload


TRITON_FIELDS = """
import json
from tritonclient.grpc import service_pb2 as s
msgs = {}
def walk(d, prefix=""):
    msgs[prefix + d.name] = {f.name: [f.number, f.type, f.is_repeated] for f in d.fields}
    for n in d.nested_types:
        walk(n, prefix + d.name + ".")
for d in s.DESCRIPTOR.message_types_by_name.values():
    walk(d)
svc = s.DESCRIPTOR.services_by_name["GRPCInferenceService"]
methods = {m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming] for m in svc.methods}
print(json.dumps({"messages": msgs, "methods": methods}))
"""


def test_wire_is_compatible_with_tritonclient():
    """Every message, field and method of ours has tritonclient's number, type and shape."""
    import importlib.util
    import json
    import sys

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    theirs = json.loads(
        subprocess.run(
            [sys.executable, "-c", TRITON_FIELDS], check=True, capture_output=True, text=True
        ).stdout
    )

    def walk(d, prefix=""):
        yield prefix + d.name, d
        for n in d.nested_types:
            yield from walk(n, prefix + d.name + ".")

    for top in pb.DESCRIPTOR.message_types_by_name.values():
        for name, d in walk(top):
            for f in d.fields:
                assert theirs["messages"][name][f.name] == [f.number, f.type, f.is_repeated], (
                    f"{name}.{f.name}"
                )
    svc = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for m in svc.methods:
        ours = [
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        ]
        assert theirs["methods"][m.name] == ours, m.name
