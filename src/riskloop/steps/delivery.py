"""The delivery pipeline's step: the progressive rollout of a registered version, start to finish.

One call, :func:`riskloop.delivery.canary.progressive_rollout`: refuse an unapproved challenger before any
traffic moves (audited), deploy it at the first canary percent, wait for the server to answer with it, analyse a
growing window at each canary percent, then promote or roll back. ``make run`` runs it through the delivery
pipeline under kfp.local, the cluster through the same pipeline on KFP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from riskloop.data.spec import load_spec
from riskloop.delivery import rollout
from riskloop.delivery.analysis import CanaryPolicy
from riskloop.delivery.canary import RolloutResult, metrics_source, progressive_rollout
from riskloop.settings import Settings


def deliver(
    spec_name: str,
    challenger_alias: str,
    steps: Sequence[int],
    interval_seconds: float,
    max_intervals: int,
    policy: Mapping[str, Any],
    settings: Settings,
    *,
    pipeline_run_id: str,
) -> RolloutResult:
    """Roll out the version ``challenger_alias`` names as the challenger of the spec's model through ``steps`` (%).

    Raises :class:`~riskloop.errors.ApprovalRefused` (audited) before deploying a version that may not be
    promoted, :class:`~riskloop.errors.DeploymentError` when the server never answers with it.
    """
    name = load_spec(spec_name).registered_model(settings.mlflow.model_name)
    version = rollout.resolve_version(settings, name, alias=challenger_alias)
    return progressive_rollout(
        settings,
        name,
        steps=steps,
        interval_seconds=interval_seconds,
        max_intervals=max_intervals,
        policy=CanaryPolicy.from_mapping(policy),
        source=metrics_source(settings, name),
        deploy_version=version,
        given_spec=spec_name,
        reason=f"delivery pipeline {pipeline_run_id}: alias {challenger_alias} (v{version}) at {list(steps)}%",
    )


__all__ = ["deliver"]
