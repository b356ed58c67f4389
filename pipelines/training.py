"""The training pipeline: ingest → validate → features → train → evaluate → gate → register → model card."""

from kfp import dsl

from riskloop.components.training import (
    build_training_set,
    evaluate,
    gate,
    ingest,
    model_card,
    record_run_outcome,
    register,
    train,
    validate,
)
from riskloop.pipelines.cluster import on_cluster
from riskloop.pipelines.delivery import DEFAULT_POLICY, delivery_pipeline

DEFAULT_TRAIN_PARAMS: dict[str, object] = {}
DEFAULT_GATE_PARAMS: dict[str, object] = {}


@dsl.pipeline(name="riskloop-training", description="Train, evaluate and gate a fraud model; register it with lineage.")
def training_pipeline(
    spec: str = "synthetic-fraud",
    start_date: str = "2026-01-01",
    end_date: str = "2026-01-30",
    cutoff_date: str = "2026-01-31",
    maturity_days: float = 7.0,
    validation_days: float = 3.0,
    test_days: float = 4.0,
    max_bad_fraction: float = -1.0,
    target_fpr: float = -1.0,  # >= 0: choose the threshold for this FPR, overriding the spec's policy.threshold
    seed: int = 0,
    train_params: dict = DEFAULT_TRAIN_PARAMS,
    gate_params: dict = DEFAULT_GATE_PARAMS,  # laid over the spec's policy.gate (its floors, defaults by use)
    deliver: bool = False,
    canary_interval_seconds: float = 60.0,
    canary_policy: dict = DEFAULT_POLICY,
) -> None:
    pipeline_run_id = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    outcome = record_run_outcome(pipeline_run_id=pipeline_run_id)
    on_cluster(outcome).set_caching_options(False)
    # Caching is off for every step on purpose: each one has an effect outside its artifacts
    # (audit log, MLflow run, Feast tables), and KFP's cache key ignores the code inside the image.
    with dsl.ExitHandler(outcome, name="training"):
        batch = ingest(spec=spec, start_date=start_date, end_date=end_date).set_caching_options(False)
        checked = validate(
            spec=spec, batch=batch.outputs["batch"], max_bad_fraction=max_bad_fraction, pipeline_run_id=pipeline_run_id
        ).set_caching_options(False)
        ts = build_training_set(
            spec=spec,
            valid=checked.outputs["valid"],
            cutoff_date=cutoff_date,
            maturity_days=maturity_days,
            validation_days=validation_days,
            test_days=test_days,
            seed=seed,
        )
        ts.set_caching_options(False)  # writes the Feast tables the serving side reads
        training_set, training_set_info = ts.outputs["training_set"], ts.outputs["Output"]
        model = train(
            spec=spec,
            training_set=training_set,
            train_params=train_params,
            target_fpr=target_fpr,
            cutoff_date=cutoff_date,
            maturity_days=maturity_days,
            training_set_info=training_set_info,
            pipeline_run_id=pipeline_run_id,
        ).set_caching_options(False)
        model.set_retry(num_retries=2)  # talks to the tracking server
        mlflow_run_id = model.outputs["Output"]
        ev = evaluate(
            spec=spec,
            training_set=training_set,
            model=model.outputs["model"],
            mlflow_run_id=mlflow_run_id,
            target_fpr=target_fpr,
        ).set_caching_options(False)
        ev.set_retry(num_retries=2)
        verdict = gate(
            spec=spec,
            comparison=ev.outputs["Output"],
            gate_params=gate_params,
            mlflow_run_id=mlflow_run_id,
            pipeline_run_id=pipeline_run_id,
        ).set_caching_options(False)
        gate_result = verdict.outputs["gate_result"]  # decided once: register and the card read this artifact
        with dsl.If(verdict.outputs["Output"] == True, name="gate-passed"):  # noqa: E712  (a KFP condition)
            reg = register(
                spec=spec,
                model=model.outputs["model"],
                mlflow_run_id=mlflow_run_id,
                gate_result=gate_result,
                training_set_info=training_set_info,
                training_set=training_set,
                pipeline_run_id=pipeline_run_id,
            )
            reg.set_caching_options(False).set_retry(num_retries=2)
            on_cluster(reg)
            card = model_card(
                spec=spec,
                training_set=training_set,
                model=model.outputs["model"],
                mlflow_run_id=mlflow_run_id,
                registration=reg.output,
                gate_result=gate_result,
            )
            on_cluster(card.set_caching_options(False))  # reads the audit log and writes to MLflow
            with dsl.If(deliver == True, name="deliver"):  # noqa: E712
                # the registered version is alias challenger: the delivery pipeline canaries it
                delivery_pipeline(
                    spec=spec,
                    challenger_alias="challenger",
                    interval_seconds=canary_interval_seconds,
                    policy=canary_policy,
                ).after(reg)
        for task in (batch, checked, model, ev, verdict):
            on_cluster(task)
        on_cluster(ts, memory="4G")
