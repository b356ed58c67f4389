"""Pods that share nothing but the object store: the predictor's log reaches the monitoring job.

On a cluster the predictor, the data Job and every pipeline step run in pods of their
own, each with a private state dir. Here each "pod" is a process or a Settings with
its own state dir; the landing data, the prediction log and the monitor state travel
only through the S3 endpoint. MLflow is the one the ``trained`` fixture made (on a
cluster, the tracking server all pods reach).
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from riskloop import steps
from riskloop.data.io import partitions
from riskloop.data.spec import load_spec
from riskloop.data.synthetic import write_partitions
from riskloop.monitoring.daily import monitor_day
from riskloop.monitoring.decision import MonitorPolicy, load_state
from riskloop.serving.prediction_log import read_prediction_log
from riskloop.serving.replay import Replay, instances
from riskloop.settings import Settings
from riskloop.storage import location
from tests.integration.serving.conftest import HELD_OUT, MODEL, PARAMS, Trained, start_server
from tests.services import S3Store


def pod(state_dir: Path, tracking_uri: str, storage_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a step's pod builds: its own empty state dir, the shared tracking server and storage root."""
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(state_dir))
    monkeypatch.setenv("RISKLOOP_MLFLOW__TRACKING_URI", tracking_uri)
    monkeypatch.setenv("RISKLOOP_STORAGE__URI", storage_uri)
    s = Settings()
    s.ensure_dirs()
    return s


def test_the_monitoring_pod_reads_what_the_predictor_pod_logged(trained: Trained, s3_store: S3Store, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_store.env().items():
        monkeypatch.setenv(name, value)
    shared = f"s3://{s3_store.bucket}/{uuid.uuid4().hex}"
    spec = load_spec("synthetic-fraud")
    # the data Job: the same landing data as the fixture's, on the object store
    write_partitions(PARAMS, spec.source_path(location(shared)))

    # the training pipeline's ingest step, in a pod of its own, finds it there
    ingest_pod = pod(tmp_path / "ingest-pod", trained.settings.tracking_uri, shared, monkeypatch)
    rows = steps.ingest(spec.name, "2026-01-01", HELD_OUT, tmp_path / "batch.parquet", ingest_pod)
    assert rows == sum(len(p.read_table()) for _, p in partitions(spec.source_path(location(shared))))

    # the predictor pod: the fixture's model and Feast, its log on the object store
    local_log = trained.settings.predictions
    before = len(read_prediction_log(local_log))
    served = instances(trained.held_out)
    srv = start_server(trained.settings, "--model-alias", "champion", env={"RISKLOOP_STORAGE__URI": shared})
    try:
        replay = Replay(srv.url, MODEL, served, connections=2, batch_size=16, once=True).start()
        replay.wait()
        assert {a.status for a in replay.answers()} == {200}
    finally:
        assert srv.stop() == 0  # flushes the log
    assert len(read_prediction_log(local_log)) == before  # nothing went to the predictor's own disk
    logged = read_prediction_log(location(shared) / "predictions")
    assert len(logged) == len(served) and set(logged["model_version"]) == {"1"}

    # the monitoring pod: an empty state dir of its own
    monitor_pod = pod(tmp_path / "monitor-pod", trained.settings.tracking_uri, shared, monkeypatch)
    policy = MonitorPolicy(min_current_rows=100, min_reference_rows=100)
    outcome = monitor_day(monitor_pod, spec.name, date.fromisoformat(HELD_OUT), policy=policy)
    assert outcome.rows == len(served) and outcome.drift_share is not None
    state = load_state(location(shared) / "monitoring" / f"{MODEL}-state.json")
    assert [(d.day.isoformat(), d.model_version) for d in state.history] == [(HELD_OUT, "1")]
    assert not (tmp_path / "monitor-pod" / "monitoring" / f"{MODEL}-state.json").exists()

    # tomorrow's run is another pod again: it carries on from the state the first one left
    next_pod = pod(tmp_path / "next-monitor-pod", trained.settings.tracking_uri, shared, monkeypatch)
    again = monitor_day(next_pod, spec.name, date.fromisoformat(HELD_OUT), policy=policy)
    carried = load_state(location(shared) / "monitoring" / f"{MODEL}-state.json")
    assert again.rows == outcome.rows and carried.last_run_at == state.last_run_at  # the same day, replaced
    assert len(carried.history) == 1
