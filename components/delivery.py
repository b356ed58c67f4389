"""Components of the delivery pipeline: deploy a canary, analyse it, promote or roll back.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
Where they act comes from Settings (``RISKLOOP_DELIVERY__TARGET``: the local
deployment record, or the InferenceService on the cluster).
"""

from typing import NamedTuple

from kfp import dsl

from components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def deploy_canary(spec: str, model_alias: str, canary_percent: int, pipeline_run_id: str) -> str:
    """Resolve the alias to its version and deploy it as challenger with a share of the traffic."""
    from riskloop.data.spec import load_spec
    from riskloop.delivery import rollout
    from riskloop.settings import Settings

    s = Settings()
    name = load_spec(spec).registered_model(s.mlflow.model_name)
    d = rollout.deploy_challenger(s, name, alias=model_alias, canary_percent=canary_percent,
                                  reason=f"delivery pipeline {pipeline_run_id}")
    return d.model_dump_json()


@component
def set_canary_traffic(spec: str, canary_percent: int) -> str:
    """The next step of the rollout: the challenger's share of the traffic."""
    from riskloop.data.spec import load_spec
    from riskloop.delivery import rollout
    from riskloop.settings import Settings

    s = Settings()
    return rollout.set_traffic(s, load_spec(spec).registered_model(s.mlflow.model_name), canary_percent
                               ).model_dump_json()


@component
def analyze_canary(spec: str, interval_seconds: float, max_intervals: int, policy: dict
                   ) -> NamedTuple("Outputs", [("decision", str), ("verdict", str)]):  # type: ignore[valid-type]
    """Analyse a growing window until a verdict other than ``continue`` (or ``max_intervals``); audit each."""
    import json
    from collections import namedtuple

    from riskloop.data.spec import load_spec
    from riskloop.delivery.analysis import CanaryPolicy
    from riskloop.delivery.canary import analyze_interval
    from riskloop.settings import Settings

    s = Settings()
    name = load_spec(spec).registered_model(s.mlflow.model_name)
    from riskloop.delivery.canary import metrics_source

    source = metrics_source(s, name)
    start = source.snapshot()  # the window grows from here until a decision
    verdict = None
    for _ in range(max_intervals):
        verdict, _end = analyze_interval(s, name, interval_seconds=interval_seconds,
                                         policy=CanaryPolicy.from_mapping(policy), source=source, start=start)
        if verdict.decision != "continue":
            break
    assert verdict is not None
    Outputs = namedtuple("Outputs", ["decision", "verdict"])
    return Outputs(verdict.decision, json.dumps(verdict.to_dict()))


@component
def promote_or_rollback(spec: str, verdict: str) -> str:
    """Act on the last step's verdict: promote, roll back, or leave an undecided canary where it is."""
    import json

    from riskloop.data.spec import load_spec
    from riskloop.delivery import rollout
    from riskloop.settings import Settings

    s = Settings()
    name = load_spec(spec).registered_model(s.mlflow.model_name)
    v = json.loads(verdict)
    if v["decision"] == "promote":
        rollout.promote(s, name, verdict=v, reason="delivery pipeline: canary analysis passed")
        return "promoted"
    if v["decision"] == "rollback":
        rollout.rollback(s, name, verdict=v, reason="delivery pipeline: canary analysis failed")
        return "rolled_back"
    return "undecided"
