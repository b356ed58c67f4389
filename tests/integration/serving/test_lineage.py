"""Lineage of a real prediction: score through a running server, then walk every hop and resolve its ids."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskloop.audit.lineage import SERVING_EVENTS, trace_version
from riskloop.audit.log import open_audit_log
from riskloop.hashing import frame_sha256
from riskloop.registry.mlflow_registry import run_info
from riskloop.serving.prediction_log import read_prediction_log
from tests.integration.serving.conftest import MODEL, Server, Trained, instance, start_server

HOPS = [
    "prediction",
    "model_version",
    "dataset_spec",
    "mlflow_run",
    "pipeline_run",
    "training_data",
    "features",
    "code",
    "image",
    "decisions",
]


@pytest.fixture(scope="module")
def record_server(trained: Trained) -> Iterator[Server]:
    srv = start_server(trained.settings)  # follows the deployment record: its creation is an audit event
    yield srv
    srv.stop()


def cli(trained: Trained, *args: str) -> tuple[int, str]:
    from riskloop.cli import app

    r = CliRunner().invoke(app, list(args), env={"RISKLOOP_STATE_DIR": str(trained.settings.root), "COLUMNS": "200"})
    return r.exit_code, r.output


def scored(trained: Trained, server: Server) -> str:
    request_id = f"lineage-{uuid.uuid4().hex[:12]}"
    r = httpx.post(
        f"{server.url}/v1/models/{MODEL}:predict",
        json={"instances": [instance(trained.held_out.iloc[0])]},
        headers={"x-request-id": request_id},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["request_id"] == request_id
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the log is written off the request path, about a second later
        log = read_prediction_log(trained.settings.predictions)
        if (log["request_id"] == request_id).any():
            return request_id
        time.sleep(0.3)
    pytest.fail(f"request {request_id} never reached the prediction log")


def test_lineage_of_a_served_prediction_resolves_every_hop(trained: Trained, record_server: Server) -> None:
    s = trained.settings
    request_id = scored(trained, record_server)
    code, output = cli(trained, "lineage", request_id, "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert doc["complete"] is True and len(doc["models"]) == 1
    lineage = doc["models"][0]
    hops = {h["hop"]: h for h in lineage["hops"]}
    assert list(hops) == HOPS
    assert {name: h["status"] for name, h in hops.items()} == dict.fromkeys(HOPS, "ok"), {
        n: (h["status"], h["note"]) for n, h in hops.items()
    }

    row = hops["prediction"]["facts"]["rows"][0]
    assert row["request_id"] == request_id and row["role"] == "champion"
    version = hops["model_version"]["facts"]
    assert version["version"] == row["model_version"] and version["run_id"] == hops["mlflow_run"]["facts"]["run_id"]
    # the ids resolve, independently of the lineage code
    assert run_info(s.tracking_uri, version["run_id"])["status"] == "FINISHED"
    data = hops["training_data"]["facts"]
    snapshot = Path(data["path"])
    assert frame_sha256(pd.read_parquet(snapshot)) == data["data_sha256"]
    assert hashlib.sha256(snapshot.read_bytes()).hexdigest() == data["file_sha256"]
    commit = hops["code"]["facts"]["git_commit"]
    assert subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True).returncode == 0
    assert hops["image"]["facts"]["image"].endswith(commit[:7])
    features = hops["features"]["facts"]
    assert features["feature_service"] == "fraud_detector_v1"
    assert set(features["recorded_at_training"]["views"]) >= {"card_daily", "merchant_daily", "transaction_context"}
    assert hops["pipeline_run"]["facts"]["pipeline_run_id"] == "test-run"
    assert {"validated", "trained", "gated", "registered"} <= {
        e["event"] for e in hops["pipeline_run"]["facts"]["audit_events"]
    }
    decisions = hops["decisions"]["facts"]["events"]
    seqs = {ev.seq: ev for ev in open_audit_log("file", path=s.audit_path).events()}
    for e in decisions:  # each decision is a real line of the verified log
        assert seqs[e["seq"]].hash == e["hash"]
    kinds = [e["event"] for e in decisions]
    assert kinds.index("gated") < kinds.index("registered") < kinds.index("deployed")

    # the readable tree names every hop
    code, tree = cli(trained, "lineage", request_id)
    assert code == 0 and all(f"{hop}:" in tree for hop in HOPS), tree


def test_lineage_reports_missing_and_contradicted_hops(trained: Trained) -> None:
    s = trained.settings
    code, output = cli(trained, "lineage", "no-such-request")
    assert code == 2 and "no prediction with request id 'no-such-request'" in output, output
    events = open_audit_log("file", path=s.audit_path).events()
    row = {"request_id": "r", "model": MODEL, "model_version": "999", "role": "champion", "time": "2026-01-14"}
    gone = trace_version(s, "r", [row], events, True, None)
    assert not gone.complete and gone.hop("model_version").status == "missing"
    assert "999" in gone.hop("model_version").note
    # a server pinned to alias champion: the registration that set the alias is the serving decision
    v1 = {**row, "model_version": "1"}
    unpinned = [e for e in events if e.event not in SERVING_EVENTS]
    assert trace_version(s, "r", [v1], unpinned, True, None).hop("decisions").status == "ok"
    no_registration = [e for e in unpinned if e.event != "registered"]
    decisions = trace_version(s, "r", [v1], no_registration, True, None).hop("decisions")
    assert decisions.status == "missing" and "registered" in decisions.note and "serving decision" in decisions.note
    # a tampered snapshot: a copy of it with one label flipped, in a registry version's place
    from riskloop.audit import lineage

    tags = {"data_snapshot": str(trained.training_set), "data_sha256": "0" * 64}
    hop = lineage._data_hop(tags)
    assert hop.status == "mismatch" and not hop.checks[0].ok
