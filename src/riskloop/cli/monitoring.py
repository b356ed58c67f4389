"""``riskloop monitor``: drift and decay of the served champion, day by day, and the action."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from riskloop.cli.common import SpecOpt, console, parse_day, settings
from riskloop.errors import ConfigError


def monitor_cmd(
    day: Annotated[str, typer.Option(help="First day to monitor, YYYY-MM-DD (UTC).")],
    days: Annotated[int, typer.Option(min=1, max=366, help="Number of consecutive days.")] = 1,
    min_rows: Annotated[int, typer.Option(min=1, help="Rows a day needs for a drift test.")] = 1000,
    fdr: Annotated[float, typer.Option(min=0.0001, max=0.5, help="False discovery rate over the tests.")] = 0.05,
    pushgateway: Annotated[str | None, typer.Option(help="Push the gauges here, e.g. http://127.0.0.1:9091.")] = None,
    spec: SpecOpt = "synthetic-fraud",
) -> None:
    """Monitor the served champion: drift and decay per day, the action (retrain | watch | ok) and why.

    Reads the prediction log the server wrote; reports under .riskloop/reports/monitoring/<day>/.
    On the cluster the monitoring pipeline runs this as a recurring run.

    Example:

        riskloop monitor --day 2026-02-01 --days 7
    """
    from riskloop.monitoring.assessment import MonitorPolicy
    from riskloop.monitoring.daily import monitor_day

    s = settings()
    first = parse_day(day, "--day")
    t = Table(title="monitoring", title_justify="left")
    for col in ("day", "version", "rows", "drift share", "drifted", "decay", "action"):
        t.add_column(col)
    last = None
    try:
        policy = MonitorPolicy(min_current_rows=min_rows, fdr=fdr)
        for i in range(days):
            o = monitor_day(s, spec, first + timedelta(days=i), policy=policy, pushgateway_url=pushgateway)
            t.add_row(
                o.day.isoformat(),
                o.model_version,
                str(o.rows),
                "-" if o.drift_share is None else f"{o.drift_share:.2f}",
                ", ".join(o.drifted_features) or "-",
                "significant" if o.decay_significant else "-",
                o.action,
            )
            last = o
    except ValueError as exc:  # the policy's validation, or a value the options produced that the data refuses
        raise ConfigError(str(exc), where="riskloop monitor") from None
    console.print(t)
    if last is not None:
        for reason in last.reasons:
            console.print(f"  - {reason}")
        console.print(f"reports: {last.summary_path.parent}")
