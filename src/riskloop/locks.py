"""One holder at a time, across every pod that shares the platform: for read-modify-write of shared state.

The monitor state lives on the object store, which has no compare-and-swap that
pyarrow exposes. Two monitoring runs for the same model (the schedule, and a run
started by hand from the Kubeflow UI) would each read the state, decide, and
write it back: the later write would drop the other's day. So the
read-decide-write is done under a lock named after the model:

- with the platform's PostgreSQL (the audit backend ``postgres``, as on a cluster):
  a session-level advisory lock, held by one connection and released when it closes
  (also when the holder dies);
- otherwise (one machine): a file lock in the state dir.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from riskloop.errors import RiskloopError, ServiceUnavailable

if TYPE_CHECKING:
    from riskloop.settings import Settings

POLL_SECONDS = 0.25


class LockTimeout(RiskloopError):
    """Another process held the lock for longer than the caller would wait."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name`` (PostgreSQL's bigint)."""
    return int.from_bytes(hashlib.sha256(f"riskloop:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(s: Settings, name: str, *, timeout_seconds: float = 300.0) -> Iterator[None]:
    """Hold the lock ``name`` for the ``with`` block, waiting up to ``timeout_seconds`` for it."""
    if s.audit.backend == "postgres" and s.audit.postgres_dsn:
        with _advisory(s.audit.postgres_dsn, name, timeout_seconds):
            yield
        return
    from filelock import FileLock
    from filelock import Timeout as FileLockTimeout

    path = s.root / "locks" / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout_seconds):
            yield
    except FileLockTimeout as exc:
        raise _timeout(name, timeout_seconds, where=str(path)) from exc


@contextmanager
def _advisory(dsn: str, name: str, timeout_seconds: float) -> Iterator[None]:
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(
            f"cannot connect to PostgreSQL to take the lock {name!r}: {str(exc).strip()}",
            fix="check that the server is running and RISKLOOP_AUDIT__POSTGRES_DSN is right",
        ) from exc
    with conn:
        key = lock_key(name)
        deadline = time.monotonic() + timeout_seconds
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                break
            if time.monotonic() >= deadline:
                raise _timeout(name, timeout_seconds, where=f"PostgreSQL advisory lock {key}")
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _timeout(name: str, seconds: float, *, where: str) -> LockTimeout:
    return LockTimeout(
        f"another process held the lock {name!r} for more than {seconds:g} s",
        where=where,
        fix="another run of the same job is still going: wait for it, or find it (for PostgreSQL: "
        "pg_locks where locktype = 'advisory') and stop it if it is stuck",
    )


__all__ = ["LockTimeout", "exclusive", "lock_key"]
