"""Components of the training pipeline.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

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
def validate(
    spec: str,
    batch: Input[Dataset],
    max_bad_fraction: float,
    pipeline_run_id: str,
    valid: Output[Dataset],
    quarantine: Output[Dataset],
) -> str:
    """Apply the data contract: valid rows onward, bad rows to quarantine with reasons."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import validate as run

    summary = run(
        spec, Path(batch.path), Path(valid.path), Path(quarantine.path), max_bad_fraction, Settings(), pipeline_run_id
    )
    valid.metadata.update({"rows": summary.valid})
    quarantine.metadata.update({"rows": summary.quarantined})
    return summary.model_dump_json()


@component
def build_training_set(
    spec: str,
    valid: Input[Dataset],
    cutoff_date: str,
    maturity_days: float,
    validation_days: float,
    test_days: float,
    seed: int,
    training_set: Output[Dataset],
) -> str:
    """Point-in-time features from Feast, labels as known at the cutoff, time split."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import build_training_set as run

    built = run(
        spec,
        Path(valid.path),
        cutoff_date,
        maturity_days,
        validation_days,
        test_days,
        seed,
        Path(training_set.path),
        Settings(),
    )
    training_set.metadata.update(built.model_dump())
    return built.model_dump_json()


@component
def train(
    spec: str,
    training_set: Input[Dataset],
    train_params: dict,
    target_fpr: float,
    cutoff_date: str,
    maturity_days: float,
    training_set_info: str,
    pipeline_run_id: str,
    model: Output[Model],
) -> str:
    """Train XGBoost, write model.ubj + model.json, open the MLflow run; returns the MLflow run id.

    ``target_fpr`` >= 0 overrides the spec's threshold rule (a negative value: the spec's ``policy.threshold``)."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import train as run
    from riskloop.steps.training import TrainingSet

    trained = run(
        spec,
        Path(training_set.path),
        {**train_params, "target_fpr": target_fpr} if target_fpr >= 0 else train_params,
        Path(model.path),
        Settings(),
        pipeline_run_id=pipeline_run_id,
        data_sha256=TrainingSet.model_validate_json(training_set_info).data_sha256,
        data_snapshot=training_set.uri,
        cutoff_date=cutoff_date,
        maturity_days=maturity_days,
    )
    model.metadata.update(trained.model_dump())
    return trained.mlflow_run_id


@component
def evaluate(
    spec: str,
    training_set: Input[Dataset],
    model: Input[Model],
    mlflow_run_id: str,
    target_fpr: float,
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
) -> str:
    """Score candidate and champion on the same test window; metrics, ROC, confusion matrix, report.

    ``recall_at_fpr`` is read at ``target_fpr`` (negative: the spec's). Returns the comparison (candidate and
    champion metrics) the gate decides on.
    """
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import evaluate as run

    out = run(
        spec,
        Path(training_set.path),
        Path(model.path),
        mlflow_run_id,
        Path(report.path).parent / "evaluation",
        Settings(),
        target_fpr=target_fpr if target_fpr >= 0 else None,
    )
    for k, v in out.comparison.candidate.items():
        metrics.log_metric(k, float(v))
    e = out.evaluation
    roc.log_roc_curve(*(e["roc_curve"][k] for k in ("fpr", "tpr", "thresholds")))
    roc.log_confusion_matrix(["legit", "fraud"], [[e["tn"], e["fp"]], [e["fn"], e["tp"]]])
    Path(report.path).write_text(out.html)
    return out.comparison.model_dump_json()


@component
def gate(
    spec: str,
    comparison: str,
    gate_params: dict,
    mlflow_run_id: str,
    pipeline_run_id: str,
    gate_result: Output[Artifact],
) -> bool:
    """Champion/challenger gate, decided once: the gate_result artifact (verdict, reasons, metrics, policy) is what
    register and the model card read; never raises on a fail. The spec's policy.gate, gate_params laid over it."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import gate as run
    from riskloop.steps.training import Comparison

    result = run(
        Comparison.model_validate_json(comparison),
        gate_params,
        Settings(),
        spec_name=spec,
        mlflow_run_id=mlflow_run_id,
        pipeline_run_id=pipeline_run_id,
        gate_result_path=Path(gate_result.path),
    )
    gate_result.metadata.update({"passed": result.passed, "summary": result.summary()})
    print("gate:", "pass" if result.passed else "fail", "|", "; ".join(result.reasons))
    return result.passed


@component
def register(
    spec: str,
    model: Input[Model],
    mlflow_run_id: str,
    gate_result: Input[Artifact],
    training_set_info: str,
    training_set: Input[Dataset],
    pipeline_run_id: str,
) -> str:
    """Register the passing candidate with its lineage tags and aliases."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import register as run
    from riskloop.steps.training import GateResult, TrainingSet

    registration = run(
        mlflow_run_id,
        Path(model.path),
        GateResult.read(Path(gate_result.path)),
        spec,
        Settings(),
        pipeline_run_id=pipeline_run_id,
        data_sha256=TrainingSet.model_validate_json(training_set_info).data_sha256,
        data_snapshot=training_set.uri,
    )
    return registration.model_dump_json()


@component
def model_card(
    spec: str,
    training_set: Input[Dataset],
    model: Input[Model],
    mlflow_run_id: str,
    registration: str,
    gate_result: Input[Artifact],
    card: Output[Markdown],
    card_html: Output[HTML],
) -> str:
    """The registered version's model card (Markdown and HTML), also logged to its MLflow run."""
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps import model_card as run
    from riskloop.steps.training import GateResult, Registration

    summary = run(
        spec,
        Path(training_set.path),
        Path(model.path),
        mlflow_run_id,
        Registration.model_validate_json(registration).version,
        GateResult.read(Path(gate_result.path)),
        Path(card.path),
        Path(card_html.path),
        Settings(),
    )
    return summary.model_dump_json()


@component
def record_run_outcome(pipeline_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Exit handler: the run's outcome lands in the audit log even when a step failed."""
    from riskloop.settings import Settings
    from riskloop.steps import record_run_outcome as run

    return run(pipeline_run_id, status.state, status.error_message or "", Settings())
