"""Serving history rebuilt from the audit log: periods, shares, the state at a time, per-version summaries."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from riskloop.audit.history import serving_at, serving_history, version_summaries
from riskloop.audit.log import AuditEvent, FileAuditLog
from riskloop.errors import ConfigError

T0 = datetime(2026, 1, 14, 8, 0, tzinfo=UTC)
M = "fraud-detector"


def _state(
    champion: str, challenger: str | None = None, percent: int = 0, mode: str = "canary", model: str = M
) -> tuple[dict[str, str], dict[str, object]]:
    ids = {"model": model, "champion_version": champion}
    if challenger:
        ids["challenger_version"] = challenger
    return ids, {"revision": 1, "canary_percent": percent, "mode": mode, "reason": "r"}


def write(log: FileAuditLog) -> list[AuditEvent]:
    steps: list[tuple[int, str, tuple[dict[str, str], dict[str, object]]]] = [
        (0, "deployed", _state("1")),
        (10, "canary_deployed", _state("1", "2", 10)),
        (20, "canary_verdict", _state("1", "2", 10)),  # a verdict changes nothing served
        (30, "canary_traffic_set", _state("1", "2", 50)),
        (40, "promoted", _state("2")),
        (50, "canary_deployed", _state("2", "3", 0, mode="shadow")),
        (60, "rolled_back", _state("2")),
        (70, "champion_restored", _state("1")),
        (75, "deployed", _state("7", model="credit-scorer")),
    ]
    log.append("trained", actor="riskloop", ids={"run_id": "x"}, time=T0 - timedelta(minutes=1))
    return [
        log.append(name, actor="riskloop", ids=ids, details=details, time=T0 + timedelta(minutes=m))
        for m, name, (ids, details) in steps
    ]


@pytest.fixture()
def log(tmp_path: Path) -> FileAuditLog:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    write(log)
    return log


def test_periods_follow_every_state_change(log: FileAuditLog) -> None:
    periods = serving_history(log.events(), model=M)
    assert [(p.event, p.shares, p.mode) for p in periods] == [
        ("deployed", {"1": 100}, "-"),
        ("canary_deployed", {"1": 90, "2": 10}, "canary"),
        ("canary_traffic_set", {"1": 50, "2": 50}, "canary"),
        ("promoted", {"2": 100}, "-"),
        ("canary_deployed", {"2": 100, "3": 0}, "shadow"),
        ("rolled_back", {"2": 100}, "-"),
        ("champion_restored", {"1": 100}, "-"),
    ]
    # contiguous: each period ends where the next begins; the last is open
    assert all(a.end == b.start for a, b in itertools.pairwise(periods))
    assert periods[-1].end is None
    assert {p.model for p in serving_history(log.events())} == {M, "credit-scorer"}


def test_what_served_at_a_time(log: FileAuditLog) -> None:
    periods = serving_history(log.events())
    [at_35] = serving_at(periods, T0 + timedelta(minutes=35), model=M)
    assert at_35.shares == {"1": 50, "2": 50}
    [at_30] = serving_at(periods, T0 + timedelta(minutes=30), model=M)  # a period starts at its event
    assert at_30.event == "canary_traffic_set"
    assert serving_at(periods, T0 - timedelta(minutes=1)) == []
    both = serving_at(periods, T0 + timedelta(hours=5))
    assert {(p.model, p.champion_version) for p in both} == {(M, "1"), ("credit-scorer", "7")}
    with pytest.raises(ConfigError, match="no timezone"):
        serving_at(periods, datetime(2026, 1, 14))


def test_version_summaries(log: FileAuditLog) -> None:
    periods = serving_history(log.events(), model=M)
    summary = {v.version: v for v in version_summaries(periods, now=T0 + timedelta(minutes=100))}
    assert summary["1"].seconds_as_champion == (40 + 30) * 60  # 0-40 and 70-100
    assert summary["1"].last_served is None, "serving again"
    assert summary["2"].seconds_as_challenger == 30 * 60 and summary["2"].seconds_as_champion == 30 * 60
    assert summary["2"].max_share == 100 and summary["3"].max_share == 0
    assert summary["3"].last_served == (T0 + timedelta(minutes=60)).isoformat(timespec="microseconds")


def test_history_command(log: FileAuditLog, tmp_path: Path) -> None:
    from riskloop.cli import app

    env = {"RISKLOOP_STATE_DIR": str(log.path.parent), "COLUMNS": "200"}  # the log is the state dir's audit.jsonl
    r = CliRunner().invoke(app, ["history"], env=env)
    assert r.exit_code == 0, r.output
    assert "v1 90%, v2 10%" in r.output and "v3 0% (shadow)" in r.output and "per version" in r.output
    r = CliRunner().invoke(app, ["history", "--at", (T0 + timedelta(minutes=35)).isoformat(), "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert '"shares"' in r.output and '"50"' not in r.output
    r = CliRunner().invoke(app, ["history", "--at", "yesterday"], env=env)
    assert r.exit_code == 2 and "is not an ISO 8601 time" in r.output
