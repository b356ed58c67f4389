"""The chart's MLflow, for real: a tracking server on PostgreSQL that proxies artifacts to the object store.

The chart runs ``mlflow server --backend-store-uri <postgres> --artifacts-destination s3://...
--serve-artifacts``; clients get ``mlflow-artifacts:/`` URIs, which KServe's storage
initializer cannot fetch. The delivery code maps them to the object-store path
(``RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION``), where this test finds the very bytes logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from riskloop.delivery.rollout import _service_spec
from riskloop.errors import ConfigError
from riskloop.registry.mlflow_registry import (
    Lineage,
    download_model_dir,
    get_version,
    register_version,
    start_training_run,
)
from riskloop.settings import Settings
from riskloop.storage import location
from tests.integration.serving.conftest import MODEL, Trained, free_port
from tests.services import S3Store

START_SECONDS = 120


@pytest.fixture()
def mlflow_server(s3_store: S3Store, postgres_dsn: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(tracking URI, artifacts destination)`` of a tracking server configured as the chart configures it."""
    database = f"mlflow_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    backend = postgres_dsn.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{database}"
    destination = f"s3://{s3_store.bucket}/{uuid.uuid4().hex}/mlflow"
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    env = {**os.environ, **s3_store.env(), "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", destination, "--serve-artifacts"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not ready in {START_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, destination
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_version_on_the_tracking_server_is_served_from_the_object_store(
        trained: Trained, mlflow_server: tuple[str, str], s3_store: S3Store,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tracking_uri, destination = mlflow_server
    for name, value in s3_store.env().items():
        monkeypatch.setenv(name, value)
    model_dir = trained.training_set.parent / "model"
    lineage = Lineage.from_tags(get_version(trained.settings.tracking_uri, MODEL, "1").tags)
    run_id = start_training_run(tracking_uri, "riskloop", params={"n_estimators": 80}, model_dir=model_dir)
    version = register_version(tracking_uri, MODEL, run_id, lineage)

    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path / "pipeline-pod"))
    monkeypatch.setenv("RISKLOOP_MLFLOW__TRACKING_URI", tracking_uri)
    monkeypatch.setenv("RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION", destination)
    spec = _service_spec(Settings(), MODEL, version)
    assert spec.storage_uri.startswith(f"{destination}/") and spec.storage_uri.endswith("/artifacts/model_dir")
    # what the storage initializer fetches is the model that was logged, byte for byte
    stored = location(spec.storage_uri)
    assert [c.name for c in stored.children(dirs=False)] == sorted(p.name for p in model_dir.iterdir())
    assert (stored / "model.ubj").read_bytes() == (model_dir / "model.ubj").read_bytes()
    # and a pipeline step still downloads it through the server (the monitoring job does)
    fetched = download_model_dir(tracking_uri, run_id, tmp_path / "download")
    assert (fetched / "model.json").read_bytes() == (model_dir / "model.json").read_bytes()

    monkeypatch.delenv("RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION")
    with pytest.raises(ConfigError, match="RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION"):
        _service_spec(Settings(), MODEL, version)

