"""A model trained on raw columns (a credit-like spec built here: text categories, missing values, no time axis),
served by the real server: V1 and V2 with the contract's columns, reasons per decision, the label refused, an
unseen category scored as missing and counted, the id logged, lineage showing the reasons, `score --set`, and the
predictor pod's entry point (`python -m riskloop.serving --model-dir`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskloop.model import load_model
from riskloop.serving.prediction_log import read_prediction_log
from riskloop.settings import Settings
from tests.integration.serving.conftest import Server, free_port, start_server

MODEL = "raw-credit-scorer"
DAY = "2026-02-01"
FEATURES = ["duration_months", "income", "purpose", "housing"]
TEXTS = {"duration_months": "Duration of the credit is too long", "income": "Income too low"}
SPEC = f"""\
name: raw-credit
model_name: {MODEL}
source: {{kind: parquet, path: data/raw-credit}}
id_column: app_id
timestamp_column: null
label: {{column: is_bad}}
features:
  source: raw
  raw_columns: [{", ".join(FEATURES)}]
  categorical: [purpose, housing]
split: {{kind: stratified, validation_fraction: 0.2, test_fraction: 0.2}}
reasons:
  duration_months: "{TEXTS["duration_months"]}"
  income: "{TEXTS["income"]}"
contract:
  max_bad_fraction: 0.0
  columns:
    app_id: {{type: string, unique: true}}
    duration_months: {{type: integer, min: 1}}
    income: {{type: float, min: 0, nullable: true}}
    purpose: {{type: category, allowed: ["car", "home", "education", "business"]}}
    housing: {{type: category, allowed: ["rent", "own", "free"], nullable: true}}
    branch: {{type: string, nullable: true}}
    is_bad: {{type: integer, min: 0, max: 1}}
"""
RISKY = {"app_id": "app-risky", "duration_months": 70, "income": 900.0, "purpose": "business", "housing": "rent"}
SAFE = {"app_id": "app-safe", "duration_months": 6, "income": 9000.0, "purpose": "home", "housing": "own"}


def applications(n: int = 600, seed: int = 7) -> pd.DataFrame:
    """Applications whose risk rises with duration, falls with income, is higher for business loans and renters."""
    rng = np.random.default_rng(seed)
    duration = rng.integers(6, 72, n)
    income = rng.lognormal(8.0, 0.5, n)
    purpose = rng.choice(["car", "home", "education", "business"], n)
    housing = rng.choice(["rent", "own", "free"], n).astype(object)
    logit = -1.0 + 0.05 * (duration - 36) - 1.5 * (np.log(income) - 8.0) + 1.2 * (purpose == "business")
    logit += 0.6 * (housing == "rent")
    frame = pd.DataFrame(
        {
            "app_id": [f"app-{i:04d}" for i in range(n)],
            "duration_months": duration.astype("int64"),
            "income": income,
            "purpose": purpose,
            "housing": housing,
            "branch": rng.choice(["Berlin Mitte", "Hamburg Nord"], n),
            "is_bad": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64"),
        }
    )
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan  # missing values in nullable columns
    frame.loc[rng.random(n) < 0.1, "housing"] = None
    return frame


@dataclass(frozen=True)
class Served:
    settings: Settings
    spec: Path
    model_dir: Path
    server: Server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from riskloop import steps

    root = tmp_path_factory.mktemp("raw-spec")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISKLOOP_STATE_DIR", str(root))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        s = Settings()
        s.ensure_dirs()
        spec = root / "raw-credit.yaml"
        spec.write_text(SPEC)
        w, name, run = root / "work", str(spec), "raw-run"
        w.mkdir()
        applications().to_parquet(w / "batch.parquet", index=False)
        steps.validate(name, w / "batch.parquet", w / "valid.parquet", w / "q.parquet", -1, s, run)
        info = steps.build_training_set(name, w / "valid.parquet", DAY, 0.0, 1.0, 1.0, 0, w / "ts.parquet", s)
        out = steps.train(
            name,
            w / "ts.parquet",
            {"n_estimators": 40, "max_depth": 3},
            w / "model",
            s,
            pipeline_run_id=run,
            data_sha256=info.data_sha256,
            data_snapshot=str(w / "ts.parquet"),
            cutoff_date=DAY,
            maturity_days=0.0,
        )
        ev = steps.evaluate(name, w / "ts.parquet", w / "model", out.mlflow_run_id, w / "report", s, target_fpr=0.2)
        gate = steps.gate(
            ev.comparison,
            {"min_roc_auc": 0.6, "min_pr_auc": 0.3},
            s,
            spec_name=name,
            mlflow_run_id=out.mlflow_run_id,
            pipeline_run_id=run,
            gate_result_path=w / "gate.json",
        )
        assert gate.passed, gate.reasons
        steps.register(
            out.mlflow_run_id,
            w / "model",
            gate,
            name,
            s,
            pipeline_run_id=run,
            data_sha256=info.data_sha256,
            data_snapshot=str(w / "ts.parquet"),
        )
        server = start_server(s, "--spec", name, model=MODEL)  # the champion, per the deployment record
        try:
            yield Served(s, spec, w / "model", server)
        finally:
            server.stop()


def v1(srv: Server, instances: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return srv.client.post(f"{srv.url}/v1/models/{MODEL}:predict", json={"instances": instances, **extra})


def expected_scores(model_dir: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    """The training encoding's scores for the same rows (an unknown category or None is missing there too)."""
    frame = pd.DataFrame([{f: r.get(f) for f in FEATURES} for r in rows])
    return load_model(model_dir).predict_frame(frame)


def test_v1_with_raw_columns_answers_scores_and_reasons(served: Served) -> None:
    missing = {"duration_months": 30, "purpose": "car", "branch": "Berlin Mitte"}  # nullable income, housing left out
    rows = [RISKY, SAFE, missing]
    r = v1(served.server, rows, reasons=2)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["app_id"] for p in preds] == ["app-risky", "app-safe", None]
    np.testing.assert_allclose([p["score"] for p in preds], expected_scores(served.model_dir, rows), rtol=1e-6)
    assert preds[0]["score"] > preds[1]["score"] and preds[0]["flagged"] is True
    assert "fraud" not in preds[0] and "unknown_card" not in preds[0]
    risky = preds[0]["reasons"]
    assert 1 <= len(risky) <= 2 and all(p.get("reasons") is not None and len(p["reasons"]) <= 2 for p in preds)
    contributions = [x["contribution"] for x in risky]
    assert all(c > 0 for c in contributions) and contributions == sorted(contributions, reverse=True)
    for reason in risky:
        assert reason["feature"] in FEATURES
        assert reason["text"] == TEXTS.get(reason["feature"], reason["feature"])
        assert reason["value"] == RISKY[reason["feature"]]
    assert {x["feature"] for x in risky} & {"duration_months", "income"}, risky

    plain = v1(served.server, [RISKY])  # a client that does not ask gets the response without reasons
    assert plain.status_code == 200 and "reasons" not in plain.json()["predictions"][0]


def test_v2_with_raw_columns_and_reasons(served: Served) -> None:
    rows = [RISKY, SAFE]
    types = {"app_id": "BYTES", "duration_months": "INT64", "income": "FP64", "purpose": "BYTES", "housing": "BYTES"}
    inputs = [{"name": k, "shape": [2], "datatype": t, "data": [r[k] for r in rows]} for k, t in types.items()]
    body = {"inputs": inputs, "parameters": {"reasons": 1}}
    r = served.server.client.post(f"{served.server.url}/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert set(out) == {"score", "flagged", "app_id", "reasons"}
    np.testing.assert_allclose(out["score"], expected_scores(served.model_dir, rows), rtol=1e-6)
    assert out["app_id"] == ["app-risky", "app-safe"] and out["flagged"][0] is True
    assert len(json.loads(out["reasons"][0])) == 1
    body["parameters"] = {"reasons": "3"}
    bad = served.server.client.post(f"{served.server.url}/v2/models/{MODEL}/infer", json=body)
    assert bad.status_code == 400 and "parameters.reasons" in bad.text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"is_bad": 1}, "instances[0].is_bad: is the label"),
        ({"duration_months": None}, "instances[0].duration_months"),  # not nullable
        ({"duration_months": "24"}, "instances[0].duration_months"),  # text is not an integer
        ({"income": -5.0}, "instances[0].income"),  # below the contract's min
        ({"purpose": 3}, "instances[0].purpose"),
        ({"incomee": 100.0}, "instances[0].incomee"),  # misspelt: never a silent default
    ],
)
def test_bad_instances_are_a_400_naming_the_field(served: Served, change: dict[str, Any], named: str) -> None:
    r = v1(served.server, [RISKY | change])
    assert r.status_code == 400, r.text
    assert named in r.text


def _unseen(metrics_text: str) -> float:
    found = re.search(r'^riskloop_unseen_category_total\{[^}]*feature="purpose"[^}]*\} (\S+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def test_an_unseen_category_is_scored_as_missing_and_counted(served: Served) -> None:
    metrics = f"{served.server.url}/metrics"
    before = _unseen(served.server.client.get(metrics).text)
    row = RISKY | {"purpose": "yacht"}
    r = v1(served.server, [row, row])
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        [p["score"] for p in r.json()["predictions"]], expected_scores(served.model_dir, [row, row]), rtol=1e-6
    )
    assert _unseen(served.server.client.get(metrics).text) == before + 2


def _logged(s: Settings, request_id: str) -> pd.DataFrame:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # written off the request path, about a second later
        log = read_prediction_log(s.predictions)
        rows = log[log["request_id"] == request_id]
        if not rows.empty:
            return rows
        time.sleep(0.3)
    pytest.fail(f"request {request_id} never reached the prediction log")


def test_the_id_and_the_reasons_are_logged_and_lineage_shows_them(served: Served) -> None:
    from riskloop.cli import app

    request_id = f"raw-{uuid.uuid4().hex[:12]}"
    row = RISKY | {"app_id": "app-logged-1", "branch": "Hamburg Nord"}
    r = served.server.client.post(
        f"{served.server.url}/v1/models/{MODEL}:predict",
        json={"instances": [row]},
        headers={"x-request-id": request_id},
    )
    assert r.status_code == 200, r.text
    logged = _logged(served.settings, request_id).iloc[0]
    assert logged["transaction_id"] == "app-logged-1" and logged["input_app_id"] == "app-logged-1"
    assert logged["input_branch"] == "Hamburg Nord"
    assert "feature_app_id" not in logged.index and "feature_branch" not in logged.index  # logged, not features
    reasons = json.loads(logged["reasons"])  # every decision of a raw-column model keeps its reasons, asked or not
    assert 1 <= len(reasons) <= 3 and reasons[0]["feature"] in FEATURES

    env = {"RISKLOOP_STATE_DIR": str(served.settings.root), "COLUMNS": "200"}
    doc = CliRunner().invoke(app, ["lineage", request_id, "--json"], env=env).output
    rows = json.loads(doc[doc.index("{") :])["models"][0]["hops"][0]["facts"]["rows"]
    assert rows[0]["reasons"] == reasons
    tree = CliRunner().invoke(app, ["lineage", request_id], env=env).output
    assert f"{reasons[0]['text']} ({reasons[0]['feature']} =" in tree


def test_score_sets_the_columns_of_any_spec(served: Served) -> None:
    from riskloop.cli import app

    env = {"RISKLOOP_STATE_DIR": str(served.settings.root), "COLUMNS": "200"}
    base = ["score", "--spec", str(served.spec), "--url", served.server.url]
    sets = ["--set", "duration_months=70", "--set", "income=", "--set", "purpose=business", "--set", "housing=rent"]
    r = CliRunner().invoke(app, [*base, *sets, "--reasons", "2"], env=env)
    assert r.exit_code == 0, r.output
    answer = json.loads(r.output[r.output.index("{") :])
    assert answer["app_id"].startswith("cli-") and 0 <= answer["score"] <= 1 and len(answer["reasons"]) <= 2
    expected = expected_scores(served.model_dir, [{**RISKY, "income": None}])[0]
    assert answer["score"] == pytest.approx(expected, rel=1e-6)
    for bad, says in (
        (["--set", "duration_months=long"], "duration_months takes an integer"),
        (["--set", "is_bad=1"], "is_bad is the label"),
        (["--set", "colour=red"], "has no column 'colour'"),
        (["--card-id", "C1"], "--set"),
    ):
        r = CliRunner().invoke(app, [*base, *bad], env=env)
        assert r.exit_code == 2 and says in r.output, (bad, r.output)


def test_the_predictor_pod_entry_point_serves_a_raw_model_dir(served: Served) -> None:
    sha = json.loads((served.model_dir / "model.json").read_text())["model_sha256"]
    port = free_port()
    env = {
        **os.environ,
        "RISKLOOP_STATE_DIR": str(served.settings.root),
        "RISKLOOP_EXPECTED_MODEL_SHA256": sha,
        "RISKLOOP_MODEL_VERSION": "1",
    }
    log = served.settings.root / "pod.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "riskloop.serving", "--model-dir", str(served.model_dir), "--port", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{srv.url}/v1/models/{MODEL}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        r = v1(srv, [SAFE], reasons=1)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["model_version"] == "1"
    finally:
        srv.stop()
