"""Split bundles: export, parity, the Myriad X profile, the torch-free HeadRunner, bad bundles."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from _no_torch import run_without_torch  # noqa: E402
from torch import nn  # noqa: E402

from splitnet.bundle import BundleError, Manifest, read_manifest  # noqa: E402
from splitnet.cli.main import main  # noqa: E402
from splitnet.device import (  # noqa: E402
    DeviceError,
    FrameError,
    HeadRunner,
    benchmark_head,
)
from splitnet.export import (  # noqa: E402
    ExportError,
    ParityError,
    export_bundle,
    get_target,
    list_targets,
    load_myriad_ops,
    load_tail,
    normalize_frame,
)
from splitnet.models import create_model  # noqa: E402
from splitnet.split import trace  # noqa: E402

pytestmark = pytest.mark.export

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).parent / "expected"
SEG = dict(model="unet-vgg16", model_args={"width": 0.25}, shape=(3, 64, 64))
SEG_SPLIT = "encoder.block3.pool"
CLS = dict(model="resnet18", model_args={}, shape=(3, 64, 64))
CLS_SPLIT = "layer2.0.bn2"  # two crossing tensors: the main path and the residual


class Upsampler(nn.Module):
    """A tiny head-and-tail model with a post-opset10 operation (bilinear -> Interpolate-11)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.c3(x)


def _frame(shape, seed=1) -> np.ndarray:
    c, h, w = shape
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _export(spec, split, out, **kw):
    torch.manual_seed(0)
    return export_bundle(
        spec["model"],
        input_shape=spec["shape"],
        split=split,
        out_dir=out,
        model_args=spec["model_args"],
        **kw,
    )


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "bundle"
    return _export(SEG, SEG_SPLIT, out, target="myriad", codec="q4", calibrate=2)


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "bundle"
    return _export(CLS, CLS_SPLIT, out, target="cpu")


def _same_model(spec):
    torch.manual_seed(0)
    return create_model(spec["model"], **spec["model_args"])


# ---- round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["seg", "cls"])
def test_bundle_round_trip(which, request):
    spec, split, result = (
        (SEG, SEG_SPLIT, request.getfixturevalue("seg_bundle"))
        if which == "seg"
        else (CLS, CLS_SPLIT, request.getfixturevalue("cls_bundle"))
    )
    d = result.bundle_dir
    assert sorted(p.name for p in d.iterdir()) == [
        "head.bin",
        "head.xml",
        "manifest.json",
        "tail.pt2",
    ]
    m = read_manifest(d)
    assert m == result.manifest
    assert m.name == f"{spec['model']}.{split}"
    assert m.split["name"] == split
    assert m.input.shape == spec["shape"] and m.input.frame_shape == (64, 64, 3)
    assert m.output.kind == ("mask" if which == "seg" else "classes")
    assert len(m.output.class_names) == m.num_classes
    assert set(m.versions) == {"splitnet", "torch", "openvino", "numpy"}
    assert m.tail["batch"] == "dynamic"

    model = _same_model(spec)
    g = trace(model, torch.zeros(1, *spec["shape"]))
    point = g.point(split)
    assert [t.name for t in m.crossing] == [t.name for t in point.tensors]
    assert [t.shape for t in m.crossing] == [t.shape for t in point.tensors]
    head, tail = g.split(point)

    frame = _frame(spec["shape"])
    x = normalize_frame(frame, m.input)
    runner = HeadRunner(d)
    got = runner(frame)
    with torch.no_grad():
        want = [t.numpy() for t in head(x)]
    assert [a.shape for a in got] == [b.shape for b in want]
    for a, b in zip(got, want, strict=True):
        assert np.abs(a - b).max() <= m.parity["tolerance"] * np.abs(b).max()

    # the saved tail (no model source) on a batch of 2 equals the in-memory tail (traced at
    # batch 1) frame by frame
    loaded = load_tail(d)
    import zipfile

    sizes = {i.filename: i.file_size for i in zipfile.ZipFile(d / "tail.pt2").infolist()}
    assert sum(v for k, v in sizes.items() if "sample_inputs" in k) < 1024  # no example tensors
    batch = [torch.randn(2, *t.shape[1:]) for t in m.crossing]
    with torch.no_grad():
        per_frame = torch.cat([tail(*[b[i : i + 1] for b in batch]) for i in range(2)])
        torch.testing.assert_close(loaded(*batch), per_frame, rtol=1e-5, atol=1e-5)
        # device head + server tail reproduce the whole model
        y = loaded(*[torch.from_numpy(a) for a in got])
        ref = model(x)
    assert y.shape == ref.shape
    assert (y - ref).abs().max() <= 0.05 * ref.abs().max()


def test_manifest_schema_is_stable(seg_bundle):
    """Golden file: the manifest's key tree (types, not values). GENERATE_EXPECTED=1 rewrites it."""

    def shape(v):
        if isinstance(v, dict):
            return {k: shape(x) for k, x in v.items()}
        if isinstance(v, list):
            return [shape(v[0])] if v and isinstance(v[0], (dict, list)) else "list"
        return type(v).__name__

    doc = json.loads((seg_bundle.bundle_dir / "manifest.json").read_text())
    doc["files"] = {"<path>": "str"}
    doc["codec"]["calibration"] = doc["codec"]["calibration"][:1]
    got = shape(doc)
    path = EXPECTED / "manifest_schema.json"
    if os.environ.get("GENERATE_EXPECTED") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())


def test_codec_section_round_trips(seg_bundle):
    from splitnet.codec import get_codec

    c = seg_bundle.manifest.codec
    assert c["name"] == "q4" and c["calibration_frames"] == 2
    assert len(c["calibration"]) == len(seg_bundle.manifest.crossing)
    codec = get_codec(c["name"], **c["options"], calibration=c["calibration"])
    tensors = HeadRunner(seg_bundle.bundle_dir)(_frame(SEG["shape"]))
    decoded = codec.decode(codec.encode(tensors))
    assert [a.shape for a in decoded] == [a.shape for a in tensors]
    # the values too: clipped to the calibrated range, then within half a q4 step of it
    for x, y, cal in zip(tensors, decoded, c["calibration"], strict=True):
        lo, hi = np.asarray(cal["lo"]), np.asarray(cal["hi"])
        assert lo.size in (1, x.shape[1]) and np.all(hi > lo)
        group = (1, -1) + (1,) * (x.ndim - 2)  # one range per channel (axis 1), or one
        lo, hi = lo.reshape(group), hi.reshape(group)
        half_step = (hi - lo) / (2**4 - 1) / 2
        err = np.abs(y - np.clip(x, lo, hi))
        assert np.all(err <= half_step * (1 + 1e-4) + 1e-6), err.max()
        assert np.abs(y - x).max() > 0  # q4 is lossy: the codec really quantized


# ---- parity -------------------------------------------------------------------------------


def test_parity_within_tolerance(seg_bundle, cls_bundle):
    for r in (seg_bundle, cls_bundle):
        p = r.manifest.parity
        assert 0 < p["max_rel"] <= p["tolerance"] == 0.02  # FP16 weights: small, never zero
        assert r.parity.ok and len(p["tensors"]) == len(r.manifest.crossing)


def test_parity_beyond_tolerance_fails(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ParityError, match="differ beyond the tolerance"):
        export_bundle(
            Upsampler(), input_shape=(3, 32, 32), split="relu_1", out_dir=tmp_path, tolerance=1e-9
        )
    assert not (tmp_path / "manifest.json").exists()


# ---- Myriad X profile ---------------------------------------------------------------------


def test_targets_registry():
    assert list_targets() == ["cpu", "myriad"]
    with pytest.raises(ValueError, match="Valid: cpu, myriad"):
        get_target("tpu")


def test_myriad_profile_accepts_vgg_head(seg_bundle):
    head = seg_bundle.manifest.head
    assert head["target"] == "myriad" and head["precision"] == "FP16"
    assert head["ir_version"] == 11
    assert "MaxPool-opset1" in head["operations"]
    for op in head["operations"]:
        assert int(op.rsplit("-opset", 1)[1]) <= 10, op
    xml = (seg_bundle.bundle_dir / "head.xml").read_text()
    versions = {int(v) for v in re.findall(r'version="opset(\d+)"', xml)}
    assert versions and max(versions) <= 10
    assert 'element_type="f16"' in xml  # weights stored as FP16
    assert 'shape="1,64,64,3"' in xml and "?" not in re.findall(r'shape="([^"]*)"', xml)[0]


def test_myriad_profile_rejects_post_opset10_head(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError) as e:
        export_bundle(
            Upsampler(),
            input_shape=(3, 32, 32),
            split="upsample",
            out_dir=tmp_path,
            target="myriad",
        )
    msg = str(e.value)
    assert "Interpolate-11" in msg and "newer than opset10" in msg
    assert "nearest earlier compatible split point is 'relu_1'" in msg
    # the same head is fine for today's runtime
    r = export_bundle(
        Upsampler(), input_shape=(3, 32, 32), split="upsample", out_dir=tmp_path / "cpu"
    )
    assert "Interpolate-opset11" in r.manifest.head["operations"]


def test_myriad_ops_data_is_consistent():
    data = load_myriad_ops()
    assert data["max_opset"] == 10
    assert {"Parameter", "Result", "Constant", "Convert"} <= set(data["always_allowed"])
    ops = data["ops"]
    assert list(ops) == sorted(ops)
    for needed in (
        "Convolution",
        "MaxPool",
        "Relu",
        "Add",
        "Multiply",
        "Subtract",
        "Transpose",
        "Concat",
    ):
        assert needed in ops  # what a VGG head with embedded preprocessing needs
    import importlib

    alias = {
        "BatchNormInference": "batch_norm_inference",
        "CTCGreedyDecoderSeqLen": "ctc_greedy_decoder_seq_len",
        "CTCGreedyDecoder": "ctc_greedy_decoder",
        "GatherND": "gather_nd",
        "GRN": "grn",
        "HSwish": "hswish",
        "LRN": "lrn",
        "LSTMCell": "lstm_cell",
        "LSTMSequence": "lstm_sequence",
        "MatMul": "matmul",
        "MVN": "mvn",
        "NormalizeL2": "normalize_l2",
        "PRelu": "prelu",
        "PSROIPooling": "psroi_pooling",
        "ROIAlign": "roi_align",
        "ROIPooling": "roi_pooling",
        "ShapeOf": "shape_of",
        "SoftPlus": "softplus",
        "TopK": "topk",
    }
    for op, versions in ops.items():
        assert versions and len(set(versions)) == len(versions), op
        fn = alias.get(op) or re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
        for v in versions:
            n = int(re.fullmatch(r"opset(\d+)", v).group(1))
            assert 1 <= n <= data["max_opset"], (op, v)
            # the op is part of that opset of today's OpenVINO (catches typos in names)
            assert hasattr(importlib.import_module(f"openvino.opset{n}"), fn), (op, v)


@pytest.mark.skipif(
    not os.environ.get("SPLITNET_OV2022_PYTHON"),
    reason="set SPLITNET_OV2022_PYTHON to a python with openvino 2022.3 installed",
)
def test_myriad_ir_reads_in_openvino_2022_3(seg_bundle):
    """The MYRIAD plugin's last runtime (2022.3 LTS) reads the IR and runs it (on its CPU plugin)."""
    frame = _frame(SEG["shape"])
    np.save(seg_bundle.bundle_dir.parent / "frame.npy", frame)
    code = (
        "import sys, numpy as np\nfrom openvino.runtime import Core\n"
        "c = Core(); m = c.read_model(sys.argv[1] + '/head.xml')\n"
        "r = c.compile_model(m, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'}).create_infer_request()\n"
        "f = np.load(sys.argv[1] + '/../frame.npy')\n"
        "out = r.infer({0: f[None]})\n"
        "np.savez(sys.argv[1] + '/../ov2022.npz', *[out[o] for o in r.model_outputs])\n"
    )
    subprocess.run(
        [os.environ["SPLITNET_OV2022_PYTHON"], "-c", code, str(seg_bundle.bundle_dir)],
        check=True,
        cwd="/",
    )
    old = np.load(seg_bundle.bundle_dir.parent / "ov2022.npz")
    new = HeadRunner(seg_bundle.bundle_dir)(frame)
    for i, a in enumerate(new):
        np.testing.assert_allclose(old[f"arr_{i}"], a, rtol=1e-3, atol=1e-3)


# ---- the device runner, without torch -----------------------------------------------------


def test_head_runner_runs_without_torch(seg_bundle, tmp_path):
    frame = _frame(SEG["shape"])
    np.save(tmp_path / "frame.npy", frame)
    want = HeadRunner(seg_bundle.bundle_dir)(frame)
    code = f"""
import numpy as np
from splitnet.device import HeadRunner, benchmark_head
r = HeadRunner({str(seg_bundle.bundle_dir)!r})
out = r(np.load({str(tmp_path / "frame.npy")!r}))
np.savez({str(tmp_path / "out.npz")!r}, *out)
benchmark_head(r, seconds=0.05, warmup=0)
try:
    import torch
except ImportError:
    print("torch hidden")
"""
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert "torch hidden" in res.stdout
    got = np.load(tmp_path / "out.npz")
    for i, a in enumerate(want):
        np.testing.assert_array_equal(got[f"arr_{i}"], a)


def _imports(nodes) -> list[str]:
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


BUNDLE = ROOT / "splitnet" / "bundle"


@pytest.mark.parametrize(
    "path",
    [
        BUNDLE / "__init__.py",
        BUNDLE / "_manifest.py",
        *sorted((ROOT / "splitnet" / "device").glob("*.py")),
    ],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_device_modules_do_not_import_torch(path):
    for n in _imports(ast.walk(ast.parse(path.read_text()))):
        assert n.split(".")[0] != "torch", f"{path.name} imports {n}"
        assert not n.startswith(("splitnet.export", "splitnet.models", "splitnet.split")), n


def test_bundle_tail_loader_imports_torch_only_when_called():
    """``load_tail`` is the server's: torch inside the function, never at module level."""
    tree = ast.parse((BUNDLE / "_tail.py").read_text())
    top = [n for n in tree.body if not isinstance(n, ast.If)]  # the TYPE_CHECKING block aside
    assert all(n.split(".")[0] != "torch" for n in _imports(top))
    assert "torch" in _imports(ast.walk(tree))
    # every other module of the package (the device reads manifests) has no torch at all
    for path in sorted(BUNDLE.glob("*.py")):
        if path.name != "_tail.py":
            names = _imports(ast.walk(ast.parse(path.read_text())))
            assert all(n.split(".")[0] != "torch" for n in names), path.name


def test_bundle_reads_without_torch(seg_bundle, tmp_path):
    """The device host: ``splitnet.bundle`` imports, reads and verifies a manifest, no torch."""
    code = """
import json
import splitnet.bundle as b
m = b.read_manifest(sys.argv[1])
b.verify_files(sys.argv[1], m)
codec = m.make_codec()
try:
    b.load_tail(sys.argv[1])
except ImportError:
    print("tail needs torch")
print(json.dumps(m.to_dict()))
"""
    res = run_without_torch(code, args=(str(seg_bundle.bundle_dir),))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "tail needs torch"
    assert Manifest.from_dict(json.loads(lines[1])) == seg_bundle.manifest


def test_benchmark_head(seg_bundle):
    b = benchmark_head(seg_bundle.bundle_dir, seconds=0.2, warmup=0.05)
    assert b.iterations >= 3 and b.fps > 0
    assert b.latency_ms_min <= b.latency_ms_p50 <= b.latency_ms_p90 <= b.latency_ms_p99
    assert b.latency_ms_p99 <= b.latency_ms_max
    assert b.fps == pytest.approx(b.iterations / b.seconds)


def test_benchmark_app_runs_on_the_ir_unchanged(seg_bundle):
    app = Path(sys.executable).with_name("benchmark_app")
    if not app.exists():
        pytest.skip("benchmark_app is not installed next to python")
    res = subprocess.run(
        [
            str(app),
            "-m",
            str(seg_bundle.bundle_dir / "head.xml"),
            "-d",
            "CPU",
            "-niter",
            "3",
            "-api",
            "sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Throughput" in res.stdout


# ---- bad input ----------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(seg_bundle, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(seg_bundle.bundle_dir, d)
    return d


def _edit_manifest(d: Path, fn) -> None:
    doc = json.loads((d / "manifest.json").read_text())
    fn(doc)
    (d / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "head.bin").unlink(), "missing head.bin"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
        (
            lambda d: (d / "head.xml").write_text((d / "head.xml").read_text() + " "),
            "checksum mismatch for head.xml",
        ),
        (
            lambda d: (d / "head.bin").write_bytes(b"\0" + (d / "head.bin").read_bytes()[1:]),
            "checksum mismatch for head.bin",
        ),
        (lambda d: (d / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda d: _edit_manifest(d, lambda m: m.update(format_version=99)), "format_version 99"),
        (lambda d: _edit_manifest(d, lambda m: m.pop("crossing")), "missing the field 'crossing'"),
        (
            lambda d: _edit_manifest(d, lambda m: m["input"].update(frame_shape=[64, -1, 3])),
            "positive integers",
        ),
        (
            lambda d: _edit_manifest(d, lambda m: m["files"].update({"../x": "0"})),
            "leaves the bundle",
        ),
    ],
    ids=[
        "missing-file",
        "no-manifest",
        "xml-modified",
        "bin-corrupt",
        "bad-json",
        "version",
        "field",
        "shape",
        "path",
    ],
)
def test_bad_bundles(bundle_copy, damage, match):
    damage(bundle_copy)
    with pytest.raises(BundleError, match=match):
        HeadRunner(bundle_copy)
    assert main(["bench-head", str(bundle_copy), "--seconds", "0.1"]) == 2


def test_output_names_must_match_manifest(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["crossing"].reverse())
    with pytest.raises(BundleError, match="do not match the manifest"):
        HeadRunner(bundle_copy)


def test_bad_frames(seg_bundle):
    r = HeadRunner(seg_bundle.bundle_dir)
    good = _frame(SEG["shape"])
    for frame, match in [
        (good[:32], "must be 64x64x3"),
        (good[..., :1], "must be 64x64x3"),
        (good[None], "must be 64x64x3"),
        (good.astype(np.float32), "dtype must be uint8"),
        (good.tolist(), "numpy array"),
    ]:
        with pytest.raises(FrameError, match=match):
            r(frame)
    assert [a.shape for a in r(good[::-1])] == [t.shape for t in r.manifest.crossing]  # strided ok


def test_bad_device_settings(seg_bundle):
    with pytest.raises(DeviceError, match="unknown or unavailable OpenVINO device 'MYRIAD'"):
        HeadRunner(seg_bundle.bundle_dir, device="MYRIAD")
    with pytest.raises(DeviceError, match="unknown hint"):
        HeadRunner(seg_bundle.bundle_dir, hint="fast")
    with pytest.raises(DeviceError, match="threads"):
        HeadRunner(seg_bundle.bundle_dir, threads=0)


def test_manifest_from_dict_rejects_non_object():
    with pytest.raises(BundleError, match="JSON object"):
        Manifest.from_dict([1, 2])


def test_cli_export_and_bench(tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["export", "unet-vgg16", "--input", "3x64x64", "--split", "encoder.block1.pool"]
    argv += ["--model-arg", "width=0.25", "--out", str(out), "--target", "myriad"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "parity (OpenVINO CPU vs torch" in text and "encoder.block1.pool" in text
    assert read_manifest(out).head["target"] == "myriad"
    assert main(argv) == 2  # the folder is not empty now
    assert "not empty" in capsys.readouterr().err
    assert main(["bench-head", str(out), "--seconds", "0.2", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    assert "FPS" in text and f"benchmark_app -m {out / 'head.xml'}" in text
    argv = ["bench-head", str(out), "--seconds", "0.1", "--warmup", "0", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)  # says which bundle, for splitnet plan
    assert (doc["model"], doc["split"], doc["input"]) == (
        "unet-vgg16",
        "encoder.block1.pool",
        [3, 64, 64],
    )
    assert doc["codec"] == read_manifest(out).codec["name"] and doc["latency_ms_mean"] > 0


@pytest.mark.parametrize(
    "argv, match",
    [
        (["export", "unet-vgg17", "--input", "3x64x64", "--split", "x"], "unknown model"),
        (
            ["export", "unet-vgg16", "--input", "3x64x64", "--split", "encoder.nope"],
            "no split point",
        ),
        (["export", "unet-vgg16", "--input", "1x64x64", "--split", "0"], "3 channels"),
        (
            ["export", "unet-vgg16", "--input", "3x64x64", "--split", "0", "--target", "tpu"],
            "unknown export target",
        ),
        (
            ["export", "unet-vgg16", "--input", "3x64x64", "--split", "0", "--codec", "zip"],
            "unknown codec",
        ),
        (
            [
                "export",
                "unet-vgg16",
                "--input",
                "3x64x64",
                "--split",
                "0",
                "--weights",
                "/nonexistent.pt",
            ],
            "weights file not found",
        ),
        (["bench-head", "/nonexistent-bundle"], "bundle folder not found"),
    ],
)
def test_cli_bad_input_exits_2(argv, match, tmp_path, capsys):
    if argv[0] == "export":
        argv = [*argv, "--out", str(tmp_path / "b"), "--model-arg", "width=0.25"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1].split("\r")[-1]  # after any progress-bar residue
    assert last.startswith(f"splitnet {argv[0]}: error: ") and match in last
    assert "Traceback" not in err
