"""Progressive delivery: canary at a first share → analysis → second share → analysis → promote or roll back.

Each analysis step repeats its interval until a verdict other than ``continue``
(at most ``max_intervals``). A failing step rolls back at once; an inconclusive
one leaves the canary where it is (an alert on a stuck canary picks it up).
Also runs inside the training pipeline after a passing gate (``deliver=True``).
"""

from kfp import dsl

from riskloop.components.delivery import analyze_canary, deploy_canary, promote_or_rollback, set_canary_traffic
from riskloop.pipelines.cluster import on_cluster

DEFAULT_POLICY: dict[str, object] = {}


@dsl.pipeline(name="riskloop-delivery", description="Canary the challenger in steps; promote or roll back on metrics.")
def delivery_pipeline(
    spec: str = "synthetic-fraud",
    model_alias: str = "challenger",
    first_percent: int = 10,
    second_percent: int = 50,
    interval_seconds: float = 60.0,
    max_intervals: int = 10,
    policy: dict = DEFAULT_POLICY,
) -> None:
    run_id = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    tasks = []
    deploy = deploy_canary(spec=spec, model_alias=model_alias, canary_percent=first_percent,
                           pipeline_run_id=run_id)
    first = analyze_canary(spec=spec, interval_seconds=interval_seconds, max_intervals=max_intervals,
                           policy=policy).after(deploy)
    tasks += [deploy, first]
    with dsl.If(first.outputs["Output"] == "promote", name="first-step-passed"):
        step = set_canary_traffic(spec=spec, canary_percent=second_percent)
        second = analyze_canary(spec=spec, interval_seconds=interval_seconds, max_intervals=max_intervals,
                                policy=policy).after(step)
        final = promote_or_rollback(spec=spec, verdict=second.outputs["verdict"])
        tasks += [step, second, final]
    with dsl.Else(name="first-step-not-passed"):
        stop = promote_or_rollback(spec=spec, verdict=first.outputs["verdict"])
        tasks.append(stop)
    for t in tasks:
        on_cluster(t).set_caching_options(False)  # every step changes what is served
