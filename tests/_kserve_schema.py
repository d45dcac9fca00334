"""KServe custom resources checked against the KServe SDK's generated models (the same Go
types its CRDs' openAPIV3Schema is generated from): every key a field of its type, every
value of the field's type, the required fields present.

Run in its own process (``python tests/_kserve_schema.py < docs.json``): ``kserve``
registers protobuf files under the names splitnet's use. Reads a JSON list of manifests,
writes a JSON list with, for each, ``null`` or the first error.
"""

from __future__ import annotations

import datetime
import json
import re
import sys

# both spellings: the KServe models say list[X] / dict(str, X), newer kubernetes ones List[X]
_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\])$")
KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
_SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def _model_class(name: str):
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"no generated model named {name}")


def build(value, type_name: str, where: str):
    """``value`` as an instance of the generated type ``type_name``; raises ``ValueError``
    naming ``where`` on an unknown key, a wrong type or a missing required field."""
    if value is None:
        return None
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [build(v, m.group(1), f"{where}[{i}]") for i, v in enumerate(value)]
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        item = m.group(2) or m.group(4)
        return {k: build(v, item, f"{where}.{k}") for k, v in value.items()}
    if type_name in _SCALARS:
        wrong = not isinstance(value, _SCALARS[type_name]) or (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        if wrong:
            raise ValueError(f"{where}: expected {type_name}, got {value!r}")
        return value
    if type_name in ("object", "ResourceQuantity"):  # int-or-string, quantities
        if not isinstance(value, (str, int, float, dict)):
            raise ValueError(f"{where}: unexpected {value!r}")
        return value
    if type_name == "datetime":
        if not isinstance(value, (str, datetime.datetime)):
            raise ValueError(f"{where}: expected a timestamp, got {value!r}")
        return value
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a {type_name} mapping, got {value!r}")
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        if key not in by_key:
            raise ValueError(f"{where}: unknown field {key!r} of {type_name}")
        attr = by_key[key]
        kwargs[attr] = build(v, cls.openapi_types[attr], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a required field left out
        raise ValueError(f"{where}: {e}") from None


def validate(doc: dict) -> None:
    """Raises ``ValueError`` unless ``doc`` is a valid KServe resource of a known kind."""
    cls = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
    if cls is None:
        raise ValueError(f"not a KServe kind: {doc.get('apiVersion')} {doc.get('kind')}")
    if "spec" not in doc:
        raise ValueError(f"{doc['kind']}: spec is required")
    build(doc, cls, doc["kind"])


def main() -> None:
    errors = []
    for doc in json.load(sys.stdin):
        try:
            validate(doc)
            errors.append(None)
        except ValueError as e:
            errors.append(str(e))
    json.dump(errors, sys.stdout)


if __name__ == "__main__":
    main()
