"""`riskloop canary deploy|promote|rollback` on the node's API server, with the InferenceService CRD generated from
KServe's API types (tests/cluster/crds.py).

Real here: the Kubernetes API server (the CRD's schema validation of every object and merge patch, strict field
validation, resourceVersion preconditions), MLflow's registry (sqlite, as tests/integration runs it) with the model
directories on a real S3 server (moto's, on 127.0.0.1, started and stopped here), and the riskloop CLI run as a
user runs it, against the node's kubeconfig.

Not real, and not claimed: no KServe controller runs. It cannot be built here (its go.mod pins k8s.io v0.34, which
the module proxy does not serve), so no InferenceService ever gets a status: no Knative revision, no readiness, no
traffic split; Knative's routing would also need its Envoy-based ingress, which cannot be built here either. These
tests check what riskloop writes to the API server and that the server accepts it, never that traffic moved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from riskloop.delivery import kube
from riskloop.delivery.inference_service import LABEL_MODEL_VERSION, InferenceServiceParams, build_inference_service
from riskloop.errors import DeploymentError
from tests.cluster import crds
from tests.cluster.conftest import REPO, Node, kubectl, kubectl_json
from tests.cluster.crds import Crds

pytestmark = pytest.mark.timeout(900, func_only=True)
installed_crds = crds.installed_crds  # the session's CRDs, a fixture of crds.py

MODEL = "fraud-detector"  # the synthetic-fraud spec's model: no approval required
SERVICE = "fraud-detector"
IMAGE = "riskloop.local/riskloop:canary-test"  # never pulled: no controller makes pods of it
BUCKET = "canary-test"
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "canary-test",
    "AWS_SECRET_ACCESS_KEY": "canary-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server from the locked tool environment tools/s3 (as scripts/services.sh runs it), on loopback."""
    venv = REPO / "tools" / "s3" / ".venv"
    if not (venv / "bin" / "moto_server").exists():
        uv = shutil.which("uv")
        assert uv, "uv is needed to create tools/s3/.venv (make setup installs it)"
        subprocess.run(
            [uv, "sync", "--frozen", "--quiet", "--project", str(REPO / "tools" / "s3")], check=True, timeout=600
        )
    port = _free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    server = subprocess.Popen(
        [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"moto_server exited {server.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/moto-api/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"moto_server not ready in 60 s: {log.read_text()[-2000:]}"
            time.sleep(0.3)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=url,
            **{k.lower(): v for k, v in S3_KEYS.items() if k != "AWS_DEFAULT_REGION"},
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@dataclass
class Registry:
    """MLflow on sqlite in ``state``; model directories under s3://canary-test/ on the loopback S3 server."""

    state: Path
    env: dict[str, str]
    model_root: Path
    run_id: str = ""

    def register(self) -> str:
        """One more version of the toy model, registered as the register step does (lineage, spec hash)."""
        from riskloop.registry.mlflow_registry import LineageRecord, register_version

        with _env(self.env):
            from riskloop.settings import Settings

            s = Settings()
            meta = json.loads((self.model_root / "model.json").read_text())
            lineage = LineageRecord(
                model_sha256=meta["model_sha256"],
                data_sha256="d" * 64,
                data_snapshot="snap",
                feature_service="raw",
                git_commit="abc",
                image=IMAGE,
                pipeline_run_id="canary-test",
                gate_result="passed",
                riskloop_version="0",
                dataset_spec="synthetic-fraud",
                dataset_spec_sha256=self.spec_sha256,
            )
            return register_version(s.tracking_uri, MODEL, self.run_id, lineage)

    def set_alias(self, alias: str, version: str) -> None:
        from riskloop.registry.mlflow_registry import set_alias

        with _env(self.env):
            from riskloop.settings import Settings

            set_alias(Settings().tracking_uri, MODEL, alias, version)

    @property
    def spec_sha256(self) -> str:
        from riskloop.data.spec import read_spec_source

        return read_spec_source("synthetic-fraud").sha256


class _env:
    """``os.environ`` updated for the in-process MLflow client, restored afterwards."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {k: os.environ.get(k) for k in values}

    def __enter__(self) -> None:
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def namespace(node: Node, installed_crds: Crds, request: pytest.FixtureRequest) -> Iterator[str]:
    """This test's namespace (``canary-test-*``), deleted afterwards with its InferenceServices."""
    name = "canary-test-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture()
def registry(s3_endpoint: str, namespace: str, tmp_path: Path) -> Registry:
    from riskloop.data.spec import read_spec_source
    from riskloop.registry.mlflow_registry import SPEC_FILE, SPEC_SHA256_TAG, start_training_run
    from riskloop.training.train import train_model
    from tests.unit.test_train import META, PARAMS, toy_features, toy_frame

    env = {
        "RISKLOOP_STATE_DIR": str(tmp_path / "state"),
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        **S3_KEYS,
        "RISKLOOP_DELIVERY__TARGET": "kubernetes",
        "RISKLOOP_DELIVERY__NAMESPACE": namespace,
        "RISKLOOP_DELIVERY__SERVICE_NAME": SERVICE,
        "RISKLOOP_IMAGE": IMAGE,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "COLUMNS": "200",
    }
    model_dir = tmp_path / "model"
    train_model(toy_frame(), toy_features(), PARAMS, model_dir, meta=META)
    (model_dir / SPEC_FILE).write_text(read_spec_source("synthetic-fraud").text)
    reg = Registry(state=tmp_path / "state", env=env, model_root=model_dir)
    with _env(env):
        from riskloop.settings import Settings

        s = Settings()
        s.ensure_dirs()
        reg.run_id = start_training_run(
            s.tracking_uri,
            "canary-test",
            params={},
            model_dir=model_dir,
            artifact_location=f"s3://{BUCKET}/{namespace}",
            tags={SPEC_SHA256_TAG: reg.spec_sha256},
        )
    return reg


def riskloop(registry: Registry, *args: str, expect: int = 0) -> str:
    """The riskloop CLI as a user runs it, with the node's kubeconfig (KUBECONFIG, set by the node fixture)."""
    r = subprocess.run(
        [str(Path(sys.executable).parent / "riskloop"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **registry.env},
        cwd=registry.state.parent,
    )
    out = r.stdout + r.stderr
    assert r.returncode == expect, f"riskloop {' '.join(args)} exited {r.returncode}, not {expect}:\n{out[-4000:]}"
    return out


def isvc(namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = kubectl_json("-n", namespace, "get", f"inferenceservice/{SERVICE}", "--show-managed-fields")
    return obj


def _predictor(obj: dict[str, Any]) -> dict[str, Any]:
    predictor: dict[str, Any] = obj["spec"]["predictor"]
    return predictor


def _model_env(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _predictor(obj)["containers"][0]["env"]}


def test_first_go_live_canary_promote_and_rollback_through_the_cli(registry: Registry, namespace: str) -> None:
    """The model's whole life on the API server: the first champion goes live (created), a challenger at 20 %
    (patched, the previous spec stored; `canary status` reads it back), promoted (canary field and stored spec
    gone), the next challenger rolled back (the promoted spec restored exactly, canaryTrafficPercent 0), the
    previous champion restored. Each state read back from the server."""
    v1 = registry.register()
    registry.set_alias("champion", v1)  # the register step makes a first version champion (no approval needed)

    # the champion has no InferenceService yet: the first deploy creates it for the champion, then the canary
    v2 = registry.register()
    riskloop(registry, "canary", "deploy", "--challenger-version", v2, "--canary-percent", "20", "--model", MODEL)
    obj = isvc(namespace)
    assert obj["metadata"]["labels"][LABEL_MODEL_VERSION] == v2
    assert _predictor(obj)["canaryTrafficPercent"] == 20
    previous = kube.read_previous_spec(obj)
    assert previous is not None and previous.model_version == v1, "the champion's spec is stored for rollback"
    assert _model_env({"spec": previous.spec})["RISKLOOP_MODEL_VERSION"] == v1
    assert _model_env(obj)["RISKLOOP_MODEL_VERSION"] == v2
    assert obj["metadata"]["generation"] == 2, "created for the champion, then patched once for the canary"
    assert {f["manager"] for f in obj["metadata"]["managedFields"]} == {"riskloop"}
    # status reads the rollout back from the object and the aliases (no live metrics: no predictor runs)
    shown = riskloop(registry, "canary", "status", "--model", MODEL, "--url", f"http://127.0.0.1:{_free_port()}")
    assert re.search(rf"challenger\s+│?\s*v{v2}\b", shown) and "20%" in shown, shown
    assert "no live metrics" in shown, shown

    riskloop(registry, "canary", "promote", "--model", MODEL, "--reason", "cluster test")
    obj = isvc(namespace)
    assert "canaryTrafficPercent" not in _predictor(obj)
    assert kube.PREVIOUS_SPEC_ANNOTATION not in obj["metadata"].get("annotations", {})
    assert obj["metadata"]["labels"][LABEL_MODEL_VERSION] == v2
    promoted_spec = obj["spec"]

    v3 = registry.register()
    riskloop(registry, "canary", "deploy", "--challenger-version", v3, "--canary-percent", "10", "--model", MODEL)
    assert isvc(namespace)["metadata"]["labels"][LABEL_MODEL_VERSION] == v3
    riskloop(registry, "canary", "rollback", "--model", MODEL, "--reason", "cluster test")
    obj = isvc(namespace)
    assert obj["metadata"]["labels"][LABEL_MODEL_VERSION] == v2
    assert obj["spec"] == {**promoted_spec, "predictor": {**promoted_spec["predictor"], "canaryTrafficPercent": 0}}
    assert kube.PREVIOUS_SPEC_ANNOTATION not in obj["metadata"].get("annotations", {})

    # after the promotion, `restore` brings the previous champion back the way every version comes: canary, promote
    riskloop(registry, "canary", "restore", "--model", MODEL, "--reason", "cluster test")
    obj = isvc(namespace)
    assert obj["metadata"]["labels"][LABEL_MODEL_VERSION] == v1
    assert _model_env(obj)["RISKLOOP_MODEL_VERSION"] == v1
    assert "canaryTrafficPercent" not in _predictor(obj)
    assert kube.PREVIOUS_SPEC_ANNOTATION not in obj["metadata"].get("annotations", {})

    # what no controller can give: the object has no status at all, so nothing says traffic moved
    assert "status" not in obj
    st = kube.status(SERVICE, namespace)
    assert (st.ready, st.reason, st.traffic, st.reconciled) == (
        False,
        "KServe has not reported readiness yet",
        (),
        False,
    )


def _api() -> kube.CustomObjects:
    return kube.custom_objects_api()  # the production path: the kubeconfig in $KUBECONFIG


def _spec(namespace: str, version: str) -> InferenceServiceParams:
    return InferenceServiceParams(
        name=SERVICE,
        namespace=namespace,
        image=IMAGE,
        storage_uri=f"s3://{BUCKET}/models/{version}",
        model_sha256=f"{int(version):064x}",
        spec_sha256="1" * 64,
        model_version=version,
        model_name=MODEL,
    )


class InterleavedWriter:
    """The real ``CustomObjectsApi``, with another real writer changing the object between riskloop's read and its
    patch, ``times`` times: the next patch then carries a stale resourceVersion. Records the API server's 409s."""

    def __init__(self, api: Any, namespace: str, times: int) -> None:
        self.api, self.namespace, self.times = api, namespace, times
        self.conflicts: list[str] = []
        self.edits = 0

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        live = self.api.get_namespaced_custom_object(*args, **kwargs)
        if self.edits < self.times:
            self.edits += 1
            kubectl(
                "-n",
                self.namespace,
                "annotate",
                "--overwrite",
                f"inferenceservice/{SERVICE}",
                f"example.com/other-writer={self.edits}",
            )
        return live

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        return self.api.create_namespaced_custom_object(*args, **kwargs)

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.api.patch_namespaced_custom_object(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                self.conflicts.append(str(exc.body))
            raise


def test_a_concurrent_writer_gets_a_real_409_and_riskloop_reads_again(namespace: str) -> None:
    kube.deploy_challenger(_spec(namespace, "1"), canary_percent=10, api=_api())
    writer = InterleavedWriter(_api(), namespace, times=1)
    result = kube.deploy_challenger(_spec(namespace, "2"), canary_percent=25, api=writer)
    assert result.change == "canary" and result.to_model_version == "2"
    assert len(writer.conflicts) == 1 and "the object has been modified" in writer.conflicts[0], writer.conflicts
    obj = isvc(namespace)
    assert obj["metadata"]["annotations"]["example.com/other-writer"] == "1", "the other writer's change is kept"
    assert _predictor(obj)["canaryTrafficPercent"] == 25
    previous = kube.read_previous_spec(obj)
    assert previous is not None and previous.model_version == "1"


def test_a_writer_that_always_gets_in_between_ends_in_a_conflict_error(namespace: str) -> None:
    kube.deploy_challenger(_spec(namespace, "1"), canary_percent=10, api=_api())
    kube.deploy_challenger(_spec(namespace, "2"), canary_percent=10, api=_api())
    before = isvc(namespace)
    writer = InterleavedWriter(_api(), namespace, times=kube.ATTEMPTS)
    with pytest.raises(DeploymentError, match="conflict on patch: another writer") as err:
        kube.promote(SERVICE, namespace, api=writer)
    assert "rerun the step" in (err.value.fix or "")
    assert len(writer.conflicts) == kube.ATTEMPTS
    after = isvc(namespace)
    assert after["spec"] == before["spec"], "no patch got through"
    assert kube.read_previous_spec(after) is not None, "the rollout is still in progress, as before"


def test_a_patch_from_a_stale_read_is_refused_by_the_server(namespace: str) -> None:
    """The precondition itself, without riskloop's retry: the body of a read that is no longer current."""
    kube.deploy_challenger(_spec(namespace, "1"), canary_percent=10, api=_api())
    kube.deploy_challenger(_spec(namespace, "2"), canary_percent=10, api=_api())
    stale = isvc(namespace)
    kubectl("-n", namespace, "label", "--overwrite", f"inferenceservice/{SERVICE}", "example.com/touched=yes")
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=configuration)
    with k8s.ApiClient(configuration) as api_client, pytest.raises(ApiException) as err:
        k8s.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            kube.GROUP, kube.VERSION, namespace, kube.PLURAL, SERVICE, kube.promote_body(stale)
        )
    assert err.value.status == 409


def test_the_server_refuses_what_the_crd_does_not_allow_and_nothing_changes(namespace: str) -> None:
    """Strict field validation (kube.FIELD_VALIDATION): an unknown field is a 400 naming it, not a silent drop."""
    kube.deploy_challenger(_spec(namespace, "1"), canary_percent=10, api=_api())
    before = isvc(namespace)
    bad = {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "bogus": True}},
    }
    with pytest.raises(DeploymentError, match=r'refused to patch .* unknown field \\?"spec.predictor.bogus'):
        kube._update(_api(), SERVICE, namespace, lambda live: bad)
    over = {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"predictor": {"canaryTrafficPercent": "ten"}},
    }
    with pytest.raises(DeploymentError, match="canaryTrafficPercent"):
        kube._update(_api(), SERVICE, namespace, lambda live: over)
    assert isvc(namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_the_created_object_is_what_the_builder_built(namespace: str) -> None:
    """Nothing of the builder's object is pruned, defaulted or rewritten by the CRD's schema."""
    spec = _spec(namespace, "7")
    kube.deploy_challenger(spec, canary_percent=10, api=_api())
    built = build_inference_service(spec)
    stored = isvc(namespace)
    assert stored["metadata"]["labels"] == built["metadata"]["labels"]
    assert stored["metadata"]["annotations"] == built["metadata"]["annotations"]
    assert stored["spec"] == built["spec"]
