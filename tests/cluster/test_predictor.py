"""The predictor on the real node: the InferenceService's predictor container, run as KServe would run it.

No KServe controller runs on this node (its Go module pins k8s.io v0.34, which the module proxy does not
serve) and Knative cannot be built here, so nothing turns an InferenceService into pods. This test does
that part by hand, as close to KServe v0.21 as the objects allow:

- the pod's one container is EXACTLY the predictor container ``riskloop.delivery.inference_service``
  builds (``build_inference_service``), with the pod-level fields of its predictor spec (service account,
  token, volumes); Knative's queue-proxy sidecar and its env (PORT, K_REVISION, ...) are not added;
- KServe's storage-initializer injection is applied to it as
  ``pkg/webhook/admission/pod/storage_initializer_injector.go`` and ``pkg/credentials`` do at v0.21 (see
  ``inject_storage_initializer``): an init container ``storage-initializer`` with args ``<storageUri>
  /mnt/models``, the emptyDir ``kserve-provision-location`` (read-write there, read-only in
  ``kserve-container``), ``STORAGE_URI`` rewritten to ``/mnt/models``, the S3 env built from the Secrets
  the service account lists, KServe's default resources, and the ``ClusterStorageContainer`` of
  ``manifests/kserve/runtimes/storage-initializer-restricted.yaml`` strategic-merged over it;
- it runs as a Deployment in the chart's model namespace, which enforces Pod Security ``restricted``.

So restricted admission, the model download from the cluster's object store (the storage initializer
image from PyPI's kserve-storage), the read-only root filesystem and the model hash check are real.

Needs from tests/cluster/conftest.py: ``node``, ``images`` (scripts/images.sh build + import), ``chart``
(installed with envs/node.yaml; the model namespace's riskloop-s3 Secret carrying KServe's keys from
``riskloop.cluster.prerequisites.storage_initializer_secret``), and a fixture ``trained_model``: a mapping
with ``storage_uri`` (s3://... of a registered model directory: model.ubj + model.json), ``model_sha256``
and ``model_version`` of that model (the registry's champion after the training Job).
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from riskloop.delivery import inference_service as isvc_builder
from tests.cluster.conftest import Node, kubectl, kubectl_bin

REPO = Path(__file__).resolve().parents[2]
STORAGE_CONTAINER_MANIFEST = REPO / "manifests" / "kserve" / "runtimes" / "storage-initializer-restricted.yaml"
MODELS_NAMESPACE = "riskloop-models"  # helm/riskloop/values.yaml namespaces.models.name

# KServe v0.21 constants (pkg/constants) and defaults (inferenceservice-config's storageInitializer).
STORAGE_INITIALIZER = "storage-initializer"
STORAGE_VOLUME = "kserve-provision-location"
MODEL_MOUNT = "/mnt/models"
STORAGE_URI_ENV = "STORAGE_URI"
STORAGE_RESOURCES = {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
HF_DEFAULT_ENV = [
    {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"},
    {"name": "HF_XET_HIGH_PERFORMANCE", "value": "1"},
    {"name": "HF_XET_NUM_CONCURRENT_RANGE_GETS", "value": "8"},
]
# pkg/credentials/s3: a Secret counts as S3 credentials when it has this key; the rest comes from its
# serving.kserve.io/s3-* annotations or, failing those, its data keys (getEnvValue), in this order.
S3_SECRET_ACCESS_KEY = "awsSecretAccessKey"
S3_ACCESS_KEY_ID = "awsAccessKeyID"
S3_SETTINGS = (  # (env var, annotation suffix, data key)
    ("S3_USE_HTTPS", "s3-usehttps", "S3_USE_HTTPS"),
    ("S3_ENDPOINT", "s3-endpoint", "S3_ENDPOINT"),
    ("S3_VERIFY_SSL", "s3-verifyssl", "S3_VERIFY_SSL"),
    ("awsAnonymousCredential", "s3-useanoncredential", "awsAnonymousCredential"),
    ("AWS_DEFAULT_REGION", "s3-region", "AWS_DEFAULT_REGION"),
    ("S3_USER_VIRTUAL_BUCKET", "s3-usevirtualbucket", "S3_USER_VIRTUAL_BUCKET"),
    ("S3_USE_ACCELERATE", "s3-useaccelerate", "S3_USE_ACCELERATE"),
    ("AWS_CA_BUNDLE", "s3-cabundle", "AWS_CA_BUNDLE"),
    ("AWS_CA_BUNDLE_CONFIGMAP", "s3-cabundle-configmap", "AWS_CA_BUNDLE_CONFIGMAP"),
)

READY_TIMEOUT = 300  # image start, Feast registry, model download and load on 2 shared cores
pytestmark = pytest.mark.timeout(900)


# --- KServe's storage-initializer injection, as pure functions over JSON objects ---------------------------


def s3_credential_env(
    service_account: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The env KServe's credential builder gives the storage initializer from ``service_account``'s Secrets.

    ``secrets`` maps names to Secret objects (``data`` base64, as the API returns them). Only the S3 case:
    the other kinds (GCS, Azure, HTTPS, HDFS) are not what riskloop uses.
    """
    env: list[dict[str, Any]] = []
    for ref in service_account.get("secrets") or []:
        secret = secrets.get(ref["name"])
        if secret is None or S3_SECRET_ACCESS_KEY not in (secret.get("data") or {}):
            continue
        name = secret["metadata"]["name"]
        env += [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": name, "key": S3_ACCESS_KEY_ID}}},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": name, "key": S3_SECRET_ACCESS_KEY}},
            },
        ]
        annotations = secret["metadata"].get("annotations") or {}
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        values: dict[str, str] = {}
        for var, annotation, key in S3_SETTINGS:
            value = annotations.get(f"serving.kserve.io/{annotation}", data.get(key, ""))
            if value:
                values[var] = value
        for var, _, _ in S3_SETTINGS:
            if var in values:
                env.append({"name": var, "value": values[var]})
            if var == "S3_ENDPOINT" and var in values:
                scheme = "http" if values.get("S3_USE_HTTPS") == "0" else "https"
                env.append({"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{values[var]}"})
    return env


def strategic_merge_container(target: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` (a ClusterStorageContainer's container) strategic-merged over ``target``: maps merge,
    env/volumeMounts merge by name/mountPath, other lists and scalars are replaced; the name stays."""
    merged = copy.deepcopy(target)
    keys = {"env": "name", "volumeMounts": "mountPath"}
    for field, value in override.items():
        if field == "name":
            continue
        if field in keys and isinstance(value, list):
            by_key = {item[keys[field]]: item for item in merged.get(field, [])}
            for item in value:
                by_key[item[keys[field]]] = {**by_key.get(item[keys[field]], {}), **item}
            merged[field] = list(by_key.values())
        elif isinstance(value, dict) and isinstance(merged.get(field), dict):
            merged[field] = _merge_maps(merged[field], value)
        else:
            merged[field] = copy.deepcopy(value)
    return merged


def _merge_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(copy.deepcopy(a))
    for k, v in b.items():
        out[k] = _merge_maps(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def inject_storage_initializer(
    pod_spec: Mapping[str, Any],
    *,
    image: str,
    credential_env: list[dict[str, Any]],
    storage_container: Mapping[str, Any],
) -> dict[str, Any]:
    """``pod_spec`` as KServe v0.21's webhook leaves it for a custom container with ``STORAGE_URI``
    (single URI, legacy path; storage read-only in the serving container by default)."""
    spec = copy.deepcopy(dict(pod_spec))
    user = next(c for c in spec["containers"] if c["name"] == isvc_builder.CONTAINER_NAME)
    uri = next(e["value"] for e in user["env"] if e["name"] == STORAGE_URI_ENV)
    init: dict[str, Any] = {
        "name": STORAGE_INITIALIZER,
        "image": image,
        "args": [uri, MODEL_MOUNT],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": STORAGE_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": False}],
        "env": [dict(e) for e in HF_DEFAULT_ENV],
        "resources": copy.deepcopy(STORAGE_RESOURCES),
    }
    init["env"] += credential_env
    init = strategic_merge_container(init, storage_container)
    spec.setdefault("initContainers", []).append(init)
    spec.setdefault("volumes", []).append({"name": STORAGE_VOLUME, "emptyDir": {}})
    user.setdefault("volumeMounts", []).append({"name": STORAGE_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True})
    for e in user["env"]:
        if e["name"] == STORAGE_URI_ENV and e.get("value"):
            e["value"] = MODEL_MOUNT
    return spec


def predictor_pod_spec(isvc: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of the InferenceService's predictor: its PodSpec fields (containers as built), without
    KServe's own (minReplicas, canaryTrafficPercent, ...)."""
    pod_fields = set(k8s.V1PodSpec.attribute_map.values())
    return {k: copy.deepcopy(v) for k, v in isvc["spec"]["predictor"].items() if k in pod_fields}


def predictor_deployment(
    isvc: Mapping[str, Any],
    *,
    name: str,
    image: str,
    credential_env: list[dict[str, Any]],
    storage_container: Mapping[str, Any],
) -> dict[str, Any]:
    # the pods carry the InferenceService's labels, as KServe's do (the chart's NetworkPolicies select the
    # predictor by them); the Deployment selects its own pods by one more
    selector = {"riskloop.io/test": name}
    pod = inject_storage_initializer(
        predictor_pod_spec(isvc), image=image, credential_env=credential_env, storage_container=storage_container
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": isvc["metadata"]["namespace"], "labels": selector},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {**isvc["metadata"].get("labels", {}), **selector}}, "spec": pod},
        },
    }


# --- the cluster ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(node: Node) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(node.kubeconfig))


@pytest.fixture(scope="module")
def refs(images: list[str]) -> dict[str, str]:
    """The riskloop and storage-initializer references among the images scripts/images.sh imported."""

    def one(repository: str) -> str:
        [ref] = [r for r in images if r.rsplit(":", 1)[0] == repository]
        return ref

    return {
        "riskloop": one("riskloop.local/riskloop"),
        "storage-initializer": one("riskloop.local/kserve-storage-initializer"),
    }


@pytest.fixture(scope="module")
def storage_container() -> dict[str, Any]:
    manifest = yaml.safe_load(STORAGE_CONTAINER_MANIFEST.read_text())
    assert manifest["kind"] == "ClusterStorageContainer"
    return dict(manifest["spec"]["container"])


@pytest.fixture(scope="module")
def credential_env(api: k8s.ApiClient, chart: Any) -> list[dict[str, Any]]:
    """The storage initializer's env, built from the chart's service account and the riskloop-s3 Secret the
    ``chart`` fixture puts into the model namespace (with KServe's keys)."""
    core = k8s.CoreV1Api(api)
    spec = isvc_builder.InferenceServiceParams  # the builder's defaults name the service account and the Secret
    sa_name = spec.model_fields["service_account"].default
    sa = api.sanitize_for_serialization(core.read_namespaced_service_account(sa_name, MODELS_NAMESPACE))
    secrets = {}
    for ref in sa.get("secrets") or []:
        try:
            secrets[ref["name"]] = api.sanitize_for_serialization(
                core.read_namespaced_secret(ref["name"], MODELS_NAMESPACE)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
    env = s3_credential_env(sa, secrets)
    assert any(e["name"] == "S3_ENDPOINT" for e in env), (
        f"service account {sa_name} lists no Secret with KServe's S3 keys in {MODELS_NAMESPACE} "
        f"(listed: {[r['name'] for r in sa.get('secrets') or []]}): the storage initializer would read no endpoint"
    )
    return env


def build_isvc(
    trained_model: Mapping[str, str], image: str, *, sha256: str | None = None, namespace: str = MODELS_NAMESPACE
) -> dict[str, Any]:
    spec = isvc_builder.InferenceServiceParams(
        name="fraud-detector",
        namespace=namespace,
        image=image,
        storage_uri=trained_model["storage_uri"],
        model_sha256=sha256 or trained_model["model_sha256"],
        spec_sha256=trained_model["spec_sha256"],
        model_version=str(trained_model["model_version"]),
    )
    return isvc_builder.build_inference_service(spec)


@contextmanager
def deployed(api: k8s.ApiClient, deployment: dict[str, Any]) -> Iterator[str]:
    """Create ``deployment``; yield its name; delete it (and wait for its pods to go), also on failure."""
    apps = k8s.AppsV1Api(api)
    name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    apps.create_namespaced_deployment(ns, deployment)
    try:
        yield name
    finally:
        apps.delete_namespaced_deployment(name, ns, propagation_policy="Foreground")
        deadline = time.monotonic() + 120
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        while time.monotonic() < deadline and k8s.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items:
            time.sleep(1)


def pods_of(api: k8s.ApiClient, deployment: Mapping[str, Any]) -> list[k8s.V1Pod]:
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    return list(
        k8s.CoreV1Api(api).list_namespaced_pod(deployment["metadata"]["namespace"], label_selector=selector).items
    )


def replica_set_events(api: k8s.ApiClient, namespace: str, name: str) -> list[str]:
    events = k8s.CoreV1Api(api).list_namespaced_event(namespace).items
    return [
        f"{e.reason}: {e.message}"
        for e in events
        if e.involved_object.kind == "ReplicaSet" and e.involved_object.name.startswith(f"{name}-")
    ]


def wait_for(predicate: Any, timeout: float, what: str, explain: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"{what} within {timeout:.0f} s; {explain()}", pytrace=False)


def describe(api: k8s.ApiClient, deployment: Mapping[str, Any]) -> str:
    name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    parts = [f"replica set events: {replica_set_events(api, ns, name)}"]
    for pod in pods_of(api, deployment):
        statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
        parts.append(
            f"pod {pod.metadata.name} phase {pod.status.phase}: "
            + "; ".join(
                f"{s.name} ready={s.ready} restarts={s.restart_count} state={s.state.to_dict()}" for s in statuses
            )
        )
        for container in [STORAGE_INITIALIZER, isvc_builder.CONTAINER_NAME]:
            logs = kubectl("logs", "-n", ns, pod.metadata.name, "-c", container, "--tail=20", check=False)
            parts.append(f"{container} logs: {logs.stdout[-2000:]}{logs.stderr[-500:]}")
    return "\n".join(parts)


@contextmanager
def port_forward(namespace: str, pod: str, port: int) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    proc = subprocess.Popen(
        [kubectl_bin(), "port-forward", "--address", "127.0.0.1", "-n", namespace, f"pod/{pod}", f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", local)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"kubectl port-forward exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- tests ------------------------------------------------------------------------------------------------


def test_the_pod_runs_the_builders_container_as_kserve_mutates_it(storage_container: dict[str, Any]) -> None:
    """The generated pod differs from the builder's predictor only by what KServe's injector changes."""
    model = {
        "storage_uri": "s3://riskloop/mlflow/1/abc/artifacts/model",
        "model_sha256": "a" * 64,
        "spec_sha256": "b" * 64,
        "model_version": "7",
    }
    isvc = build_isvc(model, "riskloop.local/riskloop:0.1.0-abcdef0")
    built = isvc["spec"]["predictor"]["containers"][0]
    env = [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]
    pod = predictor_deployment(isvc, name="x", image="si:1", credential_env=env, storage_container=storage_container)[
        "spec"
    ]["template"]["spec"]
    [served] = pod["containers"]
    expected = copy.deepcopy(built)
    expected["volumeMounts"].append({"name": STORAGE_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True})
    for e in expected["env"]:
        if e["name"] == STORAGE_URI_ENV:
            e["value"] = MODEL_MOUNT
    assert served == expected
    [init] = pod["initContainers"]
    assert init["args"] == [model["storage_uri"], MODEL_MOUNT]
    assert init["securityContext"] == storage_container["securityContext"]
    assert {v["name"] for v in pod["volumes"]} == {v["name"] for v in isvc["spec"]["predictor"]["volumes"]} | {
        STORAGE_VOLUME
    }
    assert pod["serviceAccountName"] == isvc["spec"]["predictor"]["serviceAccountName"]


def test_model_namespace_enforces_restricted(api: k8s.ApiClient, chart: Any) -> None:
    labels = k8s.CoreV1Api(api).read_namespace(MODELS_NAMESPACE).metadata.labels or {}
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels


def test_restricted_admits_the_predictor_only_with_the_storage_containers_security_context(
    api: k8s.ApiClient, refs: dict[str, str], restricted_namespace: str, storage_container: dict[str, Any]
) -> None:
    """Without the ClusterStorageContainer's settings KServe's injected container has no securityContext
    (kserve#5373) and Pod Security `restricted` refuses the pod; with them the same pod is admitted.

    Admission only: a namespace of its own, no model behind the URI, no credentials (the pods are deleted
    whether or not they could start)."""
    ns = restricted_namespace
    core = k8s.CoreV1Api(api)
    sa = isvc_builder.InferenceServiceParams.model_fields["service_account"].default
    core.create_namespaced_service_account(ns, {"metadata": {"name": sa}, "automountServiceAccountToken": False})
    model = {
        "storage_uri": "s3://riskloop/admission-only/model",
        "model_sha256": "c" * 64,
        "spec_sha256": "d" * 64,
        "model_version": "1",
    }
    isvc = build_isvc(model, refs["riskloop"], namespace=ns)

    refused = predictor_deployment(
        isvc,
        name="predictor-unrestricted",
        image=refs["storage-initializer"],
        credential_env=[],
        storage_container={"name": STORAGE_INITIALIZER},
    )
    with deployed(api, refused) as name:
        events = wait_for(
            lambda: [e for e in replica_set_events(api, ns, name) if "violates PodSecurity" in e],
            60,
            "no PodSecurity refusal of the pod",
            lambda: describe(api, refused),
        )
        assert "restricted" in events[0] and f'container "{STORAGE_INITIALIZER}"' in events[0], events
        assert f'container "{isvc_builder.CONTAINER_NAME}"' not in events[0], events
        assert not pods_of(api, refused)

    admitted = predictor_deployment(
        isvc,
        name="predictor-restricted",
        image=refs["storage-initializer"],
        credential_env=[],
        storage_container=storage_container,
    )
    with deployed(api, admitted) as name:
        wait_for(
            lambda: pods_of(api, admitted),
            60,
            "the pod with the storage container's settings was not admitted",
            lambda: describe(api, admitted),
        )
        assert not [e for e in replica_set_events(api, ns, name) if "violates PodSecurity" in e]


def test_predictor_serves_the_trained_model_restricted_read_only(
    api: k8s.ApiClient,
    refs: dict[str, str],
    trained_model: Mapping[str, str],
    credential_env: list[dict[str, Any]],
    storage_container: dict[str, Any],
) -> None:
    isvc = build_isvc(trained_model, refs["riskloop"])
    deployment = predictor_deployment(
        isvc,
        name="predictor",
        image=refs["storage-initializer"],
        credential_env=credential_env,
        storage_container=storage_container,
    )
    with deployed(api, deployment):

        def ready() -> k8s.V1Pod | None:
            for pod in pods_of(api, deployment):
                if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                    return pod
            return None

        pod = wait_for(ready, READY_TIMEOUT, "the predictor pod is not Ready", lambda: describe(api, deployment))
        name = pod.metadata.name
        # the model came from the object store through the storage initializer
        [init] = pod.status.init_container_statuses
        assert init.state.terminated.exit_code == 0
        init_log = kubectl("logs", "-n", MODELS_NAMESPACE, name, "-c", STORAGE_INITIALIZER).stdout
        assert f"Successfully copied {trained_model['storage_uri']}" in init_log, init_log
        # read-only root and model directory; the emptyDir at /tmp is the one writable place
        for path in ("/opt/riskloop/probe", f"{MODEL_MOUNT}/probe"):
            out = kubectl(
                "exec",
                "-n",
                MODELS_NAMESPACE,
                name,
                "-c",
                isvc_builder.CONTAINER_NAME,
                "--",
                "touch",
                path,
                check=False,
            )
            assert out.returncode != 0 and "Read-only file system" in out.stderr, (path, out.stderr)
        assert (
            kubectl(
                "exec",
                "-n",
                MODELS_NAMESPACE,
                name,
                "-c",
                isvc_builder.CONTAINER_NAME,
                "--",
                "touch",
                "/tmp/probe",
                check=False,
            ).returncode
            == 0
        )
        # a V1 prediction through the pod's port
        port = isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"]
        model = isvc["spec"]["predictor"]["containers"][0]["env"]
        model_name = next(e["value"] for e in model if e["name"] == isvc_builder.ENV_MODEL_NAME)
        body = {
            "instances": [
                {
                    "transaction_id": "cluster-1",
                    "card_id": "C000042",
                    "merchant_id": "M00017",
                    "amount": 42.5,
                    "currency": "EUR",
                    "merchant_category": "grocery",
                    "channel": "pos",
                    "country": "DE",
                    "device_type": "terminal",
                    "distance_from_home_km": 3.2,
                    "card_age_days": 812,
                    "event_timestamp": "2026-01-30T10:15:00Z",
                }
            ]
        }
        with port_forward(MODELS_NAMESPACE, name, port) as url:
            request = urllib.request.Request(
                f"{url}/v1/models/{model_name}:predict",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            # the Open Inference Protocol in the pod: metadata from the data contract, an infer built from it
            # alone (the same transaction: a retry of it, so the card's state and the score are unchanged)
            with urllib.request.urlopen(f"{url}/v2/models/{model_name}", timeout=60) as response:
                metadata = json.loads(response.read())
            instance = body["instances"][0]
            assert {t["name"] for t in metadata["inputs"]} == set(instance), metadata
            v2 = {
                "id": "cluster-v2",
                "inputs": [
                    {"name": t["name"], "datatype": t["datatype"], "shape": [1], "data": [instance[t["name"]]]}
                    for t in metadata["inputs"]
                ],
            }
            request = urllib.request.Request(f"{url}/v2/models/{model_name}/infer", data=json.dumps(v2).encode())
            with urllib.request.urlopen(request, timeout=60) as response:
                inferred = json.loads(response.read())
        [prediction] = answer["predictions"]
        assert prediction is not None, answer
        assert inferred["id"] == "cluster-v2" and inferred["model_name"] == model_name, inferred
        scores = {o["name"]: o["data"] for o in inferred["outputs"]}
        assert scores["score"] == [prediction["score"]], (inferred, prediction)


def test_predictor_refuses_a_model_whose_hash_differs(
    api: k8s.ApiClient,
    refs: dict[str, str],
    trained_model: Mapping[str, str],
    credential_env: list[dict[str, Any]],
    storage_container: dict[str, Any],
) -> None:
    """The same pod with another expected sha256: the download succeeds, the server refuses to load it."""
    wrong = "0" * 64 if trained_model["model_sha256"] != "0" * 64 else "1" * 64
    isvc = build_isvc(trained_model, refs["riskloop"], sha256=wrong)
    deployment = predictor_deployment(
        isvc,
        name="predictor-bad-hash",
        image=refs["storage-initializer"],
        credential_env=credential_env,
        storage_container=storage_container,
    )
    with deployed(api, deployment):

        def refused() -> str | None:
            for pod in pods_of(api, deployment):
                for s in pod.status.container_statuses or []:
                    if s.state.terminated is not None:
                        previous: tuple[str, ...] = ()
                    elif s.restart_count > 0:
                        previous = ("--previous",)
                    else:
                        continue
                    logs = kubectl(
                        "logs",
                        "-n",
                        MODELS_NAMESPACE,
                        pod.metadata.name,
                        "-c",
                        isvc_builder.CONTAINER_NAME,
                        *previous,
                        check=False,
                    ).stdout
                    return logs or None
            return None

        logs = wait_for(
            refused, READY_TIMEOUT, "the predictor with a wrong hash did not stop", lambda: describe(api, deployment)
        )
        assert "does not match the registered" in logs, logs[-3000:]
        assert not any(
            c.type == "Ready" and c.status == "True"
            for pod in pods_of(api, deployment)
            for c in pod.status.conditions or []
        )
