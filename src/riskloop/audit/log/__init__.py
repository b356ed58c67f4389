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

Modules: ``canonical`` (the hashed serialisation), ``events`` (event model, hash
chain, verification), ``backend`` (the interface and what both backends share),
``file_backend`` and ``postgres_backend``. Import from this package.
"""

from __future__ import annotations

from pathlib import Path

from riskloop.audit.log.backend import AuditLog
from riskloop.audit.log.canonical import canonical_json
from riskloop.audit.log.events import (
    EVENTS,
    GENESIS,
    AuditEvent,
    VerifyResult,
    event_hash,
    filter_events,
    verify_events,
)
from riskloop.audit.log.file_backend import FileAuditLog
from riskloop.audit.log.postgres_backend import PostgresAuditLog
from riskloop.errors import ConfigError

__all__ = [
    "EVENTS",
    "GENESIS",
    "AuditEvent",
    "AuditLog",
    "FileAuditLog",
    "PostgresAuditLog",
    "VerifyResult",
    "canonical_json",
    "event_hash",
    "filter_events",
    "open_audit_log",
    "verify_events",
]


def open_audit_log(backend: str, *, path: Path | None = None, dsn: str | None = None) -> AuditLog:
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
