"""The monitoring loop on a real server: shifted traffic is served, the monitoring pipeline (kfp.local) finds the
drift and takes its retrain branch, which runs the training pipeline on a window ending on the monitored day."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date

import pandas as pd

from riskloop.orchestration.local import run_monitoring
from riskloop.registry.mlflow_registry import list_versions
from riskloop.serving.replay import Replay, instances
from tests.integration.serving.conftest import HELD_OUT, MODEL, Trained, start_server


def shifted(day: pd.DataFrame) -> pd.DataFrame:
    """The held-out day as if spending moved: larger amounts, online from abroad, far from home."""
    out = day.copy()
    out["amount"] = (out["amount"] * 3).round(2)
    out["channel"] = "online"
    out["device_type"] = "desktop"
    out["country"] = "BR"
    out["distance_from_home_km"] = (out["distance_from_home_km"] * 10 + 500).clip(upper=20_000)
    return out


def test_drift_takes_the_retrain_branch_of_the_monitoring_pipeline(trained: Trained) -> None:
    from riskloop import steps

    s = trained.settings
    # earlier tests of the session served the same day unshifted: the monitor must see only this test's traffic
    logged = s.predictions.local_path
    assert logged is not None  # these tests run on the local state dir
    if logged.exists():
        shutil.move(logged, s.root / "predictions-before-the-monitoring-test")
    steps.materialize(HELD_OUT, 30, s)
    srv = start_server(s, "--model-alias", "champion")
    try:
        rows = instances(shifted(trained.held_out))
        replay = Replay(srv.url, MODEL, rows, connections=2, batch_size=16, once=True).start()
        replay.wait()
        assert {a.status for a in replay.answers()} == {200}, [a for a in replay.answers() if a.status != 200][:3]
    finally:
        srv.stop()  # flushes the prediction log
    versions_before = len(list_versions(s.tracking_uri, MODEL))
    # one served day: drift on one day is enough here (the default wants it on two)
    r = run_monitoring(
        s,
        date.fromisoformat(HELD_OUT),
        policy={"min_current_rows": 500, "min_reference_rows": 500, "min_drift_days": 1},
        training_days=14,
        maturity_days=2.0,
        validation_days=2.0,
        test_days=3.0,
        deliver=False,
    )
    assert r.succeeded, r.error
    summary = json.loads((s.reports_dir / "monitoring" / HELD_OUT / "summary.json").read_text())
    assert summary["action"] == "retrain", summary["reasons"]
    assert summary["rows"] == len(rows)
    assert {"amount", "channel"} <= set(summary["drifted_features"])
    # the outcome (what the CLI prints), drift.json and drift.html tell the same story, the action first
    day_dir = s.reports_dir / "monitoring" / HELD_OUT
    drift = json.loads((day_dir / "drift.json").read_text())
    assert next(iter(drift)) == "assessment"
    story = ("action", "drifted_features", "drift_share", "reasons")
    assert {k: drift["assessment"][k] for k in story} == {k: summary[k] for k in story}
    assert "on at least 1 day(s) of the window" in drift["assessment"]["rule"]
    html = (day_dir / "drift.html").read_text()
    assert len(html) > 10_000  # Evidently's detail follows
    opening = re.search(r"<body[^>]*>(<section id=\"riskloop-assessment\".*?</section>)", html, re.S)
    assert opening is not None, "drift.html must open with riskloop's action"
    assert "action: retrain" in opening.group(1) and "on at least 1 day(s)" in opening.group(1)
    assert all(f in opening.group(1) for f in summary["drifted_features"])
    # the retrain branch ran the training pipeline: a new run was trained and gated (registered if it passed)
    events = [json.loads(line)["event"] for line in s.audit_path.read_text().splitlines()]
    assert events.count("retrain_triggered") == 1
    assert "gated" in events[events.index("retrain_triggered") :]
    assert len(list_versions(s.tracking_uri, MODEL)) >= versions_before
