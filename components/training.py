"""Components of the training pipeline.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""


from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from riskloop.components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def ingest(spec: str, start_date: str, end_date: str, batch: Output[Dataset]) -> int:
    """Collect the landing partitions of the window into one batch."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import ingest as run

    rows = run(spec, start_date, end_date, Path(batch.path), Settings())
    batch.metadata["rows"] = rows
    return rows


@component
def validate(spec: str, batch: Input[Dataset], max_bad_fraction: float, pipeline_run_id: str,
             valid: Output[Dataset], quarantine: Output[Dataset]) -> str:
    """Apply the data contract: valid rows onward, bad rows to quarantine with reasons."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import validate as run

    summary = run(spec, Path(batch.path), Path(valid.path), Path(quarantine.path), max_bad_fraction,
                  Settings(), pipeline_run_id)
    valid.metadata.update({"rows": summary["valid"]})
    quarantine.metadata.update({"rows": summary["quarantined"]})
    return json.dumps(summary)


@component
def build_training_set(spec: str, valid: Input[Dataset], cutoff_date: str, maturity_days: float,
                       validation_days: float, test_days: float, seed: int,
                       training_set: Output[Dataset]) -> str:
    """Point-in-time features from Feast, labels as known at the cutoff, time split."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import build_training_set as run

    info = run(spec, Path(valid.path), cutoff_date, maturity_days, validation_days, test_days, seed,
               Path(training_set.path), Settings())
    training_set.metadata.update(info)
    return json.dumps(info)


@component
def train(spec: str, training_set: Input[Dataset], train_params: dict, cutoff_date: str,
          maturity_days: float, info: str, pipeline_run_id: str, model: Output[Model]) -> str:
    """Train XGBoost, write model.ubj + model.json, open the MLflow run."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import train as run

    data = json.loads(info)
    out = run(spec, Path(training_set.path), train_params, Path(model.path), Settings(),
              pipeline_run_id=pipeline_run_id, data_sha256=data["data_sha256"], data_snapshot=training_set.uri,
              cutoff_date=cutoff_date, maturity_days=maturity_days)
    model.metadata.update(out)
    return str(out["run_id"])


@component
def evaluate(spec: str, training_set: Input[Dataset], model: Input[Model], run_id: str, target_fpr: float,
             metrics: Output[Metrics], roc: Output[ClassificationMetrics], report: Output[HTML]) -> str:
    """Score candidate and champion on the same test window; metrics, ROC, confusion matrix, report."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import evaluate as run

    out = run(spec, Path(training_set.path), Path(model.path), run_id, Path(report.path).parent / "evaluation",
              Settings(), target_fpr=target_fpr)
    for k, v in out.candidate.items():
        metrics.log_metric(k, float(v))
    fpr, tpr, thr = (out.evaluation["roc_curve"][k] for k in ("fpr", "tpr", "thresholds"))
    roc.log_roc_curve(fpr, tpr, thr)
    e = out.evaluation
    roc.log_confusion_matrix(["legit", "fraud"], [[e["tn"], e["fp"]], [e["fn"], e["tp"]]])
    Path(report.path).write_text(out.html)
    return json.dumps({"candidate": out.candidate, "champion": out.champion,
                       "champion_version": out.champion_version})


@component
def gate(evaluation: str, gate_params: dict, run_id: str, pipeline_run_id: str) -> bool:
    """Champion/challenger gate: pass or fail with reasons, recorded; never raises on a fail."""
    import json

    from riskloop.settings import Settings
    from riskloop.steps import gate as run

    e = json.loads(evaluation)
    result = run(e["candidate"], e["champion"], e["champion_version"], gate_params, Settings(),
                 run_id=run_id, pipeline_run_id=pipeline_run_id)
    print("gate:", "pass" if result["passed"] else "fail", "|", "; ".join(result["reasons"]))
    return bool(result["passed"])


@component
def register(spec: str, model: Input[Model], run_id: str, evaluation: str, gate_params: dict, info: str,
             training_set: Input[Dataset], pipeline_run_id: str) -> str:
    """Register the passing candidate with its lineage tags and aliases."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import register as run
    from riskloop.training.gate import GateParams, decide_gate

    e = json.loads(evaluation)
    result = decide_gate(e["candidate"], e["champion"], GateParams.model_validate(gate_params),
                         champion_version=e["champion_version"])
    out = run(run_id, Path(model.path), result.to_dict(), spec, Settings(), pipeline_run_id=pipeline_run_id,
              data_sha256=json.loads(info)["data_sha256"], data_snapshot=training_set.uri)
    return json.dumps(out)


@component
def model_card(spec: str, training_set: Input[Dataset], model: Input[Model], run_id: str, registration: str,
               evaluation: str, gate_params: dict, card: Output[Markdown], card_html: Output[HTML]) -> str:
    """The registered version's model card (Markdown and HTML), also logged to its MLflow run."""
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import model_card as run
    from riskloop.training.gate import GateParams, decide_gate

    e = json.loads(evaluation)
    result = decide_gate(e["candidate"], e["champion"], GateParams.model_validate(gate_params),
                         champion_version=e["champion_version"])
    out = run(spec, Path(training_set.path), Path(model.path), run_id, json.loads(registration)["version"],
              result.to_dict(), Path(card.path), Path(card_html.path), Settings())
    return json.dumps(out)


@component
def record_run_outcome(pipeline_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Exit handler: the run's outcome lands in the audit log even when a step failed."""
    from riskloop.settings import Settings
    from riskloop.steps import record_run_outcome as run

    return run(pipeline_run_id, status.state, status.error_message or "", Settings())
