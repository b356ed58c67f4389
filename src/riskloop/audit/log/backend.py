"""What every audit backend offers, and the part of it that does not depend on the storage.

Both backends append the same way (check the arguments, then under one writer's
lock read the head and store the event that follows it) and read back the same
way (parse every stored record, name the first one that is not an event, and on
:meth:`~StoredAuditLog.verify` also check that each record is still exactly what
the writer stored). :class:`StoredAuditLog` holds that once; a backend supplies
only how it locks, reads and names its records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from riskloop.audit.log.canonical import check_text, json_object
from riskloop.audit.log.events import (
    EVENTS,
    GENESIS,
    AuditEvent,
    VerifyResult,
    event_hash,
    verify_with_problem,
)
from riskloop.errors import AuditError, ConfigError

Record = TypeVar("Record")


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


class StoredAuditLog(ABC, Generic[Record]):
    """The :class:`AuditLog` contract over records a backend stores as ``Record``.

    A subclass sets the nouns and fixes its messages use and implements the
    abstract methods; the messages themselves are written here once, so both
    backends report damage in the same words.
    """

    #: What holds the records and what one record is: "the audit log's last line".
    store_noun: ClassVar[str]
    record_noun: ClassVar[str]
    #: How to recover from an unreadable record found by :meth:`events`, resp. :meth:`head`.
    unreadable_fix: ClassVar[str]
    inspect_fix: ClassVar[str]

    lock_timeout_seconds: float

    def append(
        self,
        event: str,
        *,
        actor: str,
        ids: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        time: datetime | None = None,
    ) -> AuditEvent:
        """Chain one event after the current head, store it durably and return it.

        Raises :class:`ConfigError` for an unknown event or non-JSON details (the
        log is untouched) and :class:`AuditError` if the lock cannot be taken or
        the last record is damaged (appending after it would hide the damage).
        """
        clean_ids, clean_details = _validated_fields(event, actor=actor, ids=ids, details=details, time=time)
        return self._append_after_head(
            lambda prev: _build_event(prev, event, actor=actor, ids=clean_ids, details=clean_details, time=time)
        )

    def events(self) -> list[AuditEvent]:
        """All events in order; raises :class:`AuditError` naming the first unreadable record."""
        out: list[AuditEvent] = []
        for index, record in enumerate(self._read()[0]):
            try:
                out.append(self._parse(record))
            except AuditError as exc:
                raise AuditError(
                    f"{self._label(index, record)} of the audit {self.store_noun} is not a valid "
                    f"audit event: {exc.what}",
                    where=self._where(),
                    fix=self.unreadable_fix,
                ) from exc
        return out

    def verify(self, anchors: Sequence[tuple[int, str]] = ()) -> VerifyResult:
        """Verify the chain and that every record is exactly what the writer stored.

        A record that does not parse, or that was altered in a way its hash does
        not cover (see :meth:`_altered`), or storage cut short after the last
        record, is reported as a broken chain at that record, never raised.
        """
        records, cut_short = self._read()
        parsed: list[AuditEvent] = []
        problem: tuple[int, str] | None = None
        for index, record in enumerate(records):
            label = self._label(index, record)
            try:
                event = self._parse(record)
            except AuditError as exc:
                problem = (index, f"{label} is not a valid audit event: {exc.what}")
                break
            altered = self._altered(record, event)
            if altered is not None:
                problem = (index, f"{label} {altered}")
                break
            parsed.append(event)
        if problem is None and cut_short is not None:
            problem = (len(records) - 1, cut_short)
        return verify_with_problem(parsed, len(records), problem, anchors)

    @abstractmethod
    def head(self) -> AuditEvent | None:
        """The last event, or ``None`` for an empty log."""

    def _parse_head(self, record: Record) -> AuditEvent:
        """The last stored event; an unreadable one is an error, since appending would hide it."""
        try:
            return self._parse(record)
        except AuditError as exc:
            raise AuditError(
                f"the audit {self.store_noun}'s last {self.record_noun} is not a valid audit event: {exc.what}",
                where=self._where(),
                fix=self.inspect_fix,
            ) from exc

    def _lock_timed_out(self, *, where: str, fix: str) -> AuditError:
        """The error for a writer's lock not taken within ``lock_timeout_seconds``."""
        return AuditError(
            f"could not take the audit log lock within {self.lock_timeout_seconds} s",
            where=where,
            fix=fix,
        )

    @abstractmethod
    def _append_after_head(self, build: Callable[[AuditEvent | None], AuditEvent]) -> AuditEvent:
        """Under the writer's lock: ``build`` the event after the head, store it, return it."""

    @abstractmethod
    def _read(self) -> tuple[list[Record], str | None]:
        """All stored records in order, and why the storage ends cut short (``None``: it does not)."""

    @abstractmethod
    def _parse(self, record: Record) -> AuditEvent:
        """The event a record holds; :class:`AuditError` if it holds none."""

    @abstractmethod
    def _label(self, index: int, record: Record) -> str:
        """How messages name the record at 0-based ``index``, e.g. "line 3"."""

    @abstractmethod
    def _altered(self, record: Record, event: AuditEvent) -> str | None:
        """What about ``record`` differs from what the writer stored for ``event``, if anything.

        Phrased to follow the record's label, e.g. "was edited: ...".
        """

    @abstractmethod
    def _where(self) -> str:
        """Where the records live, for error messages."""


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
    check_text(actor, "actor")
    clean_ids: dict[str, str] = {}
    for key, value in (ids or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"audit ids must map strings to strings, got {key!r}: {value!r}",
                where=f"event {event!r}",
                fix="convert ids to str, e.g. ids={'model_version': str(version)}",
            )
        check_text(key, f"ids key {key!r}")
        check_text(value, f"ids[{key!r}]")
        clean_ids[key] = value
    clean_details = json_object(details or {}, "details")
    if time is not None and (time.tzinfo is None or time.utcoffset() is None):
        raise ConfigError(
            f"audit time {time.isoformat()} has no timezone",
            where=f"event {event!r}",
            fix="pass an aware datetime, e.g. datetime.now(UTC)",
        )
    return clean_ids, clean_details
