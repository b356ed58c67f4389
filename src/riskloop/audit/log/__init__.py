"""The hash-chained audit log; its parts live in the modules of this package."""

from riskloop.audit.log.events import (
    EVENTS,
    GENESIS,
    AuditEvent,
    AuditLog,
    FileAuditLog,
    PostgresAuditLog,
    VerifyResult,
    canonical_json,
    event_hash,
    filter_events,
    open_audit_log,
    verify_events,
)

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
