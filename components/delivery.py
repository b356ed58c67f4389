"""The delivery pipeline's component: the progressive rollout of a challenger, one step.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
Where it acts comes from Settings (``RISKLOOP_DELIVERY__TARGET``: the local
deployment record, or the InferenceService on the cluster).
"""

from kfp import dsl
from kfp.dsl import Artifact, Output

from riskloop.components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def deliver(
    spec: str,
    challenger_alias: str,
    first_percent: int,
    second_percent: int,
    interval_seconds: float,
    max_intervals: int,
    policy: dict,
    pipeline_run_id: str,
    rollout: Output[Artifact],
) -> str:
    """Refuse an unapproved challenger, deploy it at ``first_percent``, analyse, step to ``second_percent``,
    analyse, then promote or roll back (``riskloop.steps.delivery.deliver``).

    Returns the outcome (promoted | rolled_back | undecided); every interval's verdict is the ``rollout``
    artifact (JSON), each one also in the audit log.
    """
    import json
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps.delivery import deliver as run

    result = run(
        spec,
        challenger_alias,
        [first_percent, second_percent],
        interval_seconds,
        max_intervals,
        policy,
        Settings(),
        pipeline_run_id=pipeline_run_id,
    )
    Path(rollout.path).write_text(json.dumps(result.to_dict()))
    rollout.metadata.update({"outcome": result.outcome, "champion_version": result.final.champion_version})
    return result.outcome
