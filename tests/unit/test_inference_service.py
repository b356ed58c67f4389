"""The predictor InferenceService and its traffic patches: golden files, the kserve SDK's types, bad inputs.

Regenerate the golden files after an intended change with
``RISKLOOP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_inference_service.py`` and review the diff.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from riskloop.delivery.inference_service import (
    InferenceServiceParams,
    apply_merge_patch,
    build_inference_service,
    canary_patch,
    promote_patch,
)
from riskloop.errors import ConfigError, DeploymentError
from tests.unit.kserve_schema import _first_difference, from_manifest, validate_manifest

GOLDEN_DIR = Path(__file__).parent / "golden"

SHA_V3 = hashlib.sha256(b"model.ubj of version 3").hexdigest()
SHA_V4 = hashlib.sha256(b"model.ubj of version 4").hexdigest()
URI_V3 = "s3://riskloop-mlflow/artifacts/1/6f1d2c/artifacts/model"
URI_V4 = "s3://riskloop-mlflow/artifacts/1/9a7e40/artifacts/model"
SPEC_SHA = hashlib.sha256(b"dataset_spec.yaml the versions were trained under").hexdigest()

CHAMPION = InferenceServiceParams(
    name="fraud-detector",
    namespace="riskloop",
    image="ghcr.io/riskloop/riskloop:0.1.0-3f9c2e1",
    storage_uri=URI_V3,
    model_sha256=SHA_V3,
    spec_sha256=SPEC_SHA,
    model_version="3",
)
CANDIDATE = CHAMPION.model_copy(update={"storage_uri": URI_V4, "model_sha256": SHA_V4, "model_version": "4"})


def _spec(**changes: Any) -> InferenceServiceParams:
    return InferenceServiceParams.model_validate({**CHAMPION.model_dump(), **changes})


def _dump(patch: dict[str, Any]) -> str:
    return yaml.safe_dump(patch, sort_keys=False)


def _canary_10() -> dict[str, Any]:
    return canary_patch(
        CHAMPION, storage_uri=URI_V4, model_sha256=SHA_V4, spec_sha256=SPEC_SHA, model_version="4", canary_percent=10
    )


GOLDEN_CASES: dict[str, Callable[[], str]] = {
    "champion": lambda: _dump(build_inference_service(CHAMPION)),
    "canary": lambda: _dump(build_inference_service(_spec(canary_percent=10))),
    "canary_patch": lambda: _dump(_canary_10()),
    "promote_patch": lambda: _dump(promote_patch()),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden(case: str) -> None:
    text = GOLDEN_CASES[case]()
    path = GOLDEN_DIR / f"inference_service_{case}.yaml"
    if os.environ.get("RISKLOOP_UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text)
        pytest.skip(f"regenerated {path.name}; review its diff before committing")
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing; create it with RISKLOOP_UPDATE_GOLDEN=1")
    assert text == path.read_text(), (
        f"output differs from {path.name}; if the change is intended, rerun with RISKLOOP_UPDATE_GOLDEN=1 "
        "and review the diff"
    )


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["predictor"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_object_meets_the_serving_contract() -> None:
    m = build_inference_service(CHAMPION)
    assert (m["apiVersion"], m["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert m["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Knative"}
    assert m["metadata"]["labels"] == {
        "app.kubernetes.io/name": "riskloop",
        "app.kubernetes.io/component": "predictor",
        "riskloop.io/model-version": "3",
    }
    predictor = m["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "riskloop-predictor"
    assert predictor["automountServiceAccountToken"] is False
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert "canaryTrafficPercent" not in predictor
    # Knative refuses a pod-level securityContext unless a feature flag is on: it lives on the container.
    assert "securityContext" not in predictor

    c = _container(m)
    assert c["name"] == "kserve-container"
    assert c["image"] == CHAMPION.image
    # the predictor refuses a model directory whose dataset_spec.yaml is not the version's (fail closed)
    assert {"name": "RISKLOOP_EXPECTED_SPEC_SHA256", "value": SPEC_SHA} in c["env"]
    # the image has no ENTRYPOINT: the command names the executable, the model server's own entry point
    assert c["command"] == ["python", "-m", "riskloop.serving"]
    assert c["args"] == ["--model-dir", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
    assert {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]} == {
        "STORAGE_URI": URI_V3,
        "RISKLOOP_EXPECTED_MODEL_SHA256": SHA_V3,
        "RISKLOOP_EXPECTED_SPEC_SHA256": SPEC_SHA,
        "RISKLOOP_MODEL_VERSION": "3",
        "RISKLOOP_MODEL_NAME": "fraud-detector",
        "RISKLOOP_ROLE": "champion",
        # the state dir and HOME lie inside the one writable volume, whatever the config map says
        "RISKLOOP_STATE_DIR": "/tmp/riskloop",
        "HOME": "/tmp",
        # the Feast registry URL carries a password: from the Secret, never in the spec
        "RISKLOOP_FEAST__REGISTRY": {"secretKeyRef": {"name": "riskloop-db", "key": "feast-registry-uri"}},
        # the prediction log goes to the storage root (RISKLOOP_STORAGE__URI, from the config map) with these
        **{
            key: {"secretKeyRef": {"name": "riskloop-s3", "key": key}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
        },
    }
    assert c["envFrom"] == [{"configMapRef": {"name": "riskloop-config"}}]
    assert c["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]
    assert c["resources"] == {"limits": {"cpu": "2", "memory": "2Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v1/models/fraud-detector", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/", "port": 8080}
    assert predictor["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert c["volumeMounts"] == [{"mountPath": "/tmp", "name": "scratch"}]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_spec_values_reach_the_object() -> None:
    spec = _spec(
        port=9000,
        model_name="credit-scorer",
        role="challenger",
        min_replicas=0,
        max_replicas=5,
        canary_percent=0,
        service_account="sa",
        config_map="cm",
        cpu_limit="4",
        db_secret="team-db",
        s3_secret="team-s3.objects",
    )
    m = build_inference_service(spec)
    predictor, c = m["spec"]["predictor"], _container(m)
    assert predictor["canaryTrafficPercent"] == 0  # 0 pins traffic: it must not be dropped as falsy
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["serviceAccountName"]) == (0, 5, "sa")
    assert c["args"][-1] == "9000" and c["ports"][0]["containerPort"] == 9000
    assert c["readinessProbe"]["httpGet"] == {"path": "/v1/models/credit-scorer", "port": 9000}
    assert {"name": "RISKLOOP_ROLE", "value": "challenger"} in c["env"]
    assert c["envFrom"] == [{"configMapRef": {"name": "cm"}}]
    assert c["resources"]["limits"]["cpu"] == "4"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert secrets == {
        "RISKLOOP_FEAST__REGISTRY": "team-db",
        "AWS_ACCESS_KEY_ID": "team-s3.objects",
        "AWS_SECRET_ACCESS_KEY": "team-s3.objects",
        "MLFLOW_S3_ENDPOINT_URL": "team-s3.objects",
    }


def test_the_predictor_can_write_where_riskloop_serve_writes_and_nowhere_else(tmp_path: Path) -> None:
    """Read-only root filesystem: every path `riskloop serve` writes to lies inside an emptyDir of the pod.

    The paths come from the code that writes them (Settings, the Feast store config, the server's metrics
    directory), evaluated for the state dir the container is given; an emptyDir is the only writable volume.
    """
    from riskloop.features.store import StoreConfig
    from riskloop.settings import Settings

    m = build_inference_service(CHAMPION)
    predictor, c = m["spec"]["predictor"], _container(m)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values()), "only emptyDirs are writable"
    writable = [
        Path(mount["mountPath"])
        for mount in c["volumeMounts"]
        if not mount.get("readOnly") and mount["name"] in volumes
    ]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    state = Settings(state_dir=Path(env["RISKLOOP_STATE_DIR"]))
    written = [
        state.root,
        state.data_dir,
        state.feast_dir,
        state.pipeline_root,
        state.reports_dir,
        state.artifact_root,
        StoreConfig.from_settings(state).repo_dir,
        state.root / "serving" / "prometheus-multiproc",  # serving.__main__.build_server, workers > 1
        Path(env["HOME"]) / ".cache",
        Path(env["HOME"]) / ".config",  # matplotlib (seen with strace)
        Path("/tmp"),
    ]  # tempfile's default dir: Feast's metrics files (seen with strace); no TMPDIR is set
    assert "TMPDIR" not in env
    outside = [p for p in written if not any(p == w or w in p.parents for w in writable)]
    assert not outside, f"written by riskloop serve but not on a writable volume: {outside}"
    # ensure_dirs really creates only what is listed above, all under the state dir
    local = Settings(state_dir=tmp_path / "state")
    local.ensure_dirs()
    created = {p for p in (tmp_path / "state").rglob("*")} | {tmp_path / "state"}
    assert created <= {
        local.root,
        local.data_dir,
        local.feast_dir,
        local.pipeline_root,
        local.reports_dir,
        local.artifact_root,
    }


@pytest.mark.parametrize("spec", [CHAMPION, _spec(canary_percent=10)], ids=["champion", "canary"])
def test_the_manifest_is_the_kserve_sdks_types_exactly(spec: InferenceServiceParams) -> None:
    manifest = build_inference_service(spec)
    validate_manifest(manifest)  # every key a typed field, every value its type, nothing lost on the way
    assert from_manifest(yaml.safe_load(_dump(manifest))) == from_manifest(manifest)


def _mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    manifest = copy.deepcopy(build_inference_service(CHAMPION))
    change(manifest)
    return manifest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["spec"]["predictor"].update(bogus=1), r"unknown field spec\.predictor\.bogus"),
        (
            lambda m: m["spec"]["predictor"].update(minReplica=1),
            r"(?s)spec\.predictor\.minReplica.*did you mean 'minReplicas'",
        ),
        (lambda m: m["spec"].update(predictr={}), r"unknown field spec\.predictr"),
        (
            lambda m: m["spec"]["predictor"]["containers"][0]["securityContext"].update(runAsRoot=True),
            r"unknown field spec\.predictor\.containers\[0\]\.securityContext\.runAsRoot",
        ),
        (lambda m: m["metadata"].update(lables={}), r"(?s)unknown field metadata\.lables.*did you mean 'labels'"),
        (lambda m: m["spec"]["predictor"].update(minReplicas="1"), r"spec\.predictor\.minReplicas must be an integer"),
        (lambda m: m["spec"]["predictor"].update(maxReplicas=True), r"spec\.predictor\.maxReplicas must be an integer"),
        (
            lambda m: m["spec"]["predictor"].update(automountServiceAccountToken="false"),
            r"automountServiceAccountToken must be true or false",
        ),
        (
            lambda m: m["spec"]["predictor"]["containers"][0]["env"][0].update(value=3),
            r"containers\[0\]\.env\[0\]\.value must be a string",
        ),
        (
            lambda m: m["spec"]["predictor"].update(containers={"name": "x"}),
            r"spec\.predictor\.containers must be a list",
        ),
        (lambda m: m["metadata"]["labels"].update(n=1), r"metadata\.labels\.n must be a string"),
        (
            lambda m: m["spec"]["predictor"]["containers"][0].pop("name"),
            r"V1Container at spec\.predictor\.containers\[0\]",
        ),
        (lambda m: m.update(kind="Service"), r"not a InferenceService manifest"),
        (lambda m: m.update(apiVersion="serving.kserve.io/v1alpha1"), r"not a InferenceService manifest"),
    ],
)
def test_validate_manifest_names_what_is_wrong(change: Callable[[dict[str, Any]], None], message: str) -> None:
    with pytest.raises(DeploymentError, match=message):
        validate_manifest(_mutated(change))


def test_validate_manifest_accepts_nulls_as_absent() -> None:
    validate_manifest(_mutated(lambda m: m["spec"]["predictor"].update(canaryTrafficPercent=None)))


def test_first_difference_reports_the_path() -> None:
    assert _first_difference({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2]}}, "") is None
    assert _first_difference({"a": {"b": 1}}, {"a": {}}, "") == "a.b is lost"
    assert _first_difference({"a": {}}, {"a": {"c": 1}}, "") == "a.c appears"
    assert _first_difference({"a": [1, 2]}, {"a": [1, 3]}, "") == "a[1] becomes 3 instead of 2"
    assert _first_difference({"a": 1}, {"a": 1.0}, "") == "a becomes 1.0 instead of 1"
    assert _first_difference({"a": 1}, {"a": True}, "") == "a becomes True instead of 1"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Fraud-Detector", "not a valid InferenceService name"),
        ("name", "fraud_detector", "not a valid InferenceService name"),
        ("name", "1fraud", "not a valid InferenceService name"),
        ("name", "fraud-", "not a valid InferenceService name"),
        ("name", "f" * 47, "at most 46 characters"),
        ("namespace", "Risk Loop", "not a valid namespace"),
        ("service_account", "bad_name", "not a valid Kubernetes object name"),
        ("canary_percent", 101, "less than or equal to 100"),
        ("canary_percent", -1, "greater than or equal to 0"),
        ("storage_uri", "mlflow-artifacts:/1/abc/artifacts/model", "storage initializer cannot fetch"),
        ("storage_uri", "runs:/abc/model", "MLflow URI"),
        ("storage_uri", "models:/fraud-detector/3", "MLflow URI"),
        ("storage_uri", "https://example.com/model.ubj", "not a model directory KServe can fetch"),
        ("storage_uri", "s3://", "not a model directory KServe can fetch"),
        ("storage_uri", "/mnt/data/model", "not a model directory KServe can fetch"),
        ("model_sha256", SHA_V3[:40], "64 hex characters"),
        ("model_sha256", "z" * 64, "64 hex characters"),
        ("model_version", "v 3", "cannot be a label value"),
        ("model_name", "fraud/detector", "cannot be routed by KServe"),
        ("image", "ghcr.io/riskloop/riskloop", "has no tag"),
        ("image", "localhost:5000/riskloop", "has no tag"),
        ("image", "ghcr.io/riskloop/riskloop:latest", "not a pinned tag"),
        ("image", "ghcr.io/riskloop/riskloop@sha256:abc", "malformed digest"),
        ("cpu_request", "half", "not a Kubernetes quantity"),
        ("cpu_request", "3", "cpu_request 3 exceeds cpu_limit 2"),
        ("memory_request", "4Gi", "memory_request 4Gi exceeds memory_limit 2Gi"),
        ("min_replicas", 4, "min_replicas 4 exceeds max_replicas 3"),
        ("max_replicas", 0, "greater than or equal to 1"),
        ("port", 80, "greater than or equal to 1024"),
        ("port", 8012, "taken by Knative's queue-proxy"),
        ("role", "shadow", "'champion' or 'challenger'"),
        ("db_secret", "Riskloop_DB", "not a valid Kubernetes object name"),
        ("s3_secret", "riskloop_s3", "not a valid Kubernetes object name"),
        ("s3_secret", "", "not a valid Kubernetes object name"),
        ("s3_secret", "s" * 254, "not a valid Kubernetes object name"),
        ("min_replicas", "1", "valid integer"),
        ("scratch_size_limit", "a lot", "not a Kubernetes quantity"),
    ],
)
def test_bad_spec_values_are_refused_clearly(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        _spec(**{field: value})
    assert field in str(info.value)


def test_spec_rejects_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match=r"replicas\n  Extra inputs are not permitted"):
        _spec(replicas=2)
    with pytest.raises(ValidationError):
        CHAMPION.name = "other"


def test_spec_accepts_pinned_images_and_normalises_the_hash() -> None:
    assert _spec(image="localhost:5000/riskloop:0.1.0-3f9c2e1").image.endswith(":0.1.0-3f9c2e1")
    assert _spec(image=f"ghcr.io/riskloop/riskloop@sha256:{SHA_V3}").image.endswith(SHA_V3)
    assert _spec(model_sha256=SHA_V3.upper()).model_sha256 == SHA_V3
    assert _spec(storage_uri="gs://bucket/model").storage_uri == "gs://bucket/model"
    assert _spec(storage_uri="pvc://models/fraud-detector/3").storage_uri == "pvc://models/fraud-detector/3"


def test_canary_patch_turns_the_champion_into_a_canary_of_the_candidate() -> None:
    champion = build_inference_service(CHAMPION)
    patched = apply_merge_patch(champion, _canary_10())
    validate_manifest(patched)
    assert patched == build_inference_service(CANDIDATE.model_copy(update={"canary_percent": 10}))
    assert champion == build_inference_service(CHAMPION), "the patch must not change its input"


def test_promote_removes_the_canary_field() -> None:
    canary = apply_merge_patch(build_inference_service(CHAMPION), _canary_10())
    promoted = apply_merge_patch(canary, promote_patch())
    validate_manifest(promoted)
    assert promoted == build_inference_service(CANDIDATE)


def test_canary_patch_keeps_the_role_and_ignores_a_stale_canary_value() -> None:
    patch = canary_patch(
        _spec(role="challenger", canary_percent=50),
        storage_uri=URI_V4,
        model_sha256=SHA_V4,
        spec_sha256=SPEC_SHA,
        model_version="4",
        canary_percent=20,
    )
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert {"name": "RISKLOOP_ROLE", "value": "challenger"} in patch["spec"]["predictor"]["containers"][0]["env"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"storage_uri": "mlflow-artifacts:/1/abc/artifacts/model"}, "storage_uri: .*storage initializer cannot fetch"),
        ({"canary_percent": 101}, "canary_percent: .*less than or equal to 100"),
        ({"model_sha256": "abc"}, "model_sha256: .*64 hex characters"),
        ({"spec_sha256": ""}, "spec_sha256: .*64 hex characters"),
    ],
)
def test_canary_patch_refuses_bad_values_with_a_config_error(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "storage_uri": URI_V4,
        "model_sha256": SHA_V4,
        "spec_sha256": SPEC_SHA,
        "model_version": "4",
        "canary_percent": 10,
        **changes,
    }
    with pytest.raises(ConfigError, match=message):
        canary_patch(CHAMPION, **args)


def test_apply_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "l": [3], "n": {"x": None, "y": 1}}
    assert apply_merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "l": [3], "n": {"y": 1}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    assert apply_merge_patch({"a": {"b": 1}}, {"a": "scalar"}) == {"a": "scalar"}


def test_the_spec_hash_env_is_the_one_the_predictor_reads() -> None:
    from riskloop.delivery.inference_service import ENV_EXPECTED_SPEC_SHA256
    from riskloop.registry.version_spec import EXPECTED_SPEC_SHA256_ENV

    assert ENV_EXPECTED_SPEC_SHA256 == EXPECTED_SPEC_SHA256_ENV
