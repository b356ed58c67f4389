"""Append-only, hash-chained audit log of every lifecycle decision.

Each event is one JSON object carrying a 0-based ``seq``, the ``prev_hash`` of the
event before it (``GENESIS`` for the first) and its own ``hash``: the sha256 of
the canonical JSON of all its other fields. Editing, inserting, removing or
reordering events therefore breaks the chain at or before the tampered place,
and :func:`verify_events` says where in a sentence a person can act on.

What the chain alone cannot see, by construction:

- truncation: a log cut after line *n* is still a valid chain of *n* lines;
- a consistent rewrite: whoever recomputes every hash from some line onwards
  produces a valid chain again;
- a forged event appended at the end with a correct ``prev_hash`` and ``hash``:
  it is indistinguishable from a legitimate append (writers must be trusted).

Anchors close the first two gaps: ``(seq, hash)`` pairs recorded somewhere the
log's writer cannot rewrite (e.g. a tag on each registered MLflow model version).
An anchored line that is missing or carries another hash fails verification.

Two backends share the :class:`AuditLog` interface: :class:`FileAuditLog`
(JSON lines, one writer at a time through a file lock) for one machine and
:class:`PostgresAuditLog` (a table, one writer at a time through a transaction
advisory lock) for a cluster. :func:`open_audit_log` picks one.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol

import filelock
import numpy as np

from riskloop.errors import (
    AuditChainBroken,
    AuditError,
    ConfigError,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    import psycopg

EVENTS: frozenset[str] = frozenset(
    {
        "validated",
        "quarantined",
        "trained",
        "gated",
        "registered",
        "run_succeeded",
        "run_failed",
        "deployed",
        "canary_deployed",
        "canary_traffic_set",
        "canary_verdict",
        "promoted",
        "rolled_back",
        "champion_restored",
        "drift_detected",
        "retrain_triggered",
        "approved",
        "approval_refused",
    }
)

GENESIS = "0" * 64

_FIELDS = ("seq", "time", "actor", "event", "ids", "details", "prev_hash", "hash")
_DEFAULT_TABLE = "riskloop_audit"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TAIL_CHUNK_BYTES = 4096


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and written: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(
    *,
    seq: int,
    time: str,
    actor: str,
    event: str,
    ids: Mapping[str, str],
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """sha256 hex over the canonical JSON of every field of an event except ``hash``."""
    body = {
        "seq": seq,
        "time": time,
        "actor": actor,
        "event": event,
        "ids": dict(ids),
        "details": dict(details),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _malformed(what: str) -> AuditError:
    return AuditError(
        what,
        fix="the line was damaged or edited by hand; restore the log from a verified copy "
        "(verify() reports every check)",
    )


@dataclass(frozen=True)
class AuditEvent:
    """One line of the audit log.

    ``time`` is ISO-8601 UTC with microseconds; ``ids`` names what the event is
    about (``model_version``, ``run_id``, ``pipeline_run_id``, ``request_id``,
    ``dataset``...); ``details`` holds the decision's inputs and outcome as JSON
    values. ``hash`` covers every other field (see :func:`event_hash`).
    """

    seq: int
    time: str
    actor: str
    event: str
    ids: dict[str, str]
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> str:
        """The canonical JSON line (without newline) exactly as the log stores it."""
        return canonical_json(
            {
                "seq": self.seq,
                "time": self.time,
                "actor": self.actor,
                "event": self.event,
                "ids": self.ids,
                "details": self.details,
                "prev_hash": self.prev_hash,
                "hash": self.hash,
            }
        )

    def computed_hash(self) -> str:
        """The hash these fields should carry; differs from ``hash`` if the event was edited."""
        return event_hash(
            seq=self.seq,
            time=self.time,
            actor=self.actor,
            event=self.event,
            ids=self.ids,
            details=self.details,
            prev_hash=self.prev_hash,
        )

    @classmethod
    def from_json(cls, line: str) -> AuditEvent:
        """Parse one stored line; raises :class:`AuditError` saying what is malformed.

        Only the shape is checked here (fields present, of the right JSON types);
        whether the event belongs in its chain is :func:`verify_events`' job.
        """
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _malformed(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(raw, dict):
            raise _malformed(f"a JSON {type(raw).__name__} instead of an object")
        if set(raw) != set(_FIELDS):
            missing = sorted(set(_FIELDS) - set(raw))
            extra = sorted(set(raw) - set(_FIELDS))
            raise _malformed(f"wrong fields (missing {missing}, unexpected {extra})")
        seq = raw["seq"]
        if type(seq) is not int:
            raise _malformed(f"seq is {seq!r}, not an integer")
        for name in ("time", "actor", "event", "prev_hash", "hash"):
            if not isinstance(raw[name], str):
                raise _malformed(f"{name} is {raw[name]!r}, not a string")
        ids = raw["ids"]
        if not isinstance(ids, dict) or not all(isinstance(v, str) for v in ids.values()):
            raise _malformed(f"ids is {ids!r}, not an object of strings")
        if not isinstance(raw["details"], dict):
            raise _malformed(f"details is {raw['details']!r}, not an object")
        return cls(
            seq=seq,
            time=raw["time"],
            actor=raw["actor"],
            event=raw["event"],
            ids=ids,
            details=raw["details"],
            prev_hash=raw["prev_hash"],
            hash=raw["hash"],
        )


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of verifying a chain.

    ``events`` counts the lines examined; ``head_hash`` is the last event's hash
    when the chain verifies (record it as an anchor), else ``None``.
    ``first_broken_seq`` is the first seq that cannot be trusted and ``reason``
    a sentence naming the line (``seq + 1``) and what is wrong.
    """

    ok: bool
    events: int
    head_hash: str | None
    first_broken_seq: int | None
    reason: str | None

    def raise_if_broken(self, *, where: str | None = None) -> None:
        """Raise :class:`AuditChainBroken` carrying ``reason`` unless the chain verified."""
        if not self.ok:
            raise AuditChainBroken(
                f"the audit log does not verify: {self.reason}",
                where=where,
                fix="restore the log from a verified copy and investigate who changed it; "
                "do not append to it until then",
            )


def verify_events(
    events: Sequence[AuditEvent], anchors: Sequence[tuple[int, str]] = ()
) -> VerifyResult:
    """Verify a whole chain, optionally against anchors recorded elsewhere.

    Checks, line by line: ``seq`` runs 0, 1, 2...; each hash recomputes from its
    fields; each event is one of :data:`EVENTS`; each ``prev_hash`` is the hash of
    the line before (``GENESIS`` for the first). Then each anchor ``(seq, hash)``:
    the anchored line must exist (else the log was truncated) and carry that hash
    (else it was rewritten after the last matching anchor). The first problem
    found is reported; a valid chain returns ``ok=True`` and its head hash.
    """
    anchored = _anchor_map(anchors)
    prev = GENESIS
    last_good_anchor = -1
    for index, event in enumerate(events):
        problem = _chain_problem(index, event, prev)
        if problem is None:
            for expected in anchored.get(index, ()):
                if expected != event.hash:
                    start = last_good_anchor + 1
                    reason = (
                        f"line {index + 1} does not match the anchor recorded for seq {index} "
                        f"(anchor hash {expected[:12]}…, line hash {event.hash[:12]}…): the log "
                        f"was rewritten somewhere in lines {start + 1}–{index + 1}"
                    )
                    problem = (start, reason)
                    break
            else:
                if index in anchored:
                    last_good_anchor = index
        if problem is not None:
            return VerifyResult(False, len(events), None, problem[0], problem[1])
        prev = event.hash
    beyond = sorted(seq for seq in anchored if seq >= len(events))
    if beyond:
        return VerifyResult(
            False,
            len(events),
            None,
            len(events),
            f"the log ends at line {len(events)} but an anchor records line {beyond[-1] + 1} "
            f"(seq {beyond[-1]}, hash {anchored[beyond[-1]][0][:12]}…): the log was truncated, "
            f"{_lines(len(events) + 1, beyond[-1] + 1)} missing",
        )
    return VerifyResult(True, len(events), prev if events else None, None, None)


def _anchor_map(anchors: Sequence[tuple[int, str]]) -> dict[int, list[str]]:
    anchored: dict[int, list[str]] = {}
    for anchor in anchors:
        if len(anchor) != 2 or type(anchor[0]) is not int or anchor[0] < 0:
            raise ConfigError(
                f"invalid audit anchor {anchor!r}",
                fix="pass anchors as (seq, hash) pairs with seq >= 0",
            )
        anchored.setdefault(anchor[0], []).append(anchor[1])
    return anchored


def _chain_problem(index: int, event: AuditEvent, prev: str) -> tuple[int, str] | None:
    """The first thing wrong with ``event`` at position ``index``, as (broken seq, reason)."""
    line = index + 1
    if event.seq < 0:
        return index, f"line {line} has the impossible seq {event.seq}: it was edited"
    if event.seq > index:
        return index, (
            f"line {line} has seq {event.seq} where seq {index} was expected: "
            f"{_lines(index + 1, event.seq)} missing before it (removed or moved)"
        )
    if event.seq < index:
        return event.seq, (
            f"line {line} has seq {event.seq} where seq {index} was expected: a line was "
            f"inserted before it, or lines were duplicated or reordered"
        )
    if event.computed_hash() != event.hash:
        return index, f"line {line} was edited: its fields no longer match its hash"
    if event.event not in EVENTS:
        return index, (
            f"line {line} records the unknown event {event.event!r} under a recomputed hash: "
            f"it was forged"
        )
    if event.prev_hash != prev:
        if index == 0:
            return 0, (
                "line 1 does not start the chain (its prev_hash is not the genesis hash): "
                "it was forged or the log's beginning was replaced"
            )
        # The line itself is intact, so what broke is its predecessor or the link.
        return index - 1, (
            f"line {line} does not follow line {index}: its prev_hash is not the hash of "
            f"line {index}, so line {index} was replaced or edited with a recomputed hash, "
            f"or lines were inserted or removed between them"
        )
    return None


def _lines(first: int, last: int) -> str:
    """'line 3 is' or 'lines 3–5 are', 1-based."""
    return f"line {first} is" if first == last else f"lines {first}–{last} are"


def _verify_with_problem(
    parsed: Sequence[AuditEvent],
    total: int,
    problem: tuple[int, str] | None,
    anchors: Sequence[tuple[int, str]],
) -> VerifyResult:
    """Verify ``parsed`` (the lines before the first unreadable one) and report in order."""
    if problem is None:
        return verify_events(parsed, anchors)
    inside = [(seq, h) for seq, hashes in _anchor_map(anchors).items() for h in hashes]
    before = verify_events(parsed, [(seq, h) for seq, h in inside if seq < len(parsed)])
    if not before.ok:
        return VerifyResult(False, total, None, before.first_broken_seq, before.reason)
    return VerifyResult(False, total, None, problem[0], problem[1])


class AuditLog(Protocol):
    """What every audit backend offers. Appends never rewrite; reads never repair."""

    def append(
        self,
        event: str,
        *,
        actor: str,
        ids: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        time: datetime | None = None,
    ) -> AuditEvent:
        """Chain one event after the current head and return it as stored."""
        ...

    def events(self) -> list[AuditEvent]:
        """All events in order; raises :class:`AuditError` naming an unreadable line."""
        ...

    def head(self) -> AuditEvent | None:
        """The last event, or ``None`` for an empty log."""
        ...

    def verify(self, anchors: Sequence[tuple[int, str]] = ()) -> VerifyResult:
        """Verify the stored chain; damage is reported in the result, never raised."""
        ...


def _build_event(
    prev: AuditEvent | None,
    event: str,
    *,
    actor: str,
    ids: dict[str, str],
    details: dict[str, Any],
    time: datetime | None,
) -> AuditEvent:
    """The event that follows ``prev``, from arguments checked by :func:`_validated_fields`.

    Called under the writer's lock, so that a default time (now) follows seq order.
    """
    seq = 0 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    stamp = (time or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    return AuditEvent(
        seq=seq,
        time=stamp,
        actor=actor,
        event=event,
        ids=ids,
        details=details,
        prev_hash=prev_hash,
        hash=event_hash(
            seq=seq,
            time=stamp,
            actor=actor,
            event=event,
            ids=ids,
            details=details,
            prev_hash=prev_hash,
        ),
    )


def _validated_fields(
    event: str,
    *,
    actor: str,
    ids: Mapping[str, str] | None,
    details: Mapping[str, Any] | None,
    time: datetime | None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Check an append's arguments before taking any lock; returns JSON-native (ids, details)."""
    if event not in EVENTS:
        raise ConfigError(
            f"unknown audit event {event!r}",
            fix=f"use one of: {', '.join(sorted(EVENTS))}",
        )
    if not isinstance(actor, str) or not actor.strip():
        raise ConfigError(
            f"audit actor must be a non-empty string, got {actor!r}",
            where=f"event {event!r}",
            fix="pass who acted, e.g. the service account or user name",
        )
    _check_text(actor, "actor")
    clean_ids: dict[str, str] = {}
    for key, value in (ids or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"audit ids must map strings to strings, got {key!r}: {value!r}",
                where=f"event {event!r}",
                fix="convert ids to str, e.g. ids={'model_version': str(version)}",
            )
        _check_text(key, f"ids key {key!r}")
        _check_text(value, f"ids[{key!r}]")
        clean_ids[key] = value
    clean_details = _json_object(details or {}, "details")
    if time is not None and (time.tzinfo is None or time.utcoffset() is None):
        raise ConfigError(
            f"audit time {time.isoformat()} has no timezone",
            where=f"event {event!r}",
            fix="pass an aware datetime, e.g. datetime.now(UTC)",
        )
    return clean_ids, clean_details


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"audit {where} is not encodable as UTF-8 ({exc.reason})",
            fix="remove lone surrogate characters from the value",
        ) from exc


def _json_object(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    converted = _json_value(value, where)
    assert isinstance(converted, dict)
    return converted


def _json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, converting the usual suspects, else a clear error.

    numpy scalars and arrays, datetimes, dates, times, paths, UUIDs and enums are
    converted (datetimes to ISO-8601 strings, paths to strings); NaN, infinity,
    Decimals, sets and other objects are refused because any conversion would
    lose or invent information.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _json_value(value.value, where)
    if isinstance(value, str):
        _check_text(value, where)
        return str(value)
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value))
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist(), where)
    if isinstance(value, np.generic):
        return _json_value(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(
                f"audit {where} is {value}, which JSON cannot represent",
                fix="record None, or the reason the value is undefined as a string",
            )
        return float(value)
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, PurePath | uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"audit {where} has the non-string key {key!r}",
                    fix="use string keys in audit details",
                )
            _check_text(key, f"{where} key {key!r}")
            out[key] = _json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Decimal):
        hint = "convert it to float, or to str to keep every digit"
    elif isinstance(value, set | frozenset):
        hint = "pass a sorted list (a set has no stable order to hash)"
    else:
        hint = "convert it to a JSON value (str, number, bool, None, list, dict)"
    raise ConfigError(
        f"audit {where} is a {type(value).__name__}, which is not JSON-serialisable",
        fix=hint,
    )


class FileAuditLog:
    """Audit log as JSON lines in one file, for one machine.

    One writer at a time: every append takes ``filelock.FileLock(path + ".lock")``
    and re-reads the head (only the last line) under it, so processes appending
    concurrently still build one valid chain. Each line is fsynced before the
    lock is released. Parent directories are created on the first append.
    Reads take the same lock when they can (so they never see half a line), and
    read without it when the directory is not writable (an archived copy).
    """

    def __init__(self, path: Path, *, lock_timeout_seconds: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout_seconds = lock_timeout_seconds

    def __repr__(self) -> str:
        return f"FileAuditLog({str(self.path)!r})"

    def append(
        self,
        event: str,
        *,
        actor: str,
        ids: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        time: datetime | None = None,
    ) -> AuditEvent:
        """Chain one event after the current head, write it durably and return it.

        Raises :class:`ConfigError` for an unknown event or non-JSON details (the
        log is untouched) and :class:`AuditError` if the lock cannot be taken or
        the last line is damaged (appending after it would hide the damage).
        """
        clean_ids, clean_details = _validated_fields(
            event, actor=actor, ids=ids, details=details, time=time
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(for_write=True):
            new = _build_event(
                self._read_head(),
                event,
                actor=actor,
                ids=clean_ids,
                details=clean_details,
                time=time,
            )
            with self.path.open("ab") as handle:
                handle.write(new.to_json().encode("utf-8") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        return new

    def events(self) -> list[AuditEvent]:
        """All events in order; raises :class:`AuditError` naming the first unreadable line."""
        with self._lock(for_write=False):
            lines, _ = self._read_lines()
        out: list[AuditEvent] = []
        for index, raw in enumerate(lines):
            try:
                out.append(_parse_line(raw))
            except AuditError as exc:
                raise AuditError(
                    f"line {index + 1} of the audit log is not a valid audit event: {exc.what}",
                    where=str(self.path),
                    fix="the file was damaged or edited by hand; restore it from a verified "
                    "copy (verify() reports every check)",
                ) from exc
        return out

    def head(self) -> AuditEvent | None:
        """The last event, read from the end of the file without parsing the rest."""
        with self._lock(for_write=False):
            return self._read_head()

    def verify(self, anchors: Sequence[tuple[int, str]] = ()) -> VerifyResult:
        """Verify the file line by line, including that each line is byte-for-byte canonical.

        An unreadable line, a line not in the canonical form the writer produces
        (e.g. touched by an editor) or a missing final newline is reported as a
        broken chain at that line, never raised.
        """
        with self._lock(for_write=False):
            lines, complete = self._read_lines()
        parsed: list[AuditEvent] = []
        problem: tuple[int, str] | None = None
        for index, raw in enumerate(lines):
            try:
                event = _parse_line(raw)
            except AuditError as exc:
                problem = (index, f"line {index + 1} is not a valid audit event: {exc.what}")
                break
            if raw != event.to_json().encode("utf-8"):
                reason = (
                    f"line {index + 1} is not byte-for-byte the line the writer produced "
                    f"(it was re-encoded or edited by hand)"
                )
                problem = (index, reason)
                break
            parsed.append(event)
        if problem is None and not complete:
            reason = (
                f"line {len(lines)} has no final newline: the last write was cut short or "
                f"the file was edited"
            )
            problem = (len(lines) - 1, reason)
        return _verify_with_problem(parsed, len(lines), problem, anchors)

    @contextmanager
    def _lock(self, *, for_write: bool) -> Iterator[None]:
        if not for_write and not (self.path.exists() and os.access(self.path.parent, os.W_OK)):
            # Nothing written yet, or a read-only copy handed to an auditor: no writer to
            # wait for, and a read must not create files.
            yield
            return
        lock = filelock.FileLock(f"{self.path}.lock", timeout=self.lock_timeout_seconds)
        try:
            lock.acquire()
        except filelock.Timeout as exc:
            raise AuditError(
                f"could not take the audit log lock within {self.lock_timeout_seconds} s",
                where=f"{self.path}.lock",
                fix="another process is writing the audit log; retry, or find the process "
                "holding the lock",
            ) from exc
        try:
            yield
        finally:
            lock.release()

    def _read_lines(self) -> tuple[list[bytes], bool]:
        """The file's lines, and whether it ends with a newline (an empty file does)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], True
        # Split on b"\n" only: str.splitlines would also split inside values at U+2028 etc.
        lines = data.split(b"\n")
        complete = lines[-1] == b""
        if complete:
            lines.pop()
        return lines, complete

    def _read_head(self) -> AuditEvent | None:
        """Parse the last line only, reading the file backwards in small chunks."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        with handle:
            end = handle.seek(0, os.SEEK_END)
            if end == 0:
                return None
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                raise AuditError(
                    "the audit log's last line has no final newline (a cut-short write or an "
                    "edit); appending after it would hide the damage",
                    where=str(self.path),
                    fix="inspect the file with verify(); restore it from a verified copy",
                )
            tail = b""
            position = end - 1
            while position > 0 and b"\n" not in tail:
                step = min(_TAIL_CHUNK_BYTES, position)
                position -= step
                handle.seek(position)
                tail = handle.read(step) + tail
            last = tail.rsplit(b"\n", 1)[-1] if b"\n" in tail else tail
        try:
            return _parse_line(last)
        except AuditError as exc:
            raise AuditError(
                f"the audit log's last line is not a valid audit event: {exc.what}",
                where=str(self.path),
                fix="inspect the file with verify(); restore it from a verified copy",
            ) from exc


def _parse_line(raw: bytes) -> AuditEvent:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"not UTF-8 (byte {exc.start})") from exc
    return AuditEvent.from_json(text)


class PostgresAuditLog:
    """Audit log as rows of a PostgreSQL table, for a cluster; same contract as the file.

    Table ``riskloop_audit`` (created on first append): ``seq bigint primary
    key, time timestamptz, actor, event, ids jsonb, details jsonb, prev_hash,
    hash`` for queries, plus ``canonical_json``: the exact line that was hashed,
    because jsonb reorders keys and rewrites numbers. Reads take events from
    ``canonical_json``; :meth:`verify` also checks that every queryable column
    still agrees with it, so an ``UPDATE`` of any column is detected. Appends run
    in one transaction holding ``pg_advisory_xact_lock`` on a key derived from the
    table name, so there is one writer at a time across all clients. A new
    connection is opened per call (audit events are rare; this survives forks).
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = _DEFAULT_TABLE,
        lock_timeout_seconds: float = 60.0,
        connect_timeout_seconds: int = 10,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigError(
                f"invalid audit table name {table!r}",
                fix="use lower-case letters, digits and underscores, starting with a letter",
            )
        self.dsn = dsn
        self.table = table
        self.lock_timeout_seconds = lock_timeout_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        digest = hashlib.sha256(f"riskloop.audit:{table}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)

    def __repr__(self) -> str:
        return f"PostgresAuditLog({_redacted(self.dsn)!r}, table={self.table!r})"

    def append(
        self,
        event: str,
        *,
        actor: str,
        ids: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        time: datetime | None = None,
    ) -> AuditEvent:
        """Chain one event after the current head inside one locked transaction."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        clean_ids, clean_details = _validated_fields(
            event, actor=actor, ids=ids, details=details, time=time
        )
        table = sql.Identifier(self.table)
        with self._session() as conn, conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{int(self.lock_timeout_seconds * 1000)}ms")
                )
            )
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            if not self._table_exists(conn):
                conn.execute(sql.SQL(_CREATE_TABLE).format(table=table))
            row = conn.execute(
                sql.SQL(
                    "SELECT canonical_json FROM {table} ORDER BY seq DESC LIMIT 1"
                ).format(table=table)
            ).fetchone()
            prev = None if row is None else self._parse_head(row[0])
            new = _build_event(
                prev, event, actor=actor, ids=clean_ids, details=clean_details, time=time
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {table} (seq, time, actor, event, ids, details, "
                    "prev_hash, hash, canonical_json) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(table=table),
                (
                    new.seq,
                    datetime.fromisoformat(new.time),
                    new.actor,
                    new.event,
                    Jsonb(new.ids),
                    Jsonb(new.details),
                    new.prev_hash,
                    new.hash,
                    new.to_json(),
                ),
            )
        return new

    def events(self) -> list[AuditEvent]:
        """All events in seq order, from ``canonical_json``; :class:`AuditError` names a bad row."""
        out: list[AuditEvent] = []
        for index, row in enumerate(self._rows()):
            try:
                out.append(AuditEvent.from_json(row[-1]))
            except AuditError as exc:
                raise AuditError(
                    f"line {index + 1} (row seq {row[0]}) of the audit table is not a valid "
                    f"audit event: {exc.what}",
                    where=repr(self),
                    fix="the row was edited; restore the table from a verified backup "
                    "(verify() reports every check)",
                ) from exc
        return out

    def head(self) -> AuditEvent | None:
        """The event with the highest seq, or ``None`` for an empty or missing table."""
        from psycopg import sql

        with self._session() as conn:
            if not self._table_exists(conn):
                return None
            row = conn.execute(
                sql.SQL("SELECT canonical_json FROM {table} ORDER BY seq DESC LIMIT 1").format(
                    table=sql.Identifier(self.table)
                )
            ).fetchone()
        return None if row is None else self._parse_head(row[0])

    def verify(self, anchors: Sequence[tuple[int, str]] = ()) -> VerifyResult:
        """Verify the chain and that every row's columns agree with its canonical JSON."""
        rows = self._rows()
        parsed: list[AuditEvent] = []
        problem: tuple[int, str] | None = None
        for index, row in enumerate(rows):
            try:
                event = AuditEvent.from_json(row[-1])
            except AuditError as exc:
                reason = (
                    f"line {index + 1} (row seq {row[0]}) is not a valid audit event: "
                    f"{exc.what}"
                )
                problem = (index, reason)
                break
            mismatch = _column_mismatch(row, event)
            if mismatch is None and row[-1] != event.to_json():
                mismatch = "canonical_json"
            if mismatch is not None:
                reason = (
                    f"line {index + 1} (row seq {row[0]}) was edited: its {mismatch} column "
                    f"no longer matches the hashed record it was written with"
                )
                problem = (index, reason)
                break
            parsed.append(event)
        return _verify_with_problem(parsed, len(rows), problem, anchors)

    def _rows(self) -> list[tuple[Any, ...]]:
        from psycopg import sql

        with self._session() as conn:
            if not self._table_exists(conn):
                return []
            return conn.execute(
                sql.SQL(
                    "SELECT seq, time, actor, event, ids, details, prev_hash, hash, "
                    "canonical_json FROM {table} ORDER BY seq"
                ).format(table=sql.Identifier(self.table))
            ).fetchall()

    def _table_exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
        return row is not None and row[0] is not None

    def _parse_head(self, text: str) -> AuditEvent:
        try:
            return AuditEvent.from_json(text)
        except AuditError as exc:
            raise AuditError(
                f"the audit table's last row is not a valid audit event: {exc.what}",
                where=repr(self),
                fix="inspect the table with verify(); restore it from a verified backup",
            ) from exc

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection, closed afterwards; database errors become AuditError."""
        import psycopg

        try:
            conn = psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=self.connect_timeout_seconds
            )
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(
                f"cannot connect to PostgreSQL for the audit log: {str(exc).strip()}",
                where=_redacted(self.dsn),
                fix="check that the server is running and RISKLOOP_AUDIT__POSTGRES_DSN is right",
            ) from exc
        try:
            with conn:
                yield conn
        except psycopg.errors.LockNotAvailable as exc:
            raise AuditError(
                f"could not take the audit log lock within {self.lock_timeout_seconds} s",
                where=repr(self),
                fix="another client is appending; retry, or look for a stuck transaction "
                "in pg_stat_activity",
            ) from exc
        except psycopg.Error as exc:
            raise AuditError(
                f"PostgreSQL refused an audit log operation: {str(exc).strip()}",
                where=repr(self),
                fix="check the role's privileges on the audit table and the server log",
            ) from exc


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    seq bigint PRIMARY KEY,
    time timestamptz NOT NULL,
    actor text NOT NULL,
    event text NOT NULL,
    ids jsonb NOT NULL,
    details jsonb NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    canonical_json text NOT NULL
)
"""


def _column_mismatch(row: Sequence[Any], event: AuditEvent) -> str | None:
    """Name the first queryable column that disagrees with the hashed record, if any."""
    seq, stamp, actor, name, ids, details, prev_hash, hash_ = row[:8]
    if seq != event.seq:
        return "seq"
    try:
        same_time = stamp == datetime.fromisoformat(event.time)
    except (TypeError, ValueError):
        same_time = False
    if not same_time:
        return "time"
    if actor != event.actor:
        return "actor"
    if name != event.event:
        return "event"
    if not _same_json(ids, event.ids):
        return "ids"
    if not _same_json(details, event.details):
        return "details"
    if prev_hash != event.prev_hash:
        return "prev_hash"
    if hash_ != event.hash:
        return "hash"
    return None


def _same_json(left: Any, right: Any) -> bool:
    """JSON equality as jsonb sees it: numbers by value, but ``true`` is not ``1``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    return type(left) is type(right) and bool(left == right)


def _redacted(dsn: str) -> str:
    """The DSN without its password, for messages."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # it may still contain a password: show nothing
        return "<unparseable DSN>"
    params.pop("password", None)
    return make_conninfo("", **params)


def open_audit_log(
    backend: str, *, path: Path | None = None, dsn: str | None = None
) -> AuditLog:
    """The audit log for ``backend``: ``"file"`` (needs ``path``) or ``"postgres"`` (``dsn``)."""
    if backend == "file":
        if path is None:
            raise ConfigError(
                "the file audit backend needs a path",
                fix="pass path=settings.audit_path",
            )
        return FileAuditLog(path)
    if backend == "postgres":
        if not dsn:
            raise ConfigError(
                "the postgres audit backend needs a DSN",
                fix="set RISKLOOP_AUDIT__POSTGRES_DSN, e.g. postgresql://user@host:5432/db",
            )
        return PostgresAuditLog(dsn)
    raise ConfigError(
        f"unknown audit backend {backend!r}",
        where="RISKLOOP_AUDIT__BACKEND",
        fix="use 'file' or 'postgres'",
    )


def filter_events(
    events: Sequence[AuditEvent],
    *,
    event: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
) -> list[AuditEvent]:
    """Events matching every given criterion, in their original order.

    ``model_version`` matches ``ids["model_version"]``; the time window is
    ``since <= time < until``, both timezone-aware.
    """
    if event is not None and event not in EVENTS:
        raise ConfigError(
            f"unknown audit event {event!r}", fix=f"use one of: {', '.join(sorted(EVENTS))}"
        )
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise ConfigError(
                f"{name}={bound.isoformat()} has no timezone",
                fix="pass an aware datetime, e.g. datetime(2026, 1, 1, tzinfo=UTC)",
            )
    out: list[AuditEvent] = []
    for item in events:
        if event is not None and item.event != event:
            continue
        if model_version is not None and item.ids.get("model_version") != model_version:
            continue
        if actor is not None and item.actor != actor:
            continue
        if since is not None or until is not None:
            stamp = datetime.fromisoformat(item.time)
            if since is not None and stamp < since:
                continue
            if until is not None and stamp >= until:
                continue
        out.append(item)
    return out
