"""riskloop's loop on the node: landing data, a training run in a pod, the champion it registers.

A pytest plugin of the cluster suite (``pytest_plugins`` in conftest.py). Its session fixtures:

- ``landing_data``: the chart's synthetic-data Job (a post-install hook) has landed the synthetic-fraud partitions
  under the storage root on the object store. When the release was installed with ``syntheticData.enabled: false``
  (the hook was not rendered), the same template is rendered from the chart with it on and run as the Job it is;
  the test output says which of the two happened.
- ``trained_model``: the training pipeline, run by ``riskloop run training`` (kfp.local, every step a subprocess
  of the pod) inside a Job of the riskloop image in KFP's namespace, as KFP's ``pipeline-runner`` and under Pod
  Security ``restricted``, with the env a compiled step gets from the chart (``pipelines/cluster.py``: read from the
  compiled pipeline's platform spec, not repeated here). It registers a champion in the chart's MLflow; the fixture
  gives its model directory on the object store, its sha256 and its version.

What runs on the host: kubectl, helm's renderer, the MLflow and S3 clients that read what the pods wrote (through
the Services' cluster IPs, which the node routes to from the host).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import (
    CHART_DIR,
    NODE_VALUES,
    PIPELINE_RUNNER,
    PIPELINES_NAMESPACE,
    PLATFORM_NAMESPACE,
    RELEASE,
    S3_PORT,
    ObjectStore,
    image_ref,
    kubectl,
    kubectl_json,
)

SPEC = "synthetic-fraud"
MODEL = "fraud-detector"  # values.yaml config.modelName
# The smallest window the training pipeline takes with the spec's split (validation 3 + test 4 days) and labels
# matured for 2 days: 13 days leave 4 days to train on (tests/integration/test_cluster_shape.py uses the same).
TRAINING_DAYS = 13
MATURITY_DAYS = 2
JOB_TIMEOUT_SECONDS = {"synthetic-data": 900, "training": 2400, "monitoring": 2400, "lineage": 600}
SYNTHETIC_DATA_JOB = f"{RELEASE}-synthetic-data"
SYNTHETIC_DATA_TEMPLATE = "riskloop/templates/synthetic-data-job.yaml"
# KFP's artifact store for the runs of this suite: kfp.local's pipeline root (<state dir>/kfp) on a volume that outlives
# the step pod, so the lineage of a prediction finds the training set a run recorded (on a KFP cluster: its S3 store)
PIPELINE_ROOT_CLAIM = "riskloop-node-kfp-artifacts"
STEP_MEMORY_LIMIT = "4Gi"  # pipelines/training.py asks 4G for build_training_set; kfp.local runs steps one by one


@dataclass(frozen=True)
class Landing:
    storage_uri: str  # RISKLOOP_STORAGE__URI, as the chart's riskloop-config says
    days: list[date]
    hook_ran: bool  # False: the release had the hook off, its template was run by this fixture


@dataclass(frozen=True)
class JobRun:
    name: str
    seconds: float
    logs: str


# --- helpers ------------------------------------------------------------------------------------------------


def config_map(namespace: str = PIPELINES_NAMESPACE) -> dict[str, str]:
    return dict(kubectl_json("-n", namespace, "get", "configmap", "riskloop-config")["data"])


def secret_data(name: str, namespace: str) -> dict[str, str]:
    data = kubectl_json("-n", namespace, "get", "secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def cluster_ip(namespace: str, service: str) -> str:
    return str(kubectl_json("-n", namespace, "get", "service", service)["spec"]["clusterIP"])


def host_s3_env(store: ObjectStore) -> dict[str, str]:
    """The object store's credentials, with its Service's cluster IP for the host (pods use its DNS name)."""
    return {
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
        "MLFLOW_S3_ENDPOINT_URL": f"http://{cluster_ip(PLATFORM_NAMESPACE, 's3')}:{S3_PORT}",
    }


def host_env(store: ObjectStore, state_dir: Path) -> dict[str, str]:
    """Env of a riskloop process on the host that reads what the pods wrote: the chart's settings with the
    Services' cluster IPs (MLflow, the object store) in place of their DNS names."""
    cfg = config_map()
    mlflow = f"http://{cluster_ip(PLATFORM_NAMESPACE, f'{RELEASE}-mlflow')}:5000"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RISKLOOP_", "AWS_", "MLFLOW_"))}
    env.update(host_s3_env(store))
    env.update(
        {
            "RISKLOOP_STORAGE__URI": cfg["RISKLOOP_STORAGE__URI"],
            "RISKLOOP_MLFLOW__TRACKING_URI": mlflow,
            "RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION": cfg["RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION"],
            "RISKLOOP_STATE_DIR": str(state_dir),
        }
    )
    return env


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` as this process's environment for the block (riskloop's storage and MLflow clients read it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def step_env(pipeline: Callable[..., Any], executor: str) -> list[dict[str, Any]]:
    """The env a step of ``pipeline`` gets on the cluster: the compiled pipeline's Kubernetes platform spec
    (pipelines/cluster.py on_cluster) for ``executor``, as container env entries (what KFP's driver sets)."""
    from kfp import compiler

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        docs = list(yaml.safe_load_all(path.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
    env: list[dict[str, Any]] = []
    for cm in platform.get("configMapAsEnv", []):
        env += [
            {
                "name": kv["envVar"],
                "valueFrom": {"configMapKeyRef": {"name": cm["configMapName"], "key": kv["configMapKey"]}},
            }
            for kv in cm["keyToEnv"]
        ]
    for secret in platform.get("secretAsEnv", []):
        env += [
            {
                "name": kv["envVar"],
                "valueFrom": {"secretKeyRef": {"name": secret["secretName"], "key": kv["secretKey"]}},
            }
            for kv in secret["keyToEnv"]
        ]
    assert env, f"{executor} of {pipeline.__name__} has no env from the chart in its platform spec"
    return env


def step_job(name: str, image: str, args: list[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    """A Job shaped as a KFP step pod of the chart: KFP's namespace and step account, the riskloop image, the
    chart's security contexts (restricted, read-only root), the state dir an emptyDir, the pipeline root under it
    the artifact store's volume (PIPELINE_ROOT_CLAIM)."""
    state_dir = config_map()["RISKLOOP_STATE_DIR"].rstrip("/")
    pipeline_root = f"{state_dir}/kfp"  # riskloop.settings: pipeline_root
    security = {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": PIPELINES_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "riskloop-node-tests"},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/part-of": "riskloop-node-tests"}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": PIPELINE_RUNNER,
                    # as KFP's step pods: pipeline-runner's token, with which the monitor and delivery steps read the
                    # InferenceService (the chart binds pipeline-runner's Role in the model namespace)
                    "automountServiceAccountToken": True,
                    "securityContext": {**security, "fsGroup": 10001},
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "args": args,
                            "env": [{"name": "HOME", "value": "/tmp"}, *env],
                            "securityContext": {
                                **security,
                                "allowPrivilegeEscalation": False,
                                "privileged": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"memory": STEP_MEMORY_LIMIT},
                            },
                            # the state dir an emptyDir of its own: the kubelet makes the artifact volume's mount
                            # point in it as root, which left a state dir inside /tmp's emptyDir unwritable
                            "volumeMounts": [
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "state", "mountPath": state_dir},
                                {"name": "artifacts", "mountPath": pipeline_root},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "state", "emptyDir": {}},
                        {"name": "artifacts", "persistentVolumeClaim": {"claimName": PIPELINE_ROOT_CLAIM}},
                    ],
                },
            },
        },
    }


def job_state(namespace: str, name: str) -> str | None:
    """'succeeded', 'failed' or None (still running) from the Job's conditions."""
    status = kubectl_json("-n", namespace, "get", "job", name).get("status", {})
    for cond in status.get("conditions") or []:
        if cond["status"] == "True" and cond["type"] in ("Complete", "Failed"):
            return "succeeded" if cond["type"] == "Complete" else "failed"
    return None


def job_logs(namespace: str, name: str) -> str:
    r = kubectl("-n", namespace, "logs", f"job/{name}", "--all-containers", check=False, timeout=120)
    return r.stdout + r.stderr


def job_pods(namespace: str, name: str) -> str:
    return kubectl("-n", namespace, "get", "pods", "-l", f"job-name={name}", "-o", "wide", check=False).stdout


def wait_for_job(namespace: str, name: str, timeout: float) -> JobRun:
    """Wait for the Job to finish; its logs. Fails with the logs and the pod's state if it failed or timed out."""
    started = time.monotonic()
    state = None
    while time.monotonic() - started < timeout:
        state = job_state(namespace, name)
        if state:
            break
        time.sleep(5)
    seconds = time.monotonic() - started
    logs = job_logs(namespace, name)
    sys.stderr.write(
        f"\n--- Job {namespace}/{name}: {state or 'still running'} after {seconds:.0f} s\n{logs[-6000:]}\n"
    )
    if state != "succeeded":
        events = kubectl(
            "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}", check=False
        ).stdout
        pytest.fail(
            f"Job {namespace}/{name} {state or f'did not finish within {timeout:.0f} s'}:\n"
            f"{job_pods(namespace, name)}\n{events}\n{logs[-5000:]}",
            pytrace=False,
        )
    return JobRun(name, seconds, logs)


def delete_job(namespace: str, name: str) -> None:
    kubectl(
        "-n",
        namespace,
        "delete",
        "job",
        name,
        "--ignore-not-found",
        "--cascade=foreground",
        "--wait=true",
        check=False,
        timeout=180,
    )


def run_step_job(kind: str, image: str, args: list[str], env: list[dict[str, Any]]) -> JobRun:
    """Run a step Job to its end and delete it (also on failure); its logs and how long it took."""
    name = f"loop-{kind}-{int(time.time())}"
    kubectl("apply", "-f", "-", stdin=json.dumps(step_job(name, image, args, env)))
    try:
        return wait_for_job(PIPELINES_NAMESPACE, name, JOB_TIMEOUT_SECONDS[kind])
    finally:
        delete_job(PIPELINES_NAMESPACE, name)


def release_values(images: list[str]) -> dict[str, Any]:
    """The values the ``chart`` fixture installs the release with (envs/node.yaml and the image's tag)."""
    values: dict[str, Any] = yaml.safe_load(NODE_VALUES.read_text())
    values["image"]["tag"] = image_ref(images, "riskloop").rsplit(":", 1)[1]
    return values


def chart_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))


def synthetic_data_job_from_chart(values: dict[str, Any]) -> dict[str, Any]:
    """The chart's synthetic-data hook Job, rendered with the release's values and the hook on."""
    import helm_python as helm

    on = {**values, "syntheticData": {**values.get("syntheticData", {}), "enabled": True}}
    rendered = helm.Chart.load(CHART_DIR).render(on, name=RELEASE, namespace=PLATFORM_NAMESPACE, is_install=True)
    [job] = [d for d in yaml.safe_load_all(rendered[SYNTHETIC_DATA_TEMPLATE]) if d]
    assert job["kind"] == "Job" and job["metadata"]["name"] == SYNTHETIC_DATA_JOB, job["metadata"]
    return dict(job)


def landed_days(store: ObjectStore, storage_uri: str) -> list[date]:
    """The days under the storage root's landing prefix for the spec, listed on the object store."""
    import boto3

    from riskloop.data.spec import load_spec

    bucket, _, prefix = storage_uri.removeprefix("s3://").partition("/")
    landing = f"{prefix}/{load_spec(SPEC).source.path}".strip("/") + "/"
    s3 = boto3.client(
        "s3",
        endpoint_url=host_s3_env(store)["MLFLOW_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
    )
    days = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=landing):
        for obj in page.get("Contents", []):
            m = re.search(r"/date=(\d{4}-\d{2}-\d{2})/part-0\.parquet$", obj["Key"])
            if m and obj["Size"] > 0:
                days.add(date.fromisoformat(m.group(1)))
    return sorted(days)


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def steps_namespace(chart: Any, object_store: ObjectStore) -> str:
    """KFP's namespace with what the chart's steps read there: riskloop-config and riskloop-db (the chart's),
    riskloop-s3 (the operator's, as values.yaml s3.existingSecret says: in the release, pipeline and model
    namespaces; copied from the release namespace as the operator would create it)."""
    secret = kubectl_json("-n", PLATFORM_NAMESPACE, "get", "secret", "riskloop-s3")
    copy = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": secret.get("type", "Opaque"),
        "metadata": {"name": "riskloop-s3", "namespace": PIPELINES_NAMESPACE},
        "data": secret["data"],
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(copy))
    for kind, name in (("configmap", "riskloop-config"), ("secret", "riskloop-db")):
        kubectl("-n", PIPELINES_NAMESPACE, "get", kind, name)  # fails with kubectl's words if the chart did not
    # the artifact store's volume: created once and kept with the node (as KFP's store keeps what runs wrote); the
    # node's pool of volumes is not spent by every session
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": PIPELINE_ROOT_CLAIM, "namespace": PIPELINES_NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    if kubectl("-n", PIPELINES_NAMESPACE, "get", "pvc", PIPELINE_ROOT_CLAIM, check=False).returncode:
        kubectl("apply", "-f", "-", stdin=json.dumps(claim))
    return PIPELINES_NAMESPACE


@pytest.fixture(scope="session")
def landing_data(chart: Any, images: list[str], object_store: ObjectStore) -> Landing:
    storage_uri = config_map(PLATFORM_NAMESPACE)["RISKLOOP_STORAGE__URI"]
    values = release_values(images)
    hook_on = bool({**chart_defaults().get("syntheticData", {}), **values.get("syntheticData", {})}.get("enabled"))
    exists = kubectl("-n", PLATFORM_NAMESPACE, "get", "job", SYNTHETIC_DATA_JOB, check=False).returncode == 0
    if hook_on:
        assert exists, f"the release has syntheticData.enabled but its hook Job {SYNTHETIC_DATA_JOB} is not there"
        run = wait_for_job(PLATFORM_NAMESPACE, SYNTHETIC_DATA_JOB, JOB_TIMEOUT_SECONDS["synthetic-data"])
    else:
        sys.stderr.write(
            f"\nthe release has syntheticData.enabled false ({NODE_VALUES.name}): running the chart's "
            f"{SYNTHETIC_DATA_TEMPLATE} rendered with it on\n"
        )
        job = synthetic_data_job_from_chart(values)
        if exists:  # the hook's own delete policy: before-hook-creation
            delete_job(PLATFORM_NAMESPACE, SYNTHETIC_DATA_JOB)
        kubectl("apply", "-f", "-", stdin=json.dumps(job))
        run = wait_for_job(PLATFORM_NAMESPACE, SYNTHETIC_DATA_JOB, JOB_TIMEOUT_SECONDS["synthetic-data"])
    sys.stderr.write(f"synthetic data: {run.seconds:.0f} s\n")
    data = {**chart_defaults()["syntheticData"], **values.get("syntheticData", {})}
    first = date.fromisoformat(str(data["start"]))
    expected = [first + timedelta(days=i) for i in range(int(data["days"]))]
    days = landed_days(object_store, storage_uri)
    assert days == expected, (
        f"under {storage_uri}: {len(days)} landed days {days[:1]}..{days[-1:]}, expected {expected[0]}..{expected[-1]}"
    )
    return Landing(storage_uri=storage_uri, days=days, hook_ran=hook_on)


@pytest.fixture(scope="session")
def training_run(landing_data: Landing, steps_namespace: str, images: list[str]) -> JobRun:
    """``riskloop run training`` in a step Job: the window ends TRAINING_DAYS after the first landed day."""
    from riskloop.pipelines.training import training_pipeline

    end = landing_data.days[0] + timedelta(days=TRAINING_DAYS - 1)
    args = [
        "riskloop",
        "run",
        "training",
        "--spec",
        SPEC,
        "--end",
        end.isoformat(),
        "--days",
        str(TRAINING_DAYS),
        "--maturity-days",
        str(MATURITY_DAYS),
    ]
    run = run_step_job("training", image_ref(images, "riskloop"), args, step_env(training_pipeline, "exec-train"))
    sys.stderr.write(f"training Job: {run.seconds:.0f} s\n")
    return run


@pytest.fixture(scope="session")
def trained_model(
    training_run: JobRun, object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The champion the training Job registered: its model directory on the object store (``storage_uri``), the
    registered ``model_sha256``, ``spec_sha256`` (the dataset spec's) and ``model_version`` (read from the chart's
    MLflow through its Service)."""
    from riskloop.registry.mlflow_registry import (
        MODEL_DIR_ARTIFACT,
        SPEC_SHA256_TAG,
        object_store_uri,
        run_info,
        version_by_alias,
    )
    from riskloop.storage import location

    env = host_env(object_store, tmp_path_factory.mktemp("host-state"))
    tracking = env["RISKLOOP_MLFLOW__TRACKING_URI"]
    with environment(env):
        champion = version_by_alias(tracking, MODEL, "champion")
        assert champion is not None, (
            f"no champion of {MODEL} in MLflow after the training Job:\n{training_run.logs[-3000:]}"
        )
        artifacts = object_store_uri(
            run_info(tracking, champion.run_id)["artifact_uri"], env["RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION"]
        )
        storage_uri = f"{artifacts.rstrip('/')}/{MODEL_DIR_ARTIFACT}"
        names = {item.name for item in location(storage_uri).children(dirs=False)}
    assert storage_uri.startswith("s3://") and {"model.ubj", "model.json"} <= names, (storage_uri, names)
    return {
        "storage_uri": storage_uri,
        "model_sha256": champion.tags["model_sha256"],
        "spec_sha256": champion.tags[SPEC_SHA256_TAG],
        "model_version": str(champion.version),
    }
