"""The Kubernetes and KServe manifests in ``server/k8s/``, checked offline.

Core kinds (Deployment, Service, HorizontalPodAutoscaler, PersistentVolumeClaim) go
through ``kubernetes-validate``'s strict OpenAPI schemas; KServe's custom resources
through the KServe SDK's generated models (the same Go types its CRDs are generated
from): every key must be a field of its type, every value of the field's type, and the
required fields present. Then what the schemas cannot see: the selectors, port names,
probe ports and ``splitnet serve`` arguments agree with each other and with the CLI.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
if importlib.util.find_spec("kserve") is None:  # not imported here: see kserve_errors
    pytest.skip("the KServe SDK (dev extra) is not installed", allow_module_level=True)

K8S = Path(__file__).resolve().parents[1] / "server" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest the manifests promise (gRPC probes are GA since 1.27)


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.relative_to(K8S)}:{doc['kind']}", doc))
    return docs


DOCS = _documents()


def _by_kind(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _is_kserve(doc: dict) -> bool:
    return doc["apiVersion"].startswith("serving.kserve.io/")


def validate_core(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def kserve_errors(docs: list[dict]) -> list[str | None]:
    """For each KServe resource, ``None`` or the first error (tests/_kserve_schema.py, in
    its own process)."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_kserve_schema.py"))],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --- the schemas ---------------------------------------------------------------------


def test_manifests_are_there():
    kinds = sorted(d["kind"] for _, d in DOCS)
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "InferenceService",
        "PersistentVolumeClaim",
        "Service",
        "ServingRuntime",
    ]


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[n for n, _ in DOCS])
def test_manifest_matches_its_schema(name, doc):
    if _is_kserve(doc):
        assert kserve_errors([doc]) == [None]
        for c in doc["spec"].get("containers", []):
            # a runtime's containers are plain pod containers: the strict core schema too
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
            validate_core({**pod, "spec": {"containers": [c]}})
    else:
        validate_core(doc)


def _deployment() -> dict:
    return copy.deepcopy(_by_kind("Deployment")[0])


def _runtime() -> dict:
    return copy.deepcopy(_by_kind("ServingRuntime")[0])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
        lambda d: d["spec"].update(replicas="two"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(
            grpc={"port": "grpc"}  # a gRPC probe takes a number, not a port name
        ),
        lambda d: d["spec"].pop("selector"),
    ],
    ids=["unknown-field", "wrong-type", "grpc-probe-port-name", "missing-selector"],
)
def test_core_validator_rejects_a_broken_deployment(mutate):
    doc = _deployment()
    validate_core(doc)
    mutate(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(doc)


def test_kserve_validator_rejects_a_broken_runtime():
    def mutated(mutate):
        doc = _runtime()
        mutate(doc)
        return doc

    cases = [
        (lambda d: None, None),
        (lambda d: d["spec"].update(protocolVersion=["v2"]), "unknown field 'protocolVersion'"),
        (lambda d: d["spec"].update(multiModel="yes"), "expected bool"),
        (lambda d: d["spec"]["containers"][0].pop("name"), "containers[0]: "),  # name required
        (lambda d: d["spec"]["containers"][0]["ports"][0].update(port=80), "field 'port'"),
        (lambda d: d["spec"]["supportedModelFormats"][0].update(autoselect=True), "autoselect"),
        (lambda d: d.update(apiVersion="serving.kserve.io/v9"), "not a KServe kind"),
    ]
    errors = kserve_errors([mutated(m) for m, _ in cases])
    for (_, message), error in zip(cases, errors, strict=True):
        if message is None:
            assert error is None
        else:
            assert error is not None and message in error, (message, error)


# --- what the schemas cannot see -----------------------------------------------------


def _serve_config(container: dict):
    """The ServerConfig that ``splitnet serve`` builds from a container's command line."""
    from splitnet.cli.main import build_parser
    from splitnet.cli.serve import config_from_args

    assert container["command"] == ["splitnet"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    return config_from_args(args)


def test_deployment_probes_service_and_autoscaler_agree():
    dep = _deployment()
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    cfg = _serve_config(c)
    assert (cfg.port, cfg.http_port, cfg.metrics_port) == (
        ports["grpc"],
        ports["http"],
        ports["metrics"],
    )
    assert cfg.host == "0.0.0.0"
    assert c["readinessProbe"]["grpc"]["port"] == cfg.port
    assert c["livenessProbe"]["grpc"]["port"] == cfg.port
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[cfg.repository] in {v["name"] for v in pod["spec"]["volumes"]}

    (svc,) = _by_kind("Service")
    assert svc["spec"]["clusterIP"] == "None"  # headless: the client balances (round_robin)
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports.keys()

    (hpa,) = _by_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert c["resources"]["requests"]["cpu"]  # a CPU utilisation target needs a request
    assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]

    (pvc,) = _by_kind("PersistentVolumeClaim")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]


def test_inference_service_runs_on_the_splitnet_runtime():
    rt = _runtime()
    (isvc,) = _by_kind("InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == rt["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in rt["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] in rt["spec"]["protocolVersions"]
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container"  # the name KServe merges the predictor into
    cfg = _serve_config(c)
    assert cfg.repository == "/mnt/models"  # where KServe's storage initializer puts storageUri
    # KServe's port conventions: REST on http1, gRPC on h2c
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http1": cfg.http_port}
    assert {p["name"]: p["containerPort"] for p in model["ports"]} == {"h2c": cfg.port}
    assert c["livenessProbe"]["grpc"]["port"] == cfg.port
    assert c["readinessProbe"]["httpGet"]["port"] == cfg.http_port
