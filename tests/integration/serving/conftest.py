"""A trained champion, features materialized up to a held-out day, and a real model server process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest

from riskloop.data.spec import load_spec
from riskloop.data.synthetic import GeneratorParams, write_partitions
from riskloop.settings import Settings

MODEL = "fraud-detector"
PARAMS = GeneratorParams(days=14, n_cards=600, n_merchants=120, seed=21)
HELD_OUT = "2026-01-14"  # the last day: never in training, replayed through the server


@dataclass(frozen=True)
class Trained:
    settings: Settings
    held_out: pd.DataFrame  # validated transactions of the held-out day, in time order
    training_set: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from riskloop import steps

    root = tmp_path_factory.mktemp("serving-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKLOOP_STATE_DIR", str(root))
    s = Settings()
    s.ensure_dirs()
    spec = load_spec("synthetic-fraud")
    write_partitions(PARAMS, spec.source_path(s.root))
    w = root / "work"
    steps.ingest(spec.name, "2026-01-01", HELD_OUT, w / "batch.parquet", s)
    steps.validate(spec.name, w / "batch.parquet", w / "valid.parquet", w / "q.parquet", -1, s, "test-run")
    info = steps.build_training_set(spec.name, w / "valid.parquet", "2026-01-14", 2.0, 2.0, 3.0, 0, w / "ts.parquet", s)
    out = steps.train(
        spec.name,
        w / "ts.parquet",
        {"n_estimators": 80},
        w / "model",
        s,
        pipeline_run_id="test-run",
        data_sha256=info.data_sha256,
        data_snapshot=str(w / "ts.parquet"),
        cutoff_date="2026-01-14",
        maturity_days=2.0,
    )
    ev = steps.evaluate(spec.name, w / "ts.parquet", w / "model", out.mlflow_run_id, w / "report", s, target_fpr=0.01)
    gate = steps.gate(
        ev.comparison,
        {},
        s,
        spec_name=spec.name,
        mlflow_run_id=out.mlflow_run_id,
        pipeline_run_id="test-run",
        gate_result_path=w / "gate.json",
    )
    steps.register(
        out.mlflow_run_id,
        w / "model",
        gate,
        spec.name,
        s,
        pipeline_run_id="test-run",
        data_sha256=info.data_sha256,
        data_snapshot=str(w / "ts.parquet"),
    )
    # the online store as of the start of the held-out day (the offline tables were built on all days,
    # but rows stamped at its start only use earlier days)
    steps.materialize(HELD_OUT, 30, s)
    valid = pd.read_parquet(w / "valid.parquet")
    day = valid[valid["event_timestamp"] >= pd.Timestamp(HELD_OUT, tz="UTC")]
    yield Trained(s, day.sort_values(["event_timestamp", "transaction_id"]).reset_index(drop=True), w / "ts.parquet")
    mp.undo()


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    # one keep-alive client per server: httpx.post builds a client (and its TLS context) per call, which
    # the property tests' thousands of requests paid for each time
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(timeout=10)
        return int(self.process.returncode)


def start_server(
    s: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 90, model: str = MODEL
) -> Server:
    port = free_port()
    log = s.root / f"server-{port}.log"
    e = {**os.environ, "RISKLOOP_STATE_DIR": str(s.root), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "riskloop.cli", "serve", "--port", str(port), *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=e,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/models/{model}", timeout=1).status_code == 200:
                return Server(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"server not ready in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(trained: Trained) -> Iterator[Server]:
    """The champion's server, one for every module that only talks to it (a start costs seconds of imports).

    Tests that need a server in another state (its own env, workers, a corrupt model, a shutdown) start their own.
    """
    srv = start_server(trained.settings, "--model-alias", "champion")
    yield srv
    srv.stop()


@contextlib.contextmanager
def redis_online_store(
    s: Settings, name: str, *, materialize_day: str = HELD_OUT
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """A throwaway redis-server on loopback as the Feast online store (the cluster's kind), materialized as of
    ``materialize_day``; yields the process and the env that points riskloop at it. Always stopped."""
    from riskloop import steps

    port = free_port()
    d = s.root / name
    d.mkdir(exist_ok=True)
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
        ],
        stdout=subprocess.DEVNULL,
    )
    env = {"RISKLOOP_FEAST__ONLINE_STORE": "redis", "RISKLOOP_FEAST__REDIS_CONNECTION": f"127.0.0.1:{port}"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            deadline = time.monotonic() + 10
            while True:  # ready when it accepts a connection
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if redis.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"redis-server did not start on port {port}")
                    time.sleep(0.05)
            steps.materialize(materialize_day, 30, Settings())
        yield redis, env
    finally:
        if redis.poll() is None:
            redis.kill()
        redis.wait(timeout=10)


def instance(row: pd.Series) -> dict[str, object]:
    """A held-out transaction as a request instance."""
    from riskloop.serving.replay import instances

    return instances(pd.DataFrame([row]))[0]


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)
