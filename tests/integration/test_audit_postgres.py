"""PostgresAuditLog against a real server: chain, concurrency, tampering by SQL."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from riskloop.audit.log import (
    GENESIS,
    AuditEvent,
    PostgresAuditLog,
    event_hash,
    open_audit_log,
)
from riskloop.errors import AuditError

T0 = datetime(2026, 11, 27, 19, 5, 51, 123456, tzinfo=UTC)


@pytest.fixture
def audit(postgres_dsn: str) -> Iterator[PostgresAuditLog]:
    """A log on its own table, dropped afterwards, so tests never share a chain."""
    log = PostgresAuditLog(postgres_dsn, table=f"riskloop_audit_test_{uuid.uuid4().hex[:12]}")
    try:
        yield log
    finally:
        _sql(log, "DROP TABLE IF EXISTS {table}")


def _sql(log: PostgresAuditLog, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Run a statement as a tamperer would, outside the library."""
    query = sql.SQL(statement).format(table=sql.Identifier(log.table))
    with psycopg.connect(log.dsn, autocommit=True) as conn:
        conn.execute(query, params)


def _fill(log: PostgresAuditLog, n: int) -> list[AuditEvent]:
    return [
        log.append(
            "registered" if i % 2 else "trained",
            actor="pipeline",
            ids={"model_version": str(i), "run_id": f"run-{i}"},
            details={"i": i, "pr_auc": 0.5 + i / 100, "passed": True, "big": 1e16, "tiny": 1e-7},
            time=T0 + timedelta(minutes=i),
        )
        for i in range(n)
    ]


def test_empty_table_is_an_empty_valid_log(audit: PostgresAuditLog) -> None:
    assert audit.events() == []
    assert audit.head() is None
    result = audit.verify()
    assert result.ok and result.events == 0 and result.head_hash is None


def test_round_trip_chain_and_queryable_columns(audit: PostgresAuditLog) -> None:
    written = _fill(audit, 5)

    assert audit.events() == written
    assert audit.head() == written[-1]
    assert written[0].prev_hash == GENESIS
    result = audit.verify()
    assert result.ok, result.reason
    assert (result.events, result.head_hash) == (5, written[-1].hash)

    with psycopg.connect(audit.dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT seq, time, details->>'i' FROM {table} WHERE event = 'registered' AND ids->>'model_version' = %s"
            ).format(table=sql.Identifier(audit.table)),
            ("3",),
        ).fetchall()
    assert rows == [(3, T0 + timedelta(minutes=3), "3")]


def test_open_audit_log_postgres(postgres_dsn: str) -> None:
    log = open_audit_log("postgres", dsn=postgres_dsn)
    assert isinstance(log, PostgresAuditLog) and log.table == "riskloop_audit"


def test_concurrent_appends_from_four_processes_form_one_chain(audit: PostgresAuditLog) -> None:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=_append_many, args=(audit.dsn, audit.table, w, 10, start)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]

    result = audit.verify()
    assert result.ok, result.reason
    assert result.events == 40
    events = audit.events()
    for w in range(4):
        assert [e.details["i"] for e in events if e.details["worker"] == w] == list(range(10))


def _append_many(dsn: str, table: str, worker: int, n: int, start: Any) -> None:
    start.wait(timeout=30)
    log = PostgresAuditLog(dsn, table=table)
    for i in range(n):
        log.append("validated", actor=f"worker-{worker}", details={"worker": worker, "i": i})


@pytest.mark.parametrize(
    ("column", "assignment"),
    [
        ("details", "details = jsonb_set(details, '{{passed}}', 'false')"),
        ("details", "details = jsonb_set(details, '{{passed}}', '1')"),
        ("ids", "ids = jsonb_set(ids, '{{model_version}}', '\"99\"')"),
        ("actor", "actor = 'mallory'"),
        ("event", "event = 'approved'"),
        ("time", "time = time + interval '1 second'"),
        ("prev_hash", "prev_hash = repeat('1', 64)"),
        ("hash", "hash = repeat('2', 64)"),
    ],
)
def test_update_of_a_column_is_reported(audit: PostgresAuditLog, column: str, assignment: str) -> None:
    _fill(audit, 5)
    _sql(audit, "UPDATE {table} SET " + assignment + " WHERE seq = 2")

    result = audit.verify()
    assert not result.ok
    assert result.first_broken_seq == 2
    assert result.reason is not None
    assert result.reason.startswith("line 3 ") and f"its {column} column" in result.reason


def test_update_of_the_hashed_record_is_reported(audit: PostgresAuditLog) -> None:
    written = _fill(audit, 5)
    record = json.loads(written[2].to_json())
    record["details"]["passed"] = False
    forged = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    _sql(
        audit,
        "UPDATE {table} SET canonical_json = %s, details = %s WHERE seq = 2",
        (forged, json.dumps(record["details"])),
    )

    result = audit.verify()
    assert not result.ok and result.first_broken_seq == 2
    assert result.reason == "line 3 was edited: its fields no longer match its hash"


def test_rewrite_of_a_row_with_recomputed_hash_is_reported(audit: PostgresAuditLog) -> None:
    written = _fill(audit, 5)
    fields = json.loads(written[2].to_json())
    del fields["hash"]
    fields["details"]["passed"] = False
    forged_hash = event_hash(**fields)
    forged = json.dumps({**fields, "hash": forged_hash}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    _sql(
        audit,
        "UPDATE {table} SET canonical_json = %s, details = %s, hash = %s WHERE seq = 2",
        (forged, json.dumps(fields["details"]), forged_hash),
    )

    result = audit.verify()
    assert not result.ok
    assert result.first_broken_seq == 2
    assert result.reason is not None and result.reason.startswith("line 4 does not follow line 3")


def test_deleted_rows_are_reported_and_truncation_needs_an_anchor(
    audit: PostgresAuditLog,
) -> None:
    written = _fill(audit, 5)
    anchor = [(4, written[4].hash)]
    assert audit.verify(anchor).ok

    _sql(audit, "DELETE FROM {table} WHERE seq = 4")
    assert audit.verify().ok, "a cut tail is a valid shorter chain"
    truncated = audit.verify(anchor)
    assert not truncated.ok and truncated.first_broken_seq == 4
    assert truncated.reason is not None and "truncated" in truncated.reason

    _sql(audit, "DELETE FROM {table} WHERE seq = 1")
    removed = audit.verify()
    assert not removed.ok and removed.first_broken_seq == 1
    assert removed.reason is not None and removed.reason.startswith("line 2 has seq 2")


def test_unreadable_row_is_reported_by_verify_and_named_by_events(
    audit: PostgresAuditLog,
) -> None:
    _fill(audit, 3)
    _sql(audit, "UPDATE {table} SET canonical_json = %s WHERE seq = 1", ("{oops",))

    result = audit.verify()
    assert not result.ok and result.first_broken_seq == 1 and result.events == 3
    with pytest.raises(AuditError, match=r"line 2 \(row seq 1\)"):
        audit.events()
