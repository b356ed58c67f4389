"""The monitoring pipeline's steps: one day's drift and decay of the champion, and a retrain's window."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from riskloop.monitoring.assessment import MonitorPolicy
from riskloop.monitoring.daily import MonitorOutcome, monitor_day
from riskloop.settings import Settings
from riskloop.steps.common import parse_day


def monitor(
    spec_name: str,
    day: str,
    policy: Mapping[str, Any],
    settings: Settings,
    *,
    pushgateway_url: str | None,
    drift_report_path: Path,
    summary_path: Path,
) -> MonitorOutcome:
    """Monitor the champion's ``day`` (``monitoring.daily.monitor_day``) and hand its reports to the pipeline.

    ``drift_report_path`` gets the day's drift.html (riskloop's action first, then Evidently's detail), or,
    on a day without a drift test, a page with the action's reasons; ``summary_path`` the outcome as JSON.
    """
    outcome = monitor_day(
        settings,
        spec_name,
        parse_day(day, "day"),
        policy=MonitorPolicy.model_validate(policy),
        pushgateway_url=pushgateway_url or None,
    )
    drift_report_path.parent.mkdir(parents=True, exist_ok=True)
    if outcome.report_html is not None:
        shutil.copyfile(outcome.report_html, drift_report_path)
    else:
        reasons = "".join(f"<li>{escape(r)}</li>" for r in outcome.reasons)
        drift_report_path.write_text(
            f"<html><body><h1>riskloop monitoring: {escape(outcome.model)} "
            f"v{escape(outcome.model_version)}, {day}</h1><p><b>action: "
            f"{escape(outcome.action)}</b>, no drift test on this day</p><ul>{reasons}</ul>"
            "</body></html>"
        )
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(outcome.to_dict()))
    return outcome


__all__ = ["monitor"]
