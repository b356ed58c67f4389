"""The whole training pipeline under kfp.local on small data, and its compiled IR."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import yaml

from riskloop.audit.log import FileAuditLog
from riskloop.orchestration.local import LocalRun, run_training
from riskloop.registry.mlflow_registry import CHALLENGER, CHAMPION, LINEAGE_TAGS, list_versions, version_by_alias
from riskloop.settings import Settings
from tests.local.conftest import audit_events, params


def test_first_run_registers_a_champion_with_full_lineage(first_run: LocalRun, local_state: Settings) -> None:
    assert first_run.succeeded, first_run.error
    versions = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)
    assert len(versions) == 1
    v = versions[0]
    assert set(v.aliases) == {CHAMPION, CHALLENGER}
    for tag in LINEAGE_TAGS:
        assert v.tags.get(tag), f"lineage tag {tag} missing"
    assert v.tags["gate_result"] == "pass"
    events = audit_events(local_state)
    for e in ("validated", "trained", "gated", "registered", "run_succeeded"):
        assert e in events
    assert FileAuditLog(local_state.audit_path).verify().ok


def test_worse_candidate_is_gated_out_and_gets_no_alias(first_run: LocalRun, local_state: Settings) -> None:
    assert first_run.succeeded
    before = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)
    # shuffled-label-like candidate: a model that barely trains (one shallow tree) fails the tolerance
    weak = params(
        16,
        16,
        train_params={"n_estimators": 1, "max_depth": 1, "early_stopping_rounds": 1},
        gate_params={"max_pr_auc_drop": 0.0, "min_pr_auc": 0.0, "min_roc_auc": 0.0},
    )
    r = run_training(local_state, weak)
    assert r.succeeded, r.error  # a failed gate is an outcome, not a pipeline failure
    from riskloop.cli.pipelines import training_summary  # what `riskloop run training` shows for it

    shown = training_summary(r, local_state, weak)
    assert shown["gate"].startswith("FAIL: ") and shown["registered"].startswith("nothing"), shown
    assert {st.name: st.state for st in r.steps}.get("register") in (None, "skipped")
    after = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)
    assert len(after) == len(before)
    champ = version_by_alias(local_state.tracking_uri, local_state.mlflow.model_name, CHAMPION)
    assert champ is not None and champ.version == before[0].version
    gated = [json.loads(line) for line in local_state.audit_path.read_text().splitlines() if '"event":"gated"' in line]
    assert gated[-1]["details"]["passed"] is False
    assert any(reason.startswith("fail:") for reason in gated[-1]["details"]["reasons"])


def test_bad_batch_stops_before_training_with_quarantine_and_run_failed(
    first_run: LocalRun, local_state: Settings
) -> None:
    assert first_run.succeeded
    landing = local_state.data_dir / "synthetic-fraud/transactions/date=2026-01-16/part-0.parquet"
    original = pd.read_parquet(landing)
    bad = original.copy()
    bad["amount"] = -1.0  # every row breaks the contract
    bad.to_parquet(landing, index=False)
    try:
        n_trained = audit_events(local_state).count("trained")
        r = run_training(local_state, params(16, 3))
        assert not r.succeeded
        events = audit_events(local_state)
        assert events[-1] == "run_failed"
        assert "quarantined" in events
        assert events.count("trained") == n_trained  # never reached training
        quarantines = list(Path(local_state.pipeline_root).rglob("quarantine"))
        assert any(
            pd.read_parquet(q)["_quarantine_reason"].str.contains("amount:below_min").any()
            for q in quarantines
            if q.is_file()
        )
    finally:
        original.to_parquet(landing, index=False)


def test_compiled_ir_round_trips(compiled: dict[str, Path]) -> None:
    from kfp import components

    from riskloop.version import runtime_image

    written = compiled
    assert set(written) == {"training", "features", "batch_scoring", "delivery", "monitoring", "retrain"}
    path = written["training"]
    ir, platform = yaml.safe_load_all(path.read_text())  # the pipeline spec, then the kubernetes platform spec
    tasks = ir["root"]["dag"]["tasks"]
    assert "exit-handler-1" in tasks and "record-run-outcome" in tasks
    inner = ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    for step in ("ingest", "validate", "build-training-set", "train", "evaluate", "gate"):
        assert step in inner, step
    (cond,) = [t for t in inner if t.startswith("condition-")]  # the gate's dsl.If
    assert inner[cond]["triggerPolicy"]["condition"].endswith("== true")
    assert "register" in ir["components"][f"comp-{cond}"]["dag"]["tasks"]
    # the gate is decided once: register and the model card read the gate's gate_result artifact
    gated = ir["components"][f"comp-{cond}"]["dag"]["tasks"]
    for consumer in ("register", "model-card"):
        gate_result = gated[consumer]["inputs"]["artifacts"]["gate_result"]["componentInputArtifact"]
        assert ir["components"][f"comp-{cond}"]["inputDefinitions"]["artifacts"][gate_result]
        assert gate_result.startswith("pipelinechannel--gate-gate_result"), gate_result
    assert inner["train"]["dependentTasks"] == ["build-training-set"]
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert images == {runtime_image()}
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "riskloop-training"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {s["secretName"] for e in k8s.values() for s in e.get("secretAsEnv", [])} == {"riskloop-s3", "riskloop-db"}
    # the delivery pipeline runs inside the gate-passed branch when deliver=True
    nested = ir["components"][f"comp-{cond}"]["dag"]["tasks"]
    (deliver,) = [t for t in nested if t.startswith("condition-")]
    assert "riskloop-delivery" in ir["components"][f"comp-{deliver}"]["dag"]["tasks"]
    delivery, _ = yaml.safe_load_all(written["delivery"].read_text())
    top = delivery["root"]["dag"]["tasks"]
    assert set(top) == {"deliver"}  # one step: refuse unapproved, deploy, wait for it, analyse, step, act
    assert delivery["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"
    # its inputs are what recurring runs and the training pipeline set: the alias names the challenger
    assert set(delivery["root"]["inputDefinitions"]["parameters"]) == {
        "spec",
        "challenger_alias",
        "first_percent",
        "second_percent",
        "interval_seconds",
        "max_intervals",
        "policy",
    }
    # monitoring: the action gates the training pipeline, nested as a sub-pipeline
    monitoring, _ = yaml.safe_load_all(written["monitoring"].read_text())
    mtop = monitoring["root"]["dag"]["tasks"]
    (retrain,) = [t for t in mtop if t.startswith("condition-")]
    assert "monitor" in mtop and mtop[retrain]["triggerPolicy"]["condition"].endswith("== 'retrain'")
    assert "riskloop-retrain" in monitoring["components"][f"comp-{retrain}"]["dag"]["tasks"]
    assert "riskloop-training" in monitoring["components"]["comp-riskloop-retrain"]["dag"]["tasks"]
    assert components.load_component_from_file(str(written["monitoring"])).name == "riskloop-monitoring"
    features, _ = yaml.safe_load_all(written["features"].read_text())
    assert {"ingest", "validate", "build-features", "materialize"} <= set(features["root"]["dag"]["tasks"])
    # on a cluster each step is a pod: the offline tables travel to materialize as an artifact
    tables = features["root"]["dag"]["tasks"]["materialize"]["inputs"]["artifacts"]["tables"]["taskOutputArtifact"]
    assert tables == {"outputArtifactKey": "tables", "producerTask": "build-features"}
    # recurring runs: each scheduled pipeline resolves its day once, from KFP's schedule time, in its first step
    retrain, _ = yaml.safe_load_all(written["retrain"].read_text())
    assert {"run-day", "retrain-window", "riskloop-training"} <= set(retrain["root"]["dag"]["tasks"])
    for ir in (monitoring, features, retrain):
        run_day = ir["root"]["dag"]["tasks"]["run-day"]
        scheduled = run_day["inputs"]["parameters"]["scheduled_time"]["runtimeValue"]["constant"]
        assert scheduled == "{{$.pipeline_job_schedule_time_utc}}"
        assert ir["root"]["inputDefinitions"]["parameters"]["day"]["defaultValue"] == ""
    assert mtop["monitor"]["inputs"]["parameters"]["day"]["taskOutputParameter"]["producerTask"] == "run-day"


def test_batch_scoring_scores_a_day_with_the_champion(first_run: LocalRun, local_state: Settings) -> None:

    from riskloop.orchestration.local import run_batch_scoring

    assert first_run.succeeded
    r = run_batch_scoring(local_state, date(2026, 1, 16))
    assert r.succeeded, r.error
    scores = pd.read_parquet(r.outputs["scores"])
    day = pd.read_parquet(local_state.data_dir / "synthetic-fraud/transactions/date=2026-01-16/part-0.parquet")
    assert len(scores) == len(day) and set(scores["transaction_id"]) == set(day["transaction_id"])
    assert scores["score"].between(0, 1).all()
    champ = version_by_alias(local_state.tracking_uri, local_state.mlflow.model_name, CHAMPION)
    assert champ is not None and (scores["model_version"] == champ.version).all()
