"""A real MLflow tracking server as the chart runs it: PostgreSQL backend, artifacts proxied to the object store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.services import S3Store

START_SECONDS = 120


@contextmanager
def fresh_database(postgres_dsn: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the test server; its libpq URI. Dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) of a libpq URI, as the chart's Secret holds both."""
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts_destination: str


@contextmanager
def mlflow_server(backend_dsn: str, s3_store: S3Store, log: Path, port: int) -> Iterator[MlflowServer]:
    """``mlflow server --backend-store-uri <postgres> --artifacts-destination s3://... --serve-artifacts``."""
    destination = f"s3://{s3_store.bucket}/{uuid.uuid4().hex}/mlflow"
    # as the chart runs it: no job-execution consumers (three huey processes that cost CPU and memory, unused)
    env = {
        **os.environ,
        **s3_store.env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("PYTHONPATH", None)  # the server is not a pod of the test harness
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            sqlalchemy_url(backend_dsn),
            "--artifacts-destination",
            destination,
            "--serve-artifacts",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
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
        yield MlflowServer(url, destination)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
