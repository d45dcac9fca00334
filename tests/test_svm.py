"""CNN features + SVM as a classical tail (issue 15, seed 001): the numpy evaluator against
scikit-learn, fit-svm's bundle through a real server and the device daemon, bad input."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from _serve_helpers import make_payload, run_with_server
from PIL import Image

from splitnet.svm import SVMTail, arrays_from_svc, pool_features

MODEL, POINT = "mobilenet-v2", "features.0.2"


def _fit_sklearn(k: int, kernel: str, seed: int):
    import warnings

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(15 * k, 6)) * rng.uniform(0.1, 10, size=6) + rng.normal(size=6)
    y = np.arange(len(x)) % k
    x[:, 0] += y  # some signal, so the SVM is not degenerate
    scaler = StandardScaler().fit(x)
    svc = SVC(kernel=kernel, C=float(rng.choice([0.1, 1.0, 10.0])), gamma=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = CalibratedClassifierCV(svc, method="sigmoid", cv=3, ensemble=False)
        cal.fit(scaler.transform(x), y)
    return cal, scaler, rng.normal(size=(25, 6)) * 3


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_decision_function_and_probabilities_equal_sklearn(k, kernel, seed):
    cal, scaler, x_new = _fit_sklearn(k, kernel, seed)
    svm = SVMTail(arrays_from_svc(cal, scaler), pool="none")
    xs = scaler.transform(x_new)
    svc = cal.calibrated_classifiers_[0].estimator
    np.testing.assert_allclose(svm.decision_function(xs), svc.decision_function(xs), atol=1e-9)
    np.testing.assert_allclose(svm([x_new]), cal.predict_proba(xs), atol=1e-9)
    assert svm.kernel == kernel and svm.n_classes == k


def test_pooling_of_crossing_tensors():
    t = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 2, 2)
    v = np.ones((2, 5), np.float32)
    assert pool_features([t, v], "avg").shape == (2, 8)
    np.testing.assert_array_equal(pool_features([t], "max")[0], [3, 7, 11])
    assert pool_features([t], "none").shape == (2, 12)
    with pytest.raises(ValueError, match="pools: avg, max, none"):
        pool_features([t], "mean")


@pytest.fixture(scope="module")
def svm_bundle(tmp_path_factory):
    from splitnet.cli.main import main

    repo = tmp_path_factory.mktemp("svm-repo")
    out = repo / "svm"
    code = main(
        [
            "fit-svm", MODEL, "--split", POINT, "--data", "parts:n=36,size=32",
            "--cv", "3", "--kernel", "both", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_fit_svm_writes_arrays_not_a_pickle_listed_in_the_manifest(svm_bundle):
    from splitnet.bundle import read_manifest

    m = read_manifest(svm_bundle)  # checksums verified
    assert m.tail["format"] == "svm-npz" and m.tail["type"] == "svm"
    assert "svm.npz" in m.files and "tail.pt2" not in m.files
    assert not (svm_bundle / "tail.pt2").exists()
    assert m.num_classes == 6 and m.output.class_names[0] == "resistor"
    assert m.name == f"{MODEL}.{POINT}.svm" and m.tail["kernel"] in ("linear", "rbf")
    with np.load(svm_bundle / "svm.npz", allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
        assert "scaler_mean" in f.files and f["scaler_mean"].shape == (32,)  # avg pool: C


def test_the_server_answers_the_svm_probabilities(svm_bundle):
    from splitnet.codec import decode
    from splitnet.server import TailModel
    from splitnet.server._core import InferenceCore
    from splitnet.wire import make_infer_request, output_arrays

    model = TailModel(svm_bundle)
    payload = make_payload({model.name: model}, model.name)
    expect = SVMTail.load(svm_bundle / "svm.npz", pool="avg")(decode(payload))[0]

    async def main():
        core = InferenceCore({model.name: model})
        try:
            req = make_infer_request(model.name, payload, parameters={"top_k": 6})
            return output_arrays(await core.infer(req))
        finally:
            await core.close()

    out = asyncio.run(main())
    np.testing.assert_array_equal(out["classes"], np.argsort(-expect, kind="stable"))
    np.testing.assert_allclose(out["probabilities"], np.sort(expect)[::-1], rtol=1e-5, atol=1e-6)


def test_serve_and_device_run_an_svm_bundle_unchanged(svm_bundle, tmp_path):
    from splitnet.device import DaemonConfig, DeviceDaemon
    from splitnet.server import load_repository

    out = tmp_path / "out"

    async def body(server, port):
        cfg = DaemonConfig(bundle=svm_bundle, servers=(f"127.0.0.1:{port}",), frames=3, out=out)
        return await DeviceDaemon(cfg).run()

    repo = svm_bundle.parent
    summary = run_with_server(repo, load_repository(repo), body)
    assert summary.ok == 3
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("0*.json"))]
    assert len(docs) == 3 and all(0 <= c < 6 for d in docs for c in d["classes"])


def _folder(root, classes=("a", "b"), n=4, extra=None):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    if extra:
        (root / classes[0] / extra).write_text("not an image")
    return root


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("point", "did you mean"),
        ("one-class", "at least two classes"),
        ("non-image", "is not an image"),
        ("broken-png", "cannot read image"),
        ("pool", "invalid choice: 'mean'"),
        ("kernel", "invalid choice: 'poly'"),
        ("cv", "needs at least 5 per class"),
    ],
)
def test_bad_input_is_one_line_exit_2(case, message, tmp_path, capsys):
    from splitnet.cli.main import main

    data = tmp_path / "data"
    args = ["fit-svm", MODEL, "--split", POINT, "--out", str(tmp_path / "b"), "--cv", "3"]
    if case == "one-class":
        _folder(data, classes=("only",))
    elif case == "non-image":
        _folder(data, extra="notes.txt")
    elif case == "broken-png":
        _folder(data, extra="broken.png")
    else:
        _folder(data)
    args += ["--data", f"folder:{data}"]
    if case == "point":
        args[3] = "features.99"
    elif case == "pool":
        args += ["--pool", "mean"]
    elif case == "kernel":
        args += ["--kernel", "poly"]
    elif case == "cv":
        args += ["--cv", "5"]
    code = main(args)  # argparse's usage errors come back as exit code 2 too
    stderr = capsys.readouterr().err  # progress bars first, where the export started
    err = [line for line in stderr.replace("\r", "\n").splitlines() if "error:" in line]
    assert code == 2 and len(err) == 1 and message in err[0], stderr[-400:]
    assert "Traceback" not in stderr
