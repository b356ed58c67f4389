"""The hash-chained audit log: round trip, concurrency, tamper evidence, anchors, errors."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import re
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskloop.audit.log import (
    EVENTS,
    GENESIS,
    AuditEvent,
    FileAuditLog,
    PostgresAuditLog,
    VerifyResult,
    event_hash,
    filter_events,
    open_audit_log,
    verify_events,
)
from riskloop.errors import AuditChainBroken, AuditError, ConfigError

T0 = datetime(2026, 11, 27, 19, 5, 51, 123456, tzinfo=UTC)
BASE_EVENTS = 8
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _fill(log: FileAuditLog, n: int) -> list[AuditEvent]:
    names = sorted(EVENTS)
    return [
        log.append(
            names[i % len(names)],
            actor=f"actor-{i % 3}",
            ids={"model_version": str(i // 2), "run_id": f"run-{i}"},
            details={"i": i, "score": i / 7, "ok": i % 2 == 0, "tags": ["a", "ü"], "none": None},
            time=T0 + timedelta(minutes=i),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def base_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The lines of a valid log of BASE_EVENTS events, written by FileAuditLog itself."""
    log = FileAuditLog(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    _fill(log, BASE_EVENTS)
    assert log.verify().ok
    return log.path.read_bytes().split(b"\n")[:-1]


def _verify_lines(lines: list[bytes], anchors: list[tuple[int, str]] | None = None) -> VerifyResult:
    with tempfile.TemporaryDirectory() as tmp:
        log = FileAuditLog(Path(tmp) / "audit.jsonl")
        log.path.write_bytes(b"".join(line + b"\n" for line in lines))
        return log.verify(anchors or [])


def _hash_of(line: bytes) -> str:
    return str(json.loads(line)["hash"])


def _assert_broken_at_or_before(result: VerifyResult, place: int) -> None:
    assert not result.ok, result
    assert result.first_broken_seq is not None
    assert 0 <= result.first_broken_seq <= place, result
    assert result.reason is not None
    assert re.search(r"\blines? \d+", result.reason), result.reason
    assert result.head_hash is None


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "nested" / "dir" / "audit.jsonl")
    assert log.events() == []
    assert log.head() is None
    assert not (tmp_path / "nested").exists(), "reading must not create anything"

    written = _fill(log, 5)

    assert log.events() == written
    assert log.head() == written[-1]
    assert [e.seq for e in written] == list(range(5))
    assert written[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(written))
    assert written[0].time == "2026-11-27T19:05:51.123456+00:00"
    for event in written:
        assert AuditEvent.from_json(event.to_json()) == event
        assert event.hash == event_hash(
            seq=event.seq,
            time=event.time,
            actor=event.actor,
            event=event.event,
            ids=event.ids,
            details=event.details,
            prev_hash=event.prev_hash,
        )
    lines = log.path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and lines[:-1] == [e.to_json() for e in written]
    assert lines[0] == json.dumps(json.loads(lines[0]), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    result = log.verify()
    assert result == VerifyResult(True, 5, written[-1].hash, None, None)
    result.raise_if_broken()


def test_time_is_utc_with_microseconds_and_defaults_to_now(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    plus_two = timezone(timedelta(hours=2))
    event = log.append("approved", actor="alice", time=datetime(2026, 1, 1, 12, tzinfo=plus_two))
    assert event.time == "2026-01-01T10:00:00.000000+00:00"
    before = datetime.now(UTC)
    now = log.append("approved", actor="alice")
    assert before <= datetime.fromisoformat(now.time) <= datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", now.time)


def test_details_are_converted_to_json_values(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    event = log.append(
        "trained",
        actor="pipeline",
        details={
            "auc": np.float64(0.93),
            "rows": np.int64(1200),
            "passed": np.bool_(True),
            "importances": np.array([0.5, 0.25]),
            "cutoff": datetime(2026, 1, 1, tzinfo=UTC),
            "model_dir": Path("/models/7"),
            "window": (1, 2),
            "line_separator": "a\u2028b",
        },
    )
    assert event.details == {
        "auc": 0.93,
        "rows": 1200,
        "passed": True,
        "importances": [0.5, 0.25],
        "cutoff": "2026-01-01T00:00:00+00:00",
        "model_dir": "/models/7",
        "window": [1, 2],
        "line_separator": "a\u2028b",
    }
    assert log.events() == [event]
    assert log.verify().ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event": "model_trained"}, "unknown audit event 'model_trained'"),
        ({"details": {"auc": float("nan")}}, "cannot represent"),
        ({"details": {"labels": {"a", "b"}}}, "sorted list"),
        ({"details": {"x": object()}}, "not JSON-serialisable"),
        ({"details": {1: "x"}}, "non-string key"),
        ({"ids": {"model_version": 3}}, "strings to strings"),
        ({"actor": ""}, "non-empty"),
        ({"time": datetime(2026, 1, 1)}, "no timezone"),
    ],
)
def test_bad_append_raises_config_error_and_writes_nothing(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    first = log.append("validated", actor="pipeline")
    call: dict[str, Any] = {"event": "trained", "actor": "pipeline", **kwargs}
    event = call.pop("event")
    with pytest.raises(ConfigError, match=re.escape(message)):
        log.append(event, **call)
    assert log.events() == [first]


def test_concurrent_appends_from_four_processes_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=_append_many, args=(path, w, 25, start)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]

    log = FileAuditLog(path)
    result = log.verify()
    assert result.ok, result.reason
    assert result.events == 100
    events = log.events()
    assert [e.seq for e in events] == list(range(100))
    for w in range(4):
        mine = [e.details["i"] for e in events if e.details["worker"] == w]
        assert mine == list(range(25))


def _append_many(path: Path, worker: int, n: int, start: Any) -> None:
    start.wait(timeout=30)
    log = FileAuditLog(path)
    for i in range(n):
        log.append("validated", actor=f"worker-{worker}", details={"worker": worker, "i": i})


@st.composite
def _field_edit(draw: st.DrawFn, n: int) -> tuple[int, str, Any]:
    index = draw(st.integers(0, n - 1))
    name = draw(st.sampled_from(["seq", "time", "actor", "event", "ids", "details", "prev_hash", "hash"]))
    value: Any
    if name == "seq":
        value = draw(st.integers(-2, 2 * n).filter(lambda s: s != index))
    elif name == "ids":
        value = {"model_version": draw(st.text(max_size=4)), "run_id": f"run-{index}"}
    elif name == "details":
        value = draw(
            st.dictionaries(
                st.sampled_from(["i", "score", "ok", "new"]),
                st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                max_size=3,
            )
        )
    elif name == "event":
        value = draw(st.sampled_from(sorted(EVENTS)) | st.text(max_size=8))
    else:
        value = draw(st.text(max_size=12))
    return index, name, value


@PROPERTY
@given(data=st.data(), n=st.integers(1, BASE_EVENTS), rehash=st.booleans())
def test_any_field_edit_breaks_the_chain(base_lines: list[bytes], data: st.DataObject, n: int, rehash: bool) -> None:
    lines = base_lines[:n]
    index, name, value = data.draw(_field_edit(n))
    record = json.loads(lines[index])
    if record[name] == value or (rehash and name == "hash"):
        return  # not an edit: the line is unchanged, or rehashing restores it
    record[name] = value
    if rehash:
        # A forger who recomputes the edited line's own hash.
        fields = {k: v for k, v in record.items() if k != "hash"}
        record["hash"] = event_hash(**fields)
    lines = [*lines[:index], _canonical(record), *lines[index + 1 :]]
    # A rehashed last line is only caught by an anchor on it (see the truncation tests).
    anchors = [(n - 1, _hash_of(base_lines[n - 1]))] if rehash and index == n - 1 else []
    _assert_broken_at_or_before(_verify_lines(lines, anchors), index)


@PROPERTY
@given(data=st.data(), n=st.integers(1, BASE_EVENTS))
def test_any_byte_edit_breaks_the_chain(base_lines: list[bytes], data: st.DataObject, n: int) -> None:
    blob = bytearray(b"".join(line + b"\n" for line in base_lines[:n]))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] = data.draw(st.integers(0, 255).filter(lambda b: b != blob[position]))
    line_index = blob[:position].count(b"\n")
    with tempfile.TemporaryDirectory() as tmp:
        log = FileAuditLog(Path(tmp) / "audit.jsonl")
        log.path.write_bytes(bytes(blob))
        _assert_broken_at_or_before(log.verify(), line_index)


@PROPERTY
@given(data=st.data(), n=st.integers(1, BASE_EVENTS), kind=st.sampled_from(["forged", "copy"]))
def test_any_insertion_breaks_the_chain(base_lines: list[bytes], data: st.DataObject, n: int, kind: str) -> None:
    lines = base_lines[:n]
    index = data.draw(st.integers(0, n - 1), label="insert before line index")
    if kind == "copy":
        forged = lines[data.draw(st.integers(0, n - 1), label="copied line index")]
    else:
        # The strongest forgery: right seq, right prev_hash, its own hash recomputed.
        fields: dict[str, Any] = {
            "seq": index,
            "time": T0.isoformat(timespec="microseconds"),
            "actor": data.draw(st.text(min_size=1, max_size=8), label="actor"),
            "event": data.draw(st.sampled_from(sorted(EVENTS)), label="event"),
            "ids": {"model_version": "666"},
            "details": {"forged": True},
            "prev_hash": GENESIS if index == 0 else _hash_of(lines[index - 1]),
        }
        forged = _canonical({**fields, "hash": event_hash(**fields)})
    tampered = [*lines[:index], forged, *lines[index:]]
    _assert_broken_at_or_before(_verify_lines(tampered), index)


@PROPERTY
@given(data=st.data(), n=st.integers(1, BASE_EVENTS))
def test_any_deletion_breaks_the_chain(base_lines: list[bytes], data: st.DataObject, n: int) -> None:
    lines = base_lines[:n]
    start = data.draw(st.integers(0, n - 1), label="first deleted index")
    stop = data.draw(st.integers(start + 1, n), label="end of deleted range")
    tampered = lines[:start] + lines[stop:]
    # Removing the tail leaves a valid shorter chain: only an anchor reveals it.
    anchors = [(n - 1, _hash_of(lines[-1]))] if stop == n else []
    _assert_broken_at_or_before(_verify_lines(tampered, anchors), start)


@PROPERTY
@given(data=st.data(), n=st.integers(2, BASE_EVENTS))
def test_any_swap_breaks_the_chain(base_lines: list[bytes], data: st.DataObject, n: int) -> None:
    lines = list(base_lines[:n])
    i, j = sorted(data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
    lines[i], lines[j] = lines[j], lines[i]
    _assert_broken_at_or_before(_verify_lines(lines), i)


def _canonical(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", errors="surrogatepass")


def test_truncation_is_invisible_to_the_chain_alone(base_lines: list[bytes]) -> None:
    result = _verify_lines(base_lines[:5])
    assert result.ok
    assert result.head_hash == _hash_of(base_lines[4])


def test_truncation_is_caught_by_an_anchor_on_the_last_seq(base_lines: list[bytes]) -> None:
    last = BASE_EVENTS - 1
    anchors = [(last, _hash_of(base_lines[last]))]
    assert _verify_lines(base_lines, anchors).ok

    result = _verify_lines(base_lines[:5], anchors)
    assert not result.ok
    assert result.first_broken_seq == 5
    assert result.reason is not None
    assert "truncated" in result.reason and f"line {BASE_EVENTS}" in result.reason

    emptied = _verify_lines([], anchors)
    assert not emptied.ok and emptied.first_broken_seq == 0


def test_a_consistent_rewrite_is_caught_by_anchors_and_bounded_by_them(
    base_lines: list[bytes],
) -> None:
    events = [AuditEvent.from_json(line.decode()) for line in base_lines]
    rewritten = list(events[:3])
    for original in events[3:]:
        fields: dict[str, Any] = {
            "seq": original.seq,
            "time": original.time,
            "actor": original.actor,
            "event": original.event,
            "ids": original.ids,
            "details": {**original.details, "score": 0.99},
            "prev_hash": rewritten[-1].hash,
        }
        rewritten.append(AuditEvent(**fields, hash=event_hash(**fields)))
    assert verify_events(rewritten).ok, "a full rewrite is a valid chain by itself"

    anchors = [(1, events[1].hash), (6, events[6].hash)]
    result = verify_events(rewritten, anchors)
    assert not result.ok
    assert result.first_broken_seq == 2, "trusted up to the last matching anchor"
    assert result.reason is not None and "anchor" in result.reason


def test_forged_unknown_event_with_recomputed_hash_is_reported() -> None:
    fields: dict[str, Any] = {
        "seq": 0,
        "time": T0.isoformat(),
        "actor": "mallory",
        "event": "model_deleted",
        "ids": {},
        "details": {},
        "prev_hash": GENESIS,
    }
    result = verify_events([AuditEvent(**fields, hash=event_hash(**fields))])
    assert not result.ok and result.first_broken_seq == 0
    assert result.reason is not None and "model_deleted" in result.reason
    with pytest.raises(AuditChainBroken, match="model_deleted"):
        result.raise_if_broken(where="test")


def test_reasons_name_the_line_and_the_kind_of_tampering(base_lines: list[bytes]) -> None:
    edited = json.loads(base_lines[2])
    edited["actor"] = "mallory"
    reason = _verify_lines([*base_lines[:2], _canonical(edited), *base_lines[3:]]).reason
    assert reason == "line 3 was edited: its fields no longer match its hash"

    removed = _verify_lines(base_lines[:2] + base_lines[3:]).reason
    assert removed is not None and removed.startswith("line 3 has seq 3") and "missing" in removed

    inserted = _verify_lines([*base_lines[:3], base_lines[2], *base_lines[3:]]).reason
    assert inserted is not None and "inserted" in inserted


def test_unparseable_line_is_reported_by_verify_and_named_by_events(base_lines: list[bytes], tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    log.path.write_bytes(b"".join(x + b"\n" for x in [*base_lines[:3], b"{oops", *base_lines[4:]]))

    result = log.verify()
    assert not result.ok and result.first_broken_seq == 3 and result.events == BASE_EVENTS
    assert result.reason is not None and result.reason.startswith("line 4 is not a valid")
    with pytest.raises(AuditError, match="line 4 of the audit log"):
        log.events()


def test_hand_reformatted_line_is_reported(base_lines: list[bytes]) -> None:
    pretty = json.dumps(json.loads(base_lines[1]), sort_keys=True).encode()
    result = _verify_lines([base_lines[0], pretty, *base_lines[2:]])
    assert not result.ok and result.first_broken_seq == 1
    assert result.reason is not None and "byte-for-byte" in result.reason


def test_append_refuses_to_chain_after_a_damaged_last_line(base_lines: list[bytes], tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    log.path.write_bytes(base_lines[0] + b"\n" + base_lines[1][:40] + b"\n")
    with pytest.raises(AuditError, match="last line is not a valid audit event"):
        log.append("approved", actor="alice")

    log.path.write_bytes(base_lines[0] + b"\n" + base_lines[1])
    with pytest.raises(AuditError, match="no final newline"):
        log.append("approved", actor="alice")
    result = log.verify()
    assert not result.ok and result.first_broken_seq == 1


def test_head_reads_a_last_line_longer_than_one_chunk(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    log.append("validated", actor="pipeline")
    big = log.append("drift_detected", actor="monitor", details={"columns": ["c" * 50] * 300})
    assert log.head() == big
    assert log.append("retrain_triggered", actor="monitor").prev_hash == big.hash


def test_anchors_must_be_seq_hash_pairs() -> None:
    with pytest.raises(ConfigError, match="anchor"):
        verify_events([], [(-1, "x")])


def test_filter_events(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    events = _fill(log, 8)
    names = sorted(EVENTS)
    assert filter_events(events, event=names[3]) == [events[3]]
    assert filter_events(events, model_version="1") == events[2:4]
    assert filter_events(events, actor="actor-0") == events[0::3]
    window = filter_events(events, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert window == events[2:4]
    assert filter_events(events, model_version="2", actor="actor-1") == [events[4]]
    with pytest.raises(ConfigError, match="unknown audit event"):
        filter_events(events, event="trainde")
    with pytest.raises(ConfigError, match="no timezone"):
        filter_events(events, since=datetime(2026, 1, 1))


def test_open_audit_log(tmp_path: Path) -> None:
    log = open_audit_log("file", path=tmp_path / "audit.jsonl")
    assert isinstance(log, FileAuditLog)
    pg = open_audit_log("postgres", dsn="postgresql://riskloop:secret@127.0.0.1:1/riskloop")
    assert isinstance(pg, PostgresAuditLog)
    assert "secret" not in repr(pg)
    with pytest.raises(ConfigError, match="unknown audit backend 'sqlite'"):
        open_audit_log("sqlite", path=tmp_path / "audit.jsonl")
    with pytest.raises(ConfigError, match="needs a path"):
        open_audit_log("file")
    with pytest.raises(ConfigError, match="needs a DSN"):
        open_audit_log("postgres")
    with pytest.raises(ConfigError, match="table name"):
        PostgresAuditLog("postgresql://x", table="audit; drop table users")
