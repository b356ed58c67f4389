"""What the steps of every pipeline share: the audit append, date parameters, validated rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from riskloop.audit.log import open_audit_log
from riskloop.data.spec import DatasetSpec
from riskloop.errors import ConfigError
from riskloop.settings import Settings


def audit(s: Settings, event: str, ids: dict[str, str], details: dict[str, Any]) -> Any:
    """Append one event to the configured audit log (file or Postgres)."""
    return open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).append(
        event, actor=s.audit.actor, ids=ids, details=details
    )


def parse_day(text: str, name: str) -> date:
    """A date parameter of a step (KFP passes strings); a bad one is a ConfigError naming the parameter."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={text!r} is not a date", fix="use YYYY-MM-DD") from exc


def valid_frame(spec: DatasetSpec, valid_path: Path) -> pd.DataFrame:
    """Validated rows with the spec's categorical columns restored (parquet keeps them as strings)."""
    tx = pd.read_parquet(valid_path)
    for name, cats in spec.categories.items():
        tx[name] = pd.Categorical(tx[name].astype(str), categories=list(cats))
    return tx


def run_day(day: str, scheduled_time: str) -> str:
    """The first step of a scheduled pipeline: ``day`` if set, else the last complete UTC day before the
    run's scheduled time (:func:`riskloop.schedule.resolve_day`), as YYYY-MM-DD."""
    from riskloop.schedule import resolve_day

    return resolve_day(day, scheduled_time).isoformat()


def retrain_window(day: str, days: int) -> dict[str, str]:
    """The ``days`` days ending with ``day``, cutoff at the next midnight: a retrain's training window, or the
    feature pipeline's history window (``start_date``, ``end_date``, ``cutoff_date``).

    Here, not in ``steps.monitoring``: the feature pipeline's step would otherwise import the monitor
    (Evidently) for a date computation."""
    from riskloop.schedule import training_window

    return training_window(parse_day(day, "day"), days)
