"""A plain scheduled retrain, for teams that want one beside (or instead of) the drift-triggered retrain.

The training pipeline on the ``training_days`` days up to ``day`` (empty: the day before the scheduled time),
labels as known at the next midnight; with ``deliver`` a passing model goes through the canary. The gate allows
no PR-AUC drop against the champion by default (``RETRAIN_GATE_PARAMS``): a retrain replaces a working model.
"""

from kfp import dsl

from riskloop.components.monitoring import retrain_window
from riskloop.components.schedule import run_day
from riskloop.pipelines.cluster import on_cluster
from riskloop.pipelines.delivery import DEFAULT_POLICY
from riskloop.pipelines.training import training_pipeline
from riskloop.training.gate import RETRAIN_GATE_PARAMS


@dsl.pipeline(name="riskloop-retrain", description="Retrain on the latest window on a schedule; gate; canary.")
def retrain_pipeline(
    spec: str = "synthetic-fraud",
    day: str = "",
    training_days: int = 30,
    maturity_days: float = 7.0,
    validation_days: float = 3.0,
    test_days: float = 4.0,
    deliver: bool = True,
    canary_interval_seconds: float = 60.0,
    canary_policy: dict = DEFAULT_POLICY,
    gate_params: dict = RETRAIN_GATE_PARAMS,
) -> None:
    resolved = on_cluster(run_day(day=day, scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER))
    window = on_cluster(retrain_window(day=resolved.output, days=training_days))
    for t in (resolved, window):
        t.set_caching_options(False)
    training_pipeline(
        spec=spec,
        start_date=window.outputs["start_date"],
        end_date=window.outputs["end_date"],
        cutoff_date=window.outputs["cutoff_date"],
        maturity_days=maturity_days,
        validation_days=validation_days,
        test_days=test_days,
        deliver=deliver,
        canary_interval_seconds=canary_interval_seconds,
        canary_policy=canary_policy,
        gate_params=gate_params,
    )
