"""The cluster's shape on one machine: pipeline steps and the predictor share nothing but the platform's services.

On Kubernetes every step of a KFP run, the chart's data Job and the predictor are pods, each with an
emptyDir state dir of its own. Here every one of those processes starts with an empty state dir too
(``tests/integration/pods/sitecustomize.py``: an empty dir at the same path, as an emptyDir mounted at
/tmp/riskloop), and all they share is what the chart provides:

- MLflow: a tracking server on PostgreSQL proxying artifacts to the object store (``mlflow server``);
- Feast: the SQL registry in PostgreSQL and the Redis online store;
- the audit log: its PostgreSQL table;
- landing data, the prediction log, the monitor state: the storage root on S3;
- KFP's artifact store (kfp.local's pipeline root stands in for it).

The model server gets its model the way KServe's storage initializer does (the InferenceService's
``storageUri`` copied to a local dir) and the environment of the InferenceService's container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from riskloop.audit.log import open_audit_log
from riskloop.data.io import partitions, read_partitions
from riskloop.data.spec import load_spec
from riskloop.data.validate import split_batch
from riskloop.delivery.inference_service import ENV_MODEL_NAME, build_inference_service
from riskloop.delivery.rollout import _service_params
from riskloop.monitoring.assessment import load_state
from riskloop.orchestration.local import run_features, run_monitoring, run_training, training_params
from riskloop.registry.mlflow_registry import version_by_alias
from riskloop.serving.prediction_log import read_prediction_log
from riskloop.serving.replay import Replay, instances
from riskloop.settings import Settings
from riskloop.storage import location
from tests.integration.mlflow_server import fresh_database, mlflow_server, sqlalchemy_url
from tests.integration.serving.conftest import free_port, start_server
from tests.services import S3Store

PODS = Path(__file__).parent / "pods"
SPEC = "synthetic-fraud"
MODEL = "fraud-detector"
LAST_TRAINING_DAY = date(2026, 1, 13)
SERVED_DAY = date(2026, 1, 14)
REDIS_DB = 7  # the online store's own database on the test server, emptied first
WINDOW = {"maturity_days": 2.0, "validation_days": 2.0, "test_days": 3.0}


@dataclass(frozen=True)
class Platform:
    driver: Settings  # the KFP driver's side: where kfp.local keeps the pipeline root
    storage: str
    secrets: dict[tuple[str, str], str]  # (Secret, key) -> value, as the operator and the chart create them
    pods: Path


@pytest.fixture()
def platform(
    s3_store: S3Store, postgres_dsn: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    online = urlsplit(redis_url)
    redis.Redis(host=online.hostname, port=online.port or 6379, db=REDIS_DB).flushdb()
    with (
        fresh_database(postgres_dsn, "mlflow") as mlflow_db,
        fresh_database(postgres_dsn, "riskloop") as db,
        mlflow_server(mlflow_db, s3_store, tmp_path / "mlflow-server.log", free_port()) as tracking,
    ):
        storage = f"s3://{s3_store.bucket}/{uuid.uuid4().hex}/state"
        # riskloop-config (the chart's ConfigMap), riskloop-s3 and riskloop-db, as the steps receive them
        env = {
            **s3_store.env(),
            "RISKLOOP_MLFLOW__TRACKING_URI": tracking.url,
            "RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION": tracking.artifacts_destination,
            "RISKLOOP_STORAGE__URI": storage,
            "RISKLOOP_FEAST__ONLINE_STORE": "redis",
            "RISKLOOP_FEAST__REDIS_CONNECTION": f"{online.hostname}:{online.port},db={REDIS_DB}",
            "RISKLOOP_FEAST__REGISTRY": sqlalchemy_url(db),
            "RISKLOOP_AUDIT__BACKEND": "postgres",
            "RISKLOOP_AUDIT__POSTGRES_DSN": db,
            "RISKLOOP_TEST_POD_ROOT": str(tmp_path / "pods"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(PODS), os.environ.get("PYTHONPATH", "")) if p),
        }
        (tmp_path / "pods").mkdir()
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path / "driver"))
        secrets = {
            ("riskloop-db", "feast-registry-uri"): sqlalchemy_url(db),
            ("riskloop-db", "dsn"): db,
            **{("riskloop-s3", k): v for k, v in s3_store.env().items()},
        }
        yield Platform(Settings(), storage, secrets, tmp_path / "pods")


def container_env(manifest: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The predictor container's explicit env, Secret references resolved as the kubelet would."""
    container = manifest["spec"]["predictor"]["containers"][0]
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def test_a_day_on_the_cluster_with_nothing_shared_but_the_services(platform: Platform, tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    landing = spec.source_path(location(platform.storage))

    # the chart's synthetic-data Job
    subprocess.run(
        [
            sys.executable,
            "-m",
            "riskloop.cli",
            "data",
            "generate",
            "--days",
            "14",
            "--cards",
            "600",
            "--merchants",
            "120",
            "--seed",
            "21",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert len(partitions(landing)) == 14

    # the first training run
    trained = run_training(
        platform.driver, training_params(LAST_TRAINING_DAY, 13, train_params={"n_estimators": 80}, **WINDOW)
    )
    assert trained.succeeded, trained.error
    pods = (platform.pods / "pods.log").read_text().splitlines()
    assert sum("--function_to_execute" in pod for pod in pods) >= 8  # every step started in an empty state dir
    champion = version_by_alias(platform.driver.tracking_uri, MODEL, "champion")
    assert champion is not None and champion.version == "1"
    audit = open_audit_log("postgres", dsn=platform.driver.audit.postgres_dsn)
    events = [e.event for e in audit.events()]
    assert {"validated", "trained", "gated", "registered", "run_succeeded"} <= set(events)

    # the recurring feature run: the online store as of the served day's start
    features = run_features(platform.driver, LAST_TRAINING_DAY, spec=SPEC, history_days=13)
    assert features.succeeded, features.error

    # the predictor: its model fetched from the InferenceService's storageUri, its container's env
    manifest = build_inference_service(_service_params(platform.driver, MODEL, champion.version))
    env = container_env(manifest, platform.secrets)
    model_dir = tmp_path / "mnt-models"
    stored = location(env["STORAGE_URI"])
    assert stored.uri.startswith(platform.driver.mlflow.artifacts_destination or "unset")
    for item in stored.children(dirs=False):  # what the storage initializer copies to /mnt/models
        model_dir.mkdir(exist_ok=True)
        (model_dir / item.name).write_bytes(item.read_bytes())
    served_rows = instances(_valid_day(spec, landing, SERVED_DAY))
    srv = start_server(Settings(), "--model-dir", str(model_dir), env=env)
    try:
        replay = Replay(srv.url, env[ENV_MODEL_NAME], served_rows, connections=2, batch_size=16, once=True).start()
        replay.wait()
        assert {a.status for a in replay.answers()} == {200}
    finally:
        assert srv.stop() == 0
    logged = read_prediction_log(location(platform.storage) / "predictions")
    assert len(logged) == len(served_rows) and set(logged["model_version"]) == {champion.version}
    # the feature run's materialization reached Redis, where the predictor found the cards' history
    assert (~logged["unknown_card"].astype(bool)).mean() > 0.9

    # the recurring monitoring run for the served day
    monitored = run_monitoring(
        platform.driver,
        SERVED_DAY,
        spec=SPEC,
        training_days=13,
        deliver=False,
        policy={"min_current_rows": 100, "min_reference_rows": 100},
        **WINDOW,
    )
    assert monitored.succeeded, monitored.error
    summaries = [
        json.loads(p.read_text())
        for p in platform.driver.pipeline_root.rglob("summary")
        if "riskloop-monitoring" in str(p)
    ]
    assert [(s["day"], s["rows"]) for s in summaries] == [(SERVED_DAY.isoformat(), len(served_rows))]
    state = load_state(location(platform.storage) / "monitoring" / f"{MODEL}-state.json")
    assert [(d.day, d.model_version) for d in state.history] == [(SERVED_DAY, champion.version)]

    # an auditor's question, from a pod of its own: every hop of one prediction's lineage is found and checks out
    request_id = str(logged["request_id"].iloc[0])
    traced = subprocess.run(
        [sys.executable, "-m", "riskloop.cli", "lineage", request_id, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert traced.stdout.lstrip().startswith("{"), traced.stdout[-2000:] + traced.stderr[-2000:]
    doc = json.loads(traced.stdout)
    not_ok = [
        (h["hop"], h["status"], h["note"], [c for c in h["checks"] if not c["ok"]])
        for m in doc["models"]
        for h in m["hops"]
        if h["status"] != "ok"
    ]
    assert doc["complete"] and traced.returncode == 0 and not not_ok, not_ok


def _valid_day(spec: Any, landing: Any, day: date) -> Any:
    raw = read_partitions(landing, day, day)
    valid = split_batch(raw, spec.contract, where=str(landing)).valid
    return valid.sort_values([spec.timestamp_column, "transaction_id"]).reset_index(drop=True)
