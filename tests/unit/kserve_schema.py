"""The kserve SDK's typed models as the schema of an InferenceService manifest, for the tests.

riskloop builds the InferenceService as plain mappings (``riskloop.delivery.inference_service``) and imports
``kserve`` only in its serving adapter. The tests check every manifest and patch result here against the
kserve SDK's own API types (``kserve.models`` and ``kubernetes.client.models``), the schema KServe's CRD is
generated from; the cluster suite (tests/cluster/test_custom_resources.py) checks it against the CRD itself.
"""

from __future__ import annotations

import datetime
import difflib
import re
from typing import Any, cast

from kserve import ApiClient, V1beta1InferenceService
from kserve import models as kserve_models
from kubernetes.client import models as k8s_models

from riskloop.delivery.inference_service import API_VERSION, KIND
from riskloop.errors import DeploymentError


def from_manifest(manifest: dict[str, Any]) -> V1beta1InferenceService:
    """Load a manifest into the typed SDK model, refusing what the model would silently lose.

    The kserve SDK cannot do this itself: ``ApiClient().deserialize`` drops
    unknown keys, coerces mistyped values (``str(5)``, ``bool("false")``) and
    cannot even resolve the Kubernetes types an InferenceService nests
    (``V1ObjectMeta``, ``V1Container``). This loader walks the SDK's own
    ``openapi_types`` and resolves types in ``kserve.models`` and
    ``kubernetes.client.models``. Raises ``DeploymentError`` naming the field.
    """
    if not isinstance(manifest, dict):
        raise DeploymentError(f"an InferenceService manifest must be a mapping, got {type(manifest).__name__}")
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise DeploymentError(
            f"not a {KIND} manifest: apiVersion {manifest.get('apiVersion')!r}, kind {manifest.get('kind')!r}",
            fix=f"expected apiVersion {API_VERSION!r} and kind {KIND!r}",
        )
    return cast(V1beta1InferenceService, _load(manifest, "V1beta1InferenceService", ""))


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise ``DeploymentError`` unless ``manifest`` survives a typed round trip unchanged.

    Unknown fields (``spec.predictor.bogus``), mistyped values and missing
    required fields are refused with their path; a manifest that loads but
    re-serialises differently is refused with the first difference.
    """
    loaded = from_manifest(manifest)
    client = ApiClient()
    expected = _without_nulls(client.sanitize_for_serialization(manifest))
    difference = _first_difference(expected, client.sanitize_for_serialization(loaded), "")
    if difference is not None:
        raise DeploymentError(
            f"the {KIND} manifest changes in a typed round trip: {difference}",
            fix="the field is not part of the kserve SDK's model; remove or correct it",
        )


_LIST_TYPE = re.compile(r"^list\[(.+)\]$")
_DICT_TYPE = re.compile(r"^dict\(([^,]+), (.+)\)$")
_PRIMITIVE_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _load(value: Any, type_name: str, path: str) -> Any:
    where = path or "<manifest>"
    if m := _LIST_TYPE.match(type_name):
        if not isinstance(value, list):
            raise _type_error(where, "a list", value)
        return [_load(item, m.group(1), f"{path}[{i}]") for i, item in enumerate(value)]
    if m := _DICT_TYPE.match(type_name):
        if not isinstance(value, dict):
            raise _type_error(where, "a mapping", value)
        for key in value:
            if not isinstance(key, str):
                raise DeploymentError(f"{where} has a non-string key {key!r}", where=where)
        return {k: _load(v, m.group(2), f"{path}.{k}") for k, v in value.items()}
    if type_name == "object":
        return value
    if type_name in ("datetime", "date"):
        if not isinstance(value, str | datetime.date):
            raise _type_error(where, "a timestamp", value)
        return value
    if type_name in _PRIMITIVE_TYPES:
        # bool is an int in Python; YAML's true is not an integer here.
        if not isinstance(value, _PRIMITIVE_TYPES[type_name]) or (isinstance(value, bool) and type_name != "bool"):
            raise _type_error(where, _TYPE_WORDS[type_name], value)
        return value
    klass = _model_class(type_name, where)
    if not isinstance(value, dict):
        raise _type_error(where, f"a mapping ({type_name})", value)
    attributes = {key: attr for attr, key in klass.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        field = f"{path}.{key}" if path else str(key)
        if key not in attributes:
            close = difflib.get_close_matches(str(key), list(attributes), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{type_name} has no such field"
            raise DeploymentError(
                f"unknown field {field} in the {KIND} manifest",
                where=field,
                fix=f"remove it or correct its spelling ({hint})",
            )
        if item is not None:
            kwargs[attributes[key]] = _load(item, klass.openapi_types[attributes[key]], field)
    try:
        return klass(**kwargs)
    except ValueError as exc:
        raise DeploymentError(f"invalid {type_name} at {where}: {exc}", where=where) from exc


def _model_class(type_name: str, where: str) -> Any:
    for module in (kserve_models, k8s_models):
        klass = getattr(module, type_name, None)
        if klass is not None:
            return klass
    raise DeploymentError(
        f"cannot check {where}: its type {type_name} is unknown to the installed kserve and kubernetes clients",
        where=where,
        fix="use a kubernetes client as new as the kserve SDK's API, or leave the field out",
    )


def _type_error(where: str, expected: str, value: Any) -> DeploymentError:
    return DeploymentError(f"{where} must be {expected}, got {type(value).__name__} {value!r}", where=where)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _first_difference(expected: Any, actual: Any, path: str) -> str | None:
    where = path or "<manifest>"
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in [*expected, *(k for k in actual if k not in expected)]:
            field = f"{path}.{key}" if path else str(key)
            if key not in actual:
                return f"{field} is lost"
            if key not in expected:
                return f"{field} appears"
            difference = _first_difference(expected[key], actual[key], field)
            if difference is not None:
                return difference
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where} has {len(actual)} items instead of {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            difference = _first_difference(e, a, f"{path}[{i}]")
            if difference is not None:
                return difference
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{where} becomes {actual!r} instead of {expected!r}"
    return None
