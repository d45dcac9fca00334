"""atheris fuzz targets: ``decode``, and the server's handling of a request message.

Run (what ``tests/test_fuzz.py`` does, under the ``slow`` marker)::

    python tests/fuzz_targets.py decode tests/corpus/decode -runs=20000
    python tests/fuzz_targets.py request REPOSITORY tests/corpus/request -runs=2000

``decode``: any bytes decode or raise ``CodecError``. ``request``: any bytes that
parse as a ``ModelInferRequest`` are answered, or refused with a status a client
mistake maps to (never INTERNAL). A failure is a crash: atheris prints the input
and exits non-zero. ``python tests/fuzz_targets.py corpus REPOSITORY`` rewrites
the committed seed corpus.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["splitnet"]):
    from splitnet.codec import CodecError, decode

HERE = Path(__file__).parent
CLIENT_MISTAKES = {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"}


def decode_target(data: bytes) -> None:
    try:
        out = decode(data, max_elements=1 << 20)
    except CodecError:
        return
    assert isinstance(out, list)


def request_target(repository: str):
    with atheris.instrument_imports(include=["splitnet.server"]):
        from google.protobuf.message import DecodeError

        from splitnet.server import load_repository
        from splitnet.server._core import InferenceCore, InferError
        from splitnet.wire import inference_pb2 as pb

    loop = asyncio.new_event_loop()
    core = InferenceCore(load_repository(repository), max_delay_ms=0)

    def target(data: bytes) -> None:
        try:
            request = pb.ModelInferRequest.FromString(data)
        except DecodeError:
            return
        try:
            loop.run_until_complete(core.infer(request, caller="fuzz"))
        except InferError as e:
            assert e.code.name in CLIENT_MISTAKES, f"{e.code.name}: {e.message}"

    return target


def write_corpus(repository: str) -> None:
    """Small seeds: payloads of every codec, and requests for the repository's models."""
    import numpy as np

    from splitnet.codec import get_codec
    from splitnet.server import load_repository
    from splitnet.wire import make_infer_request

    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((1, 4, 3, 2), dtype=np.float32), 0)
    for name, stage, extra in [
        ("f32", "none", {}),
        ("f16", "zstd", {}),
        ("q4", "none", {}),
        ("q4", "ans", {}),
        ("q8", "ans", {"ans_model": "channel"}),
    ]:
        payload = get_codec(name, entropy=stage, **extra).encode([x])
        (HERE / "corpus" / "decode" / f"{name}-{stage}.bin").write_bytes(payload)
    for i, (name, model) in enumerate(sorted(load_repository(repository).items())):
        shapes = [t.shape for t in model.manifest.crossing]
        tensors = [np.abs(rng.normal(size=s)).astype(np.float32) for s in shapes]
        payload = model.manifest.make_codec().encode(tensors)
        params = {"device_id": "fuzz", "frame_id": i, "top_k": 3}
        for j, req in enumerate(
            [
                make_infer_request(name, payload, request_id=f"r{i}", parameters=params),
                make_infer_request(name, b"SNTC\x01\x03\x04\x02", parameters=params),
            ]
        ):
            path = HERE / "corpus" / "request" / f"{model.task}-{j}.bin"
            path.write_bytes(req.SerializeToString())


def main(argv: list[str]) -> None:
    if argv[1] == "corpus":
        write_corpus(argv[2])
        return
    if argv[1] == "decode":
        target, rest = decode_target, argv[2:]
    else:
        target, rest = request_target(argv[2]), argv[3:]
    atheris.Setup([argv[0], *rest], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
