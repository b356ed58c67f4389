"""Shared storage on a real S3 endpoint (the services' object store): what pods of a cluster share.

Every test works under a fresh prefix of the test bucket, with the credentials and
endpoint in the variables the chart's ``riskloop-s3`` Secret sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from riskloop.data.io import partitions, read_partitions
from riskloop.data.spec import load_spec
from riskloop.data.synthetic import GeneratorParams, write_partitions
from riskloop.errors import DataContractError
from riskloop.monitoring.assessment import MonitorState, load_state, save_state
from riskloop.serving.prediction_log import PredictionLog, read_prediction_log
from riskloop.storage import Location, StorageError, location
from tests.services import S3Store

NOON = datetime(2026, 3, 14, 12, tzinfo=UTC)


@pytest.fixture()
def root(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Location]:
    """A fresh prefix of the test bucket, with the S3 variables set for this process."""
    for name, value in s3_store.env().items():
        monkeypatch.setenv(name, value)
    yield location(f"s3://{s3_store.bucket}/{uuid.uuid4().hex}")


def row(i: int, at: datetime) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "transaction_id": f"t{i}",
        "time": at,
        "model": "m",
        "model_version": "1",
        "role": "champion",
        "score": i / 100,
        "decision": "passed",
        "threshold": 0.5,
        "latency_ms": 1.0,
        "unknown_card": False,
        "inputs": {"amount": float(i)},
        "features": {"amount": float(i)},
    }


def test_two_predictor_replicas_log_to_one_prefix_and_a_reader_sees_both(root: Location) -> None:
    logs = [PredictionLog(root / "predictions", flush_rows=10) for _ in range(2)]
    try:
        for n, plog in enumerate(logs):  # rows on both sides of midnight: two date partitions
            plog.append([row(100 * n + i, NOON + timedelta(hours=6 * i)) for i in range(4)])
        for plog in logs:
            plog.flush()
            assert plog.dropped == 0 and plog.write_errors == 0
    finally:
        for plog in logs:
            plog.close()
    frame = read_prediction_log(root / "predictions")
    assert sorted(frame["request_id"]) == sorted(f"r{100 * n + i}" for n in range(2) for i in range(4))
    assert [d.name for d in (root / "predictions").children()] == ["date=2026-03-14", "date=2026-03-15"]
    day = read_prediction_log(root / "predictions", start=NOON.replace(hour=0), end=NOON.replace(hour=0) + timedelta(1))
    assert len(day) == 4 and frame["time"].is_monotonic_increasing


def test_a_write_to_a_missing_bucket_is_retried_then_counted_and_the_reader_says_so(root: Location) -> None:
    missing = location(f"s3://riskloop-no-such-bucket-{uuid.uuid4().hex[:8]}/predictions")
    plog = PredictionLog(missing, write_attempts=2, retry_seconds=0.05)
    try:
        plog.append([row(1, NOON)])
        plog.flush()
        assert plog.dropped == 1 and plog.write_errors == 2
    finally:
        plog.close()
    with pytest.raises(StorageError, match="does not exist") as err:
        read_prediction_log(missing)
    assert "create the bucket" in str(err.value.fix)


def test_landing_partitions_round_trip_through_the_object_store(root: Location, tmp_path: Path) -> None:
    spec = load_spec("synthetic-fraud")
    params = GeneratorParams(days=3, n_cards=40, n_merchants=10, seed=3)
    written = write_partitions(params, spec.source_path(root))
    local = write_partitions(params, spec.source_path(tmp_path))
    assert [p.uri for p in written] == [
        f"{root.uri}/{spec.source.path}/date=2026-01-0{d}/part-0.parquet" for d in (1, 2, 3)
    ]
    assert [day for day, _ in partitions(spec.source_path(root), start=date(2026, 1, 2))] == [
        date(2026, 1, 2),
        date(2026, 1, 3),
    ]
    pd.testing.assert_frame_equal(read_partitions(spec.source_path(root)), read_partitions(spec.source_path(tmp_path)))
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in local]  # the same bytes either way


def test_the_monitor_state_round_trips_and_a_damaged_one_is_refused(root: Location) -> None:
    target = root / "monitoring" / "fraud-detector-state.json"
    assert load_state(target) == MonitorState()  # none yet: a fresh window
    state = MonitorState(episode_started_at=NOON, episode_signals=("amount",))
    save_state(state, target)
    assert load_state(target) == state
    target.write_text('{"history": "not a list"')
    with pytest.raises(DataContractError, match="monitor state") as err:
        load_state(target)
    assert err.value.where == target.uri


def test_the_cli_lands_synthetic_data_on_the_storage_root(root: Location, tmp_path: Path) -> None:
    """What the chart's data Job runs: `riskloop data generate` in a pod whose state dir is its own."""
    env = {**os.environ, "RISKLOOP_STATE_DIR": str(tmp_path / "pod"), "RISKLOOP_STORAGE__URI": root.uri}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "riskloop.cli",
            "data",
            "generate",
            "--days",
            "2",
            "--seed",
            "5",
            "--cards",
            "30",
            "--merchants",
            "10",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    spec = load_spec("synthetic-fraud")
    assert [day for day, _ in partitions(spec.source_path(root))] == [date(2026, 1, 1), date(2026, 1, 2)]
    assert not list((tmp_path / "pod").rglob("*.parquet"))  # nothing landed in the pod's own dir
