"""Monitoring: drift + decay of the served champion → report → on ``retrain``, the training pipeline as a
sub-pipeline on a window that includes the new data (labels as known at the new cutoff), and on a passing
gate the delivery steps (canary, analysis, promote or roll back).

On the cluster this runs as a recurring run (cron from the chart's values) with ``day`` empty: its first step
resolves the day before the scheduled time (riskloop.schedule). ``riskloop monitor`` runs the same library call
locally.
"""

from kfp import dsl

from riskloop.components.monitoring import monitor
from riskloop.components.schedule import run_day
from riskloop.pipelines.cluster import on_cluster
from riskloop.pipelines.delivery import DEFAULT_POLICY
from riskloop.pipelines.retrain import retrain_pipeline
from riskloop.training.gate import RETRAIN_GATE_PARAMS

DEFAULT_MONITOR_POLICY: dict[str, object] = {}


@dsl.pipeline(
    name="riskloop-monitoring",
    description="Detect drift and decay of the champion; retrain, gate and canary when they call for it.",
)
def monitoring_pipeline(
    spec: str = "synthetic-fraud",
    day: str = "",
    policy: dict = DEFAULT_MONITOR_POLICY,
    pushgateway_url: str = "",
    training_days: int = 30,
    maturity_days: float = 7.0,
    validation_days: float = 3.0,
    test_days: float = 4.0,
    deliver: bool = True,
    canary_interval_seconds: float = 60.0,
    canary_policy: dict = DEFAULT_POLICY,
    gate_params: dict = RETRAIN_GATE_PARAMS,
) -> None:
    monitored = on_cluster(run_day(day=day, scheduled_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER))
    monitored.set_caching_options(False)
    checked = on_cluster(monitor(spec=spec, day=monitored.output, policy=policy, pushgateway_url=pushgateway_url))
    checked.set_caching_options(False)  # today's action depends on the state it carries
    with dsl.If(checked.outputs["Output"] == "retrain", name="retrain"):
        # the scheduled-retrain pipeline on the monitored day: its window, then the training pipeline
        retrain_pipeline(
            spec=spec,
            day=monitored.output,
            training_days=training_days,
            maturity_days=maturity_days,
            validation_days=validation_days,
            test_days=test_days,
            deliver=deliver,
            canary_interval_seconds=canary_interval_seconds,
            canary_policy=canary_policy,
            gate_params=gate_params,
        )
