"""Audit events and their hash chain: the event model, hashing and chain verification.

Each event is one JSON object carrying a 0-based ``seq``, the ``prev_hash`` of the
event before it (``GENESIS`` for the first) and its own ``hash``: the sha256 of
the canonical JSON of all its other fields. Editing, inserting, removing or
reordering events therefore breaks the chain at or before the tampered place,
and :func:`verify_events` says where in a sentence a person can act on. Nothing
here knows where events are stored; the backends hand their records over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from riskloop.audit.log.canonical import canonical_json
from riskloop.errors import AuditChainBroken, AuditError, ConfigError

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


def malformed(what: str) -> AuditError:
    """The error for a stored record that is not an event; backends say which record."""
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
            raise malformed(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(raw, dict):
            raise malformed(f"a JSON {type(raw).__name__} instead of an object")
        if set(raw) != set(_FIELDS):
            missing = sorted(set(_FIELDS) - set(raw))
            extra = sorted(set(raw) - set(_FIELDS))
            raise malformed(f"wrong fields (missing {missing}, unexpected {extra})")
        seq = raw["seq"]
        if type(seq) is not int:
            raise malformed(f"seq is {seq!r}, not an integer")
        for name in ("time", "actor", "event", "prev_hash", "hash"):
            if not isinstance(raw[name], str):
                raise malformed(f"{name} is {raw[name]!r}, not a string")
        ids = raw["ids"]
        if not isinstance(ids, dict) or not all(isinstance(v, str) for v in ids.values()):
            raise malformed(f"ids is {ids!r}, not an object of strings")
        if not isinstance(raw["details"], dict):
            raise malformed(f"details is {raw['details']!r}, not an object")
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


def verify_events(events: Sequence[AuditEvent], anchors: Sequence[tuple[int, str]] = ()) -> VerifyResult:
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
        return index, (f"line {line} records the unknown event {event.event!r} under a recomputed hash: it was forged")
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


def verify_with_problem(
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
        raise ConfigError(f"unknown audit event {event!r}", fix=f"use one of: {', '.join(sorted(EVENTS))}")
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
