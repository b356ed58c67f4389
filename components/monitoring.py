"""Components of the monitoring pipeline.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Output

from riskloop.components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def monitor(
    spec: str, day: str, policy: dict, pushgateway_url: str, drift_report: Output[HTML], summary: Output[Artifact]
) -> str:
    """Drift and decay of the champion on ``day`` (``riskloop.steps.monitoring.monitor``); returns the action
    (retrain | watch | ok).

    ``drift_report`` opens with riskloop's action, the drifted features and the rule, then Evidently's
    detail; ``summary`` is the outcome (JSON), as the CLI prints it.
    """
    from pathlib import Path

    from riskloop.settings import Settings
    from riskloop.steps.monitoring import monitor as run

    outcome = run(
        spec,
        day,
        policy,
        Settings(),
        pushgateway_url=pushgateway_url or None,
        drift_report_path=Path(drift_report.path),
        summary_path=Path(summary.path),
    )
    summary.metadata.update({"action": outcome.action, "rows": outcome.rows})
    return outcome.action


@component
def retrain_window(day: str, days: int) -> NamedTuple(  # type: ignore[valid-type]
    "Outputs", [("start_date", str), ("end_date", str), ("cutoff_date", str)]
):
    """The ``days`` days ending with ``day``, cutoff at the next midnight: a retrain's training window, or the
    feature pipeline's history window."""
    from collections import namedtuple

    from riskloop.steps.common import retrain_window as run

    window = run(day, days)
    Outputs = namedtuple("Outputs", ["start_date", "end_date", "cutoff_date"])
    return Outputs(window["start_date"], window["end_date"], window["cutoff_date"])
