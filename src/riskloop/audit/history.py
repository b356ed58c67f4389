"""Serving history: which model version answered which share of the traffic, when — from the audit log.

MLflow keeps no history of aliases (mlflow/mlflow#2169) and the deployment
record holds only the present. Every change of what is served is appended to
the audit log by ``delivery.rollout`` with the whole state after the change:
``ids`` = model, champion and challenger version; ``details`` = canary
percent and mode. :func:`serving_history` replays those events
(``deployed``, ``canary_deployed``, ``canary_traffic_set``, ``promoted``,
``rolled_back``, ``champion_restored``) into periods of constant state.

Shares are of live requests: a canary at ``p`` % answers ``p`` % and the
champion the rest; a shadow answers none (it scores copies) and is listed
with share 0. A period ends where the next event for the same model begins;
the last one is open (``end`` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from riskloop.audit.log import AuditEvent
from riskloop.errors import ConfigError

STATE_EVENTS = ("deployed", "canary_deployed", "canary_traffic_set", "promoted", "rolled_back", "champion_restored")


@dataclass(frozen=True)
class Period:
    """One stretch of constant serving state of a model."""

    model: str
    start: str
    end: str | None
    champion_version: str
    challenger_version: str | None
    mode: str
    shares: dict[str, int]  # version -> percent of live requests it answers
    event: str  # what started the period
    seq: int
    actor: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shares(champion: str, challenger: str | None, percent: int, mode: str) -> dict[str, int]:
    if challenger is None:
        return {champion: 100}
    if mode == "shadow":
        return {champion: 100, challenger: 0}
    return {champion: 100 - percent, challenger: percent}


def serving_history(events: Sequence[AuditEvent], *, model: str | None = None) -> list[Period]:
    """Periods of constant serving state, in time order, for every model (or only ``model``)."""
    periods: list[Period] = []
    open_by_model: dict[str, int] = {}
    for e in events:
        if e.event not in STATE_EVENTS:
            continue
        name = e.ids.get("model")
        champion = e.ids.get("champion_version")
        if name is None or champion is None or (model is not None and name != model):
            continue
        challenger = e.ids.get("challenger_version")
        mode = str(e.details.get("mode", "canary"))
        percent = int(e.details.get("canary_percent", 0) or 0)
        if name in open_by_model:
            i = open_by_model[name]
            periods[i] = _closed(periods[i], e.time)
        open_by_model[name] = len(periods)
        periods.append(
            Period(
                model=name,
                start=e.time,
                end=None,
                champion_version=champion,
                challenger_version=challenger,
                mode=mode if challenger else "-",
                shares=_shares(champion, challenger, percent, mode),
                event=e.event,
                seq=e.seq,
                actor=e.actor,
                reason=str(e.details.get("reason") or ""),
            )
        )
    return periods


def _closed(p: Period, end: str) -> Period:
    return Period(**{**asdict(p), "end": end})


def serving_at(periods: Sequence[Period], at: datetime, *, model: str | None = None) -> list[Period]:
    """The period(s) in force at ``at`` (one per model)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ConfigError(f"{at.isoformat()} has no timezone", fix="give a UTC offset, e.g. 2026-01-14T12:00:00+00:00")
    out = []
    for p in periods:
        if model is not None and p.model != model:
            continue
        if datetime.fromisoformat(p.start) <= at and (p.end is None or at < datetime.fromisoformat(p.end)):
            out.append(p)
    return out


@dataclass(frozen=True)
class VersionSummary:
    model: str
    version: str
    first_served: str
    last_served: str | None  # None: still serving
    seconds_as_champion: float
    seconds_as_challenger: float
    max_share: int


def version_summaries(periods: Sequence[Period], *, now: datetime) -> list[VersionSummary]:
    """Per model version: when it first and last answered traffic, and for how long in each role."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for p in periods:
        end = datetime.fromisoformat(p.end) if p.end else now
        seconds = max((end - datetime.fromisoformat(p.start)).total_seconds(), 0.0)
        for version, share in p.shares.items():
            a = acc.setdefault(
                (p.model, version), {"first": p.start, "last": p.end, "champion": 0.0, "challenger": 0.0, "max": 0}
            )
            a["last"] = p.end
            a["champion" if version == p.champion_version else "challenger"] += seconds
            a["max"] = max(a["max"], share)
    return [
        VersionSummary(m, v, a["first"], a["last"], a["champion"], a["challenger"], a["max"])
        for (m, v), a in acc.items()
    ]


__all__ = ["STATE_EVENTS", "Period", "VersionSummary", "serving_at", "serving_history", "version_summaries"]
