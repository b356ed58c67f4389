"""Components of the monitoring pipeline.

No `from __future__ import annotations` here: KFP reads the real annotation objects.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Output

from riskloop.components import RUNTIME_IMAGE

component = dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)


@component
def monitor(spec: str, day: str, policy: dict, pushgateway_url: str, drift_report: Output[HTML],
            summary: Output[Artifact]) -> str:
    """Drift and decay of the champion on ``day``; returns the decision (retrain | watch | ok).

    The reasons and figures are the ``summary`` artifact (JSON); Evidently's report is ``drift_report``.
    """
    import json
    import shutil
    from datetime import date
    from pathlib import Path

    from riskloop.monitoring.daily import monitor_day
    from riskloop.monitoring.decision import MonitorPolicy
    from riskloop.settings import Settings

    outcome = monitor_day(Settings(), spec, date.fromisoformat(day), policy=MonitorPolicy.model_validate(policy),
                          pushgateway_url=pushgateway_url or None)
    if outcome.report_html is not None:
        shutil.copyfile(outcome.report_html, drift_report.path)
    else:
        Path(drift_report.path).write_text(f"<html><body><p>no drift test on {day}: "
                                           f"{'; '.join(outcome.reasons)}</p></body></html>")
    Path(summary.path).write_text(json.dumps(outcome.to_dict()))
    summary.metadata.update({"action": outcome.action, "rows": outcome.rows})
    return outcome.action


@component
def retrain_window(day: str, days: int
                   ) -> NamedTuple("Outputs", [("start_date", str), ("end_date", str), ("cutoff_date", str)]):  # type: ignore[valid-type]
    """The ``days`` days ending with ``day``, cutoff at the next midnight: a retrain's training window, or the
    feature pipeline's history window."""
    from collections import namedtuple
    from datetime import date

    from riskloop.schedule import training_window

    window = training_window(date.fromisoformat(day), days)
    Outputs = namedtuple("Outputs", ["start_date", "end_date", "cutoff_date"])
    return Outputs(window["start_date"], window["end_date"], window["cutoff_date"])
