"""Progressive delivery: the challenger at a first canary percent → analysis → second canary percent →
analysis → promote or roll back, as one step (``riskloop.steps.delivery.deliver``, the rollout ``make run`` runs too).

Each analysis repeats its interval until a verdict other than ``continue`` (at most ``max_intervals``). A
failing analysis rolls back at once; an inconclusive one leaves the canary where it is (an alert on a stuck
canary picks it up). An unapproved challenger is refused before any traffic moves. Also runs inside the
training pipeline after a passing gate (``deliver=True``).
"""

from kfp import dsl

from riskloop.components.delivery import deliver
from riskloop.pipelines.cluster import on_cluster

DEFAULT_POLICY: dict[str, object] = {}


@dsl.pipeline(name="riskloop-delivery", description="Canary the challenger in steps; promote or roll back on metrics.")
def delivery_pipeline(
    spec: str = "synthetic-fraud",
    challenger_alias: str = "challenger",
    first_percent: int = 10,
    second_percent: int = 50,
    interval_seconds: float = 60.0,
    max_intervals: int = 10,
    policy: dict = DEFAULT_POLICY,
) -> str:
    task = deliver(
        spec=spec,
        challenger_alias=challenger_alias,
        first_percent=first_percent,
        second_percent=second_percent,
        interval_seconds=interval_seconds,
        max_intervals=max_intervals,
        policy=policy,
        pipeline_run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    on_cluster(task).set_caching_options(False)  # it changes what is served
    # the outcome (the artifact rides along); `-> str` declares the pipeline's output type to KFP, the value is
    # the task's output channel, which the untyped kfp API gives as Any
    outcome: str = task.outputs["Output"]
    return outcome
