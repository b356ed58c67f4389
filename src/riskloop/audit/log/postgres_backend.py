"""The PostgreSQL backend: the audit log as rows of a table, for a cluster."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from riskloop.audit.log.backend import StoredAuditLog
from riskloop.audit.log.events import AuditEvent
from riskloop.errors import AuditError, ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    import psycopg

_DEFAULT_TABLE = "riskloop_audit"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COLUMNS = "seq, time, actor, event, ids, details, prev_hash, hash, canonical_json"
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

Row = tuple[Any, ...]


class PostgresAuditLog(StoredAuditLog[Row]):
    """Audit log as rows of a PostgreSQL table, for a cluster; same contract as the file.

    Table ``riskloop_audit`` (created on first append): ``seq bigint primary
    key, time timestamptz, actor, event, ids jsonb, details jsonb, prev_hash,
    hash`` for queries, plus ``canonical_json``: the exact line that was hashed,
    because jsonb reorders keys and rewrites numbers. Reads take events from
    ``canonical_json`` (a row's last column); :meth:`verify` also checks that
    every queryable column still agrees with it, so an ``UPDATE`` of any column
    is detected. Appends run in one transaction holding ``pg_advisory_xact_lock``
    on a key derived from the table name, so there is one writer at a time across
    all clients. A new connection is opened per call (audit events are rare; this
    survives forks).
    """

    store_noun: ClassVar[str] = "table"
    record_noun: ClassVar[str] = "row"
    unreadable_fix: ClassVar[str] = (
        "the row was edited; restore the table from a verified backup (verify() reports every check)"
    )
    inspect_fix: ClassVar[str] = "inspect the table with verify(); restore it from a verified backup"

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

    def head(self) -> AuditEvent | None:
        """The event with the highest seq, or ``None`` for an empty or missing table."""
        with self._session() as conn:
            if not self._table_exists(conn):
                return None
            return self._head(conn)

    def _append_after_head(self, build: Callable[[AuditEvent | None], AuditEvent]) -> AuditEvent:
        """Chain one event after the current head inside one locked transaction."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        with self._session() as conn, conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(self.lock_timeout_seconds * 1000)}ms"))
            )
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            if not self._table_exists(conn):
                conn.execute(sql.SQL(_CREATE_TABLE).format(table=sql.Identifier(self.table)))
            new = build(self._head(conn))
            conn.execute(
                sql.SQL("INSERT INTO {table} (" + _COLUMNS + ") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)").format(
                    table=sql.Identifier(self.table)
                ),
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

    def _head(self, conn: psycopg.Connection[Any]) -> AuditEvent | None:
        """The event with the highest seq in an existing table, read on ``conn``."""
        from psycopg import sql

        row = conn.execute(
            sql.SQL("SELECT canonical_json FROM {table} ORDER BY seq DESC LIMIT 1").format(
                table=sql.Identifier(self.table)
            )
        ).fetchone()
        return None if row is None else self._parse_head(row)

    def _read(self) -> tuple[list[Row], str | None]:
        """Every row in seq order; a table cannot end cut short."""
        from psycopg import sql

        with self._session() as conn:
            if not self._table_exists(conn):
                return [], None
            rows = conn.execute(
                sql.SQL("SELECT " + _COLUMNS + " FROM {table} ORDER BY seq").format(table=sql.Identifier(self.table))
            ).fetchall()
        return rows, None

    def _parse(self, record: Row) -> AuditEvent:
        return AuditEvent.from_json(record[-1])

    def _label(self, index: int, record: Row) -> str:
        return f"line {index + 1} (row seq {record[0]})"

    def _altered(self, record: Row, event: AuditEvent) -> str | None:
        mismatch = _column_mismatch(record, event)
        if mismatch is None and record[-1] != event.to_json():
            mismatch = "canonical_json"
        if mismatch is None:
            return None
        return f"was edited: its {mismatch} column no longer matches the hashed record it was written with"

    def _where(self) -> str:
        return repr(self)

    def _table_exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
        return row is not None and row[0] is not None

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection, closed afterwards; database errors become AuditError."""
        import psycopg

        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout_seconds)
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
            raise self._lock_timed_out(
                where=repr(self),
                fix="another client is appending; retry, or look for a stuck transaction in pg_stat_activity",
            ) from exc
        except psycopg.Error as exc:
            raise AuditError(
                f"PostgreSQL refused an audit log operation: {str(exc).strip()}",
                where=repr(self),
                fix="check the role's privileges on the audit table and the server log",
            ) from exc


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
