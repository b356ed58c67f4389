"""Components of the delivery pipeline: deploy a canary, analyse it, promote or roll back.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
Where they act comes from Settings (``RISKLOOP_DELIVERY__TARGET``: the local
deployment record, or the InferenceService on the cluster).
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from riskloop.components import RUNTIME_IMAGE

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
def analyze_canary(spec: str, interval_seconds: float, max_intervals: int, policy: dict,
                   verdict: Output[Artifact]) -> str:
    """Analyse a growing window until a verdict other than ``continue`` (or ``max_intervals``); audit each.

    Returns the decision (one output, so conditions on it also work under kfp.local, whose condition
    evaluator cannot resolve a named output of a multi-output task); the whole verdict is the artifact.
    """
    import json
    from pathlib import Path

    from riskloop.data.spec import load_spec
    from riskloop.delivery.analysis import CanaryPolicy
    from riskloop.delivery.canary import analyze_step, metrics_source
    from riskloop.settings import Settings

    s = Settings()
    name = load_spec(spec).registered_model(s.mlflow.model_name)
    source = metrics_source(s, name)
    result = analyze_step(s, name, start=source.snapshot(), interval_seconds=interval_seconds,
                          max_intervals=max_intervals, policy=CanaryPolicy.from_mapping(policy), source=source)
    Path(verdict.path).write_text(json.dumps(result.to_dict()))
    verdict.metadata["decision"] = result.decision
    return result.decision


@component
def promote_or_rollback(spec: str, verdict: Input[Artifact]) -> str:
    """Act on the last step's verdict: promote, roll back, or leave an undecided canary where it is."""
    import json
    from pathlib import Path

    from riskloop.data.spec import load_spec
    from riskloop.delivery import rollout
    from riskloop.settings import Settings

    s = Settings()
    name = load_spec(spec).registered_model(s.mlflow.model_name)
    v = json.loads(Path(verdict.path).read_text())
    if v["decision"] == "promote":  # refused (and audited) unless approved where required; spec checked too
        rollout.promote(s, name, verdict=v, reason="delivery pipeline: canary analysis passed", given_spec=spec)
        return "promoted"
    if v["decision"] == "rollback":
        rollout.rollback(s, name, verdict=v, reason="delivery pipeline: canary analysis failed")
        return "rolled_back"
    return "undecided"
