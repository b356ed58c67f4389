"""Which day a scheduled pipeline run works on.

A recurring run (the chart's ``schedules``: monitoring, feature refresh, a plain
retrain) cannot carry a fixed date. Its pipelines take ``day=""`` and resolve it
once, in their first step, from the time the run was scheduled for (KFP's
``{{$.pipeline_job_schedule_time_utc}}``): the last complete UTC day before it.
Every later step reads that one resolved day, so a run that crosses midnight
stays consistent. A run started by hand passes an ISO date instead.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from riskloop.errors import ConfigError


def resolve_day(day: str, scheduled_time: str, *, now: datetime | None = None) -> date:
    """``day`` if given (ISO date), else the day before ``scheduled_time`` (RFC 3339, UTC).

    ``scheduled_time`` still reading ``{{...}}`` (kfp.local does not fill KFP's
    schedule placeholder) or empty means "now": the day before ``now`` (UTC).
    """
    if day.strip():
        try:
            return date.fromisoformat(day.strip())
        except ValueError as exc:
            raise ConfigError(
                f"day={day!r} is not an ISO date",
                where="pipeline parameter day",
                fix="pass YYYY-MM-DD, or leave it empty for the day before the scheduled time",
            ) from exc
    stamp = scheduled_time.strip()
    if stamp and not stamp.startswith("{{"):
        try:
            at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(
                f"scheduled time {stamp!r} is not an RFC 3339 timestamp",
                where="run_day",
                fix="pass dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER or an ISO day",
            ) from exc
        if at.utcoffset() is None:
            at = at.replace(tzinfo=UTC)
    else:
        at = now or datetime.now(UTC)
    return (at.astimezone(UTC) - timedelta(days=1)).date()


def training_window(end: date, days: int) -> dict[str, str]:
    """The ``days`` days ending with ``end``, cutoff at the next midnight: a (re)training window, or the
    feature pipeline's history window, as the pipelines' ``start_date``/``end_date``/``cutoff_date``."""
    if days < 1:
        raise ConfigError(f"days={days} must be >= 1", where="training window", fix="pass days >= 1")
    start = end - timedelta(days=days - 1)
    return {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "cutoff_date": (end + timedelta(days=1)).isoformat(),
    }


__all__ = ["resolve_day", "training_window"]
