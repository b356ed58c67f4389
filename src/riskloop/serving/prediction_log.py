"""The prediction log: every scored instance, appended off the request path to date-partitioned parquet.

Layout under ``root`` (a local directory, or an object-store prefix such as
``s3://riskloop/state/predictions``: see :mod:`riskloop.storage`)::

    date=YYYY-MM-DD/part-<pid>-<seq>-<host>.parquet

``date`` is the UTC date of each row's ``time`` (one flush may write several
dates). ``seq`` is per process and increasing; it starts at the process's start
(or fork) time in microseconds, so a later process that reuses a pid cannot reuse a name
(writing a file takes far longer than a microsecond); on a cluster, where every
replica is pid 1 of its own pod, the host name (the pod's name) is in the file
name too. A reader never sees half a file (a local file is written under a
hidden temporary name and renamed; an object appears once its upload completes).
Any number of processes, on any number of machines, may write to one root.

Columns: :data:`PREDICTION_COLUMNS`, then ``input_<name>`` for each raw
transaction field and ``feature_<name>`` (float64) for each model feature, in
the order first seen. The fixed columns have fixed types (strings, a UTC
``time``, float64 ``score``/``threshold``/``latency_ms``, bool ``unknown_card``);
``transaction_id`` holds the instance's id (the spec's ``id_column``, empty when
an instance of a raw-column spec carries none); ``reasons`` holds the decision's
top reasons as a JSON list of ``{feature, text, value, contribution}`` (every
decision of a raw-column model, e.g. for a credit adverse-action notice; a
fraud decision only when its client asked for reasons), else empty;
an input column is typed by pyarrow, or stored as strings when one batch mixes
types pyarrow cannot unify.

What is lost, and how it shows (all of it is counted in ``dropped`` and logged,
a warning at the first lost row and then once per 10,000 per reason):

- ``append`` while ``max_queue_rows`` rows are held (queued or being written),
  or after ``close``: the whole call's rows. ``append`` never blocks and never raises.
- a row that breaks the contract (no tz-aware ``time``, a non-numeric score or
  feature, ``inputs``/``features`` not mappings): that row alone.
- a write that fails (root not writable, disk full): the writer retries the
  failed partitions ``write_attempts`` times in all, waiting ``retry_seconds``,
  then twice that, ... (at most 30 s; tenacity's ``wait_exponential``); then it drops them and moves on.
  A ConfigError (a misconfigured root) is not retried. Retrying forever could
  only trade the newest rows (dropped at a full queue) for the oldest; a bounded
  retry rides out a short outage and keeps the writer alive through a long one.
  Every failed attempt is counted in ``write_errors``.

The writer is a daemon thread; ``close()`` (also registered with ``atexit``)
writes what is queued. Processes started by ``multiprocessing`` leave through
``os._exit`` and skip ``atexit``: a server worker must call ``close()`` on its
own shutdown path. Create the log in the process that appends to it (a forked
child does not inherit the writer thread).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.pandas_compat  # imported lazily by pyarrow otherwise, which fails during interpreter exit
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from riskloop.errors import ConfigError
from riskloop.storage import Location, location

log = logging.getLogger(__name__)

PREDICTION_COLUMNS: Final = (
    "request_id",
    "transaction_id",
    "time",
    "model",
    "model_version",
    "role",
    "score",
    "decision",
    "threshold",
    "latency_ms",
    "unknown_card",
    "reasons",
)
INPUT_PREFIX: Final = "input_"
FEATURE_PREFIX: Final = "feature_"

_STRING_COLUMNS: Final = ("request_id", "transaction_id", "model", "model_version", "role", "decision", "reasons")
_FLOAT_COLUMNS: Final = ("score", "threshold", "latency_ms")
SCHEMA: Final = pa.schema(
    [
        (
            name,
            pa.timestamp("us", tz="UTC")
            if name == "time"
            else pa.float64()
            if name in _FLOAT_COLUMNS
            else pa.bool_()
            if name == "unknown_card"
            else pa.string(),
        )
        for name in PREDICTION_COLUMNS
    ]
)
_WARN_EVERY_ROWS: Final = 10_000
# the host (a pod's name on Kubernetes): replicas of one predictor all run as pid 1 and share the root
_WRITER: Final = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"
_MAX_RETRY_WAIT_SECONDS: Final = 30.0


def _new_sequence() -> Iterator[int]:
    return itertools.count(time.time_ns() // 1_000)


# One sequence per process, shared by every PredictionLog in it (see the module docstring);
# a forked child starts its own, or children forked at different times could reuse a pid and a name.
_seq = _new_sequence()


def _reseed_after_fork() -> None:
    global _seq
    _seq = _new_sequence()


os.register_at_fork(after_in_child=_reseed_after_fork)


class _BadRow(Exception):
    """A row that breaks the contract; the message is the reason, counted per reason."""


class _PartitionsFailed(Exception):
    """Some partitions of a batch could not be written: tenacity retries them (and only this)."""


class PredictionLog:
    """Append scored rows from the request path; one background thread writes them in batches.

    ``flush_rows``: write once this many rows are queued; ``flush_seconds``: or
    once the oldest queued row has waited this long; ``max_queue_rows``: rows
    held in memory (queued or being written) beyond which ``append`` drops.
    ``write_attempts`` / ``retry_seconds``: the retry policy of a failed write
    (module docstring). Rows are taken over by the log: do not mutate them after
    ``append``.
    """

    def __init__(
        self,
        root: Path | Location,
        *,
        flush_rows: int = 2000,
        flush_seconds: float = 1.0,
        max_queue_rows: int = 200_000,
        write_attempts: int = 3,
        retry_seconds: float = 0.5,
    ) -> None:
        for name, value in (
            ("flush_rows", flush_rows),
            ("max_queue_rows", max_queue_rows),
            ("write_attempts", write_attempts),
        ):
            if value < 1:
                raise ConfigError(
                    f"{name} must be at least 1, got {value}", where="PredictionLog", fix=f"pass {name}>=1"
                )
        for name, seconds in (("flush_seconds", flush_seconds), ("retry_seconds", retry_seconds)):
            if not seconds > 0:
                raise ConfigError(
                    f"{name} must be positive, got {seconds}", where="PredictionLog", fix=f"pass {name}>0"
                )
        self.root = location(root)
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._max_queue_rows = max_queue_rows
        self._write_attempts = write_attempts
        self._retry_seconds = retry_seconds

        self._cond = threading.Condition()
        self._queue: deque[list[Mapping[str, Any]]] = deque()
        self._queued_rows = 0
        self._oldest_queued_at: float | None = None
        self._accepted = 0  # rows taken into the queue
        self._handled = 0  # of those, rows written or dropped by the writer (in order)
        self._written = 0
        self._dropped = 0
        self._write_errors = 0
        self._drops_by_reason: dict[str, int] = {}
        self._flush_requested = False
        self._closing = False

        self._thread = threading.Thread(target=self._run, name=f"prediction-log:{self.root}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def written(self) -> int:
        """Rows on disk so far."""
        return self._written

    @property
    def dropped(self) -> int:
        """Rows lost so far: full queue, appended after close, broken contract, or writes that kept failing."""
        return self._dropped

    @property
    def write_errors(self) -> int:
        """Failed write attempts so far (one per partition file per attempt)."""
        return self._write_errors

    @property
    def pending(self) -> int:
        """Rows accepted but neither written nor dropped yet."""
        with self._cond:
            return self._accepted - self._handled

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue ``rows`` for writing and return at once; never raises (losses are counted in ``dropped``).

        Each row holds the :data:`PREDICTION_COLUMNS` keys, ``"inputs"`` (raw
        transaction fields) and ``"features"`` (the model's feature vector by
        name). A call is accepted or dropped as a whole.
        """
        warning = None
        try:
            batch = list(rows)
            if not batch:
                return
            with self._cond:
                if self._closing:
                    warning = self._count_drop(len(batch), "appended after close")
                elif self._accepted - self._handled + len(batch) > self._max_queue_rows:
                    warning = self._count_drop(len(batch), f"queue full ({self._max_queue_rows} rows held)")
                else:
                    self._queue.append(batch)
                    self._queued_rows += len(batch)
                    self._accepted += len(batch)
                    # wake the writer to arm its timer (first rows) or to write (enough rows)
                    if self._oldest_queued_at is None or self._queued_rows >= self._flush_rows:
                        self._cond.notify_all()
                    if self._oldest_queued_at is None:
                        self._oldest_queued_at = time.monotonic()
        except Exception:  # the request path must not fail because of its log
            log.exception("prediction log: append failed; rows not logged")
        if warning:
            log.warning(warning)

    def flush(self, timeout_seconds: float = 10) -> None:
        """Block until every row appended before the call is written (or dropped by the writer).

        Raises ``TimeoutError`` if that takes longer than ``timeout_seconds``;
        the rows stay queued. Check ``dropped`` to learn whether a failing write
        lost rows.
        """
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            target = self._accepted
            if self._handled >= target:
                return
            self._flush_requested = True
            self._cond.notify_all()
            while self._handled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    raise TimeoutError(
                        f"prediction log: {target - self._handled} rows still pending after {timeout_seconds} s "
                        f"(root {self.root}); the writer is {'alive' if self._thread.is_alive() else 'stopped'}"
                    )
                self._cond.wait(remaining)

    def close(self, timeout_seconds: float = 30) -> None:
        """Write everything queued, then stop the writer thread. Idempotent; later appends are dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_seconds)
        if self._thread.is_alive():
            log.error(
                "prediction log: writer still busy after %s s at close; %d rows may be lost (root %s)",
                timeout_seconds,
                self.pending,
                self.root,
            )
        atexit.unregister(self.close)

    def _count_drop(self, n: int, reason: str) -> str | None:
        """Count ``n`` lost rows (caller holds the lock); return a warning when one is due."""
        self._dropped += n
        before = self._drops_by_reason.get(reason, 0)
        self._drops_by_reason[reason] = after = before + n
        if before == 0 or before // _WARN_EVERY_ROWS != after // _WARN_EVERY_ROWS:
            return f"prediction log: {after} rows dropped so far: {reason} (root {self.root})"
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closing and not self._queue:
                        return
                    self._cond.wait(self._wait_seconds())
                batches = list(self._queue)
                self._queue.clear()
                self._queued_rows = 0
                self._oldest_queued_at = None
                self._flush_requested = False
            rows = [row for batch in batches for row in batch]
            try:
                written, losses = self._write_rows(rows)
            except Exception:  # a bug here must not stop the writer for good
                log.exception("prediction log: writer failed on %d rows; dropped", len(rows))
                written, losses = 0, {"writer failed": len(rows)}
            with self._cond:
                self._handled += len(rows)
                self._written += written
                warnings = [self._count_drop(n, reason) for reason, n in losses.items() if n]
                self._cond.notify_all()
            for warning in warnings:
                if warning:
                    log.warning(warning)

    def _due(self) -> bool:
        if not self._queue:
            return False
        if self._flush_requested or self._closing or self._queued_rows >= self._flush_rows:
            return True
        assert self._oldest_queued_at is not None
        return time.monotonic() - self._oldest_queued_at >= self._flush_seconds

    def _wait_seconds(self) -> float | None:
        if self._oldest_queued_at is None:
            return None
        return max(0.0, self._oldest_queued_at + self._flush_seconds - time.monotonic())

    def _write_rows(self, rows: Sequence[Mapping[str, Any]]) -> tuple[int, dict[str, int]]:
        """Flatten, partition by date and write ``rows``; return rows written and rows lost by reason."""
        losses: dict[str, int] = {}
        by_date: dict[date, list[dict[str, Any]]] = {}
        for row in rows:
            try:
                flat = _flatten_row(row)
            except _BadRow as exc:
                reason = f"row breaks the contract: {exc}"
                losses[reason] = losses.get(reason, 0) + 1
                continue
            by_date.setdefault(flat["time"].date(), []).append(flat)

        parts = {day: _to_table(flat_rows) for day, flat_rows in sorted(by_date.items())}
        refused: list[pa.Table] = []  # a ConfigError is not retried: the same write would fail the same way
        written = 0
        retrying = Retrying(
            stop=stop_after_attempt(self._write_attempts),
            wait=wait_exponential(multiplier=self._retry_seconds, max=_MAX_RETRY_WAIT_SECONDS),
            retry=retry_if_exception_type(_PartitionsFailed),
            retry_error_callback=lambda _: None,
        )
        for attempt in retrying:
            with attempt:
                for day, table in list(parts.items()):
                    try:
                        self._write_partition(self.root / f"date={day.isoformat()}", table)
                        written += table.num_rows
                        del parts[day]
                    except Exception as exc:
                        self._write_errors += 1
                        log.warning(
                            "prediction log: writing %d rows for %s failed (attempt %d of %d): %s",
                            table.num_rows,
                            day,
                            attempt.retry_state.attempt_number,
                            self._write_attempts,
                            exc,
                        )
                        if isinstance(exc, ConfigError):
                            refused.append(parts.pop(day))
                if parts:
                    raise _PartitionsFailed
        if parts or refused:
            lost = sum(t.num_rows for t in [*parts.values(), *refused])
            log.error(
                "prediction log: gave up on %d rows after %d attempts (root %s)", lost, self._write_attempts, self.root
            )
            losses["write failed"] = lost
        return written, losses

    def _write_partition(self, directory: Location, table: pa.Table) -> Location:
        """Write one parquet file into ``directory``, atomically for readers; return its location."""
        target = directory / f"part-{os.getpid()}-{next(_seq)}-{_WRITER}.parquet"
        target.write_table(table)
        return target


def _flatten_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One log row as flat columns, fixed columns coerced to their types; ``time`` becomes a UTC datetime."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key == "inputs" or key == "features":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise _BadRow(f"{key} is a {type(value).__name__}, not a mapping")
            if key == "inputs":
                flat.update((f"{INPUT_PREFIX}{k}", v) for k, v in value.items())
            else:
                # a float needs no check (and its message no formatting): the predictor's case, 28 per row
                flat.update(
                    (f"{FEATURE_PREFIX}{k}", v if type(v) is float else _float(v, f"feature {k!r}"))
                    for k, v in value.items()
                )
        else:
            flat[key] = value

    stamp = flat.get("time")
    if not isinstance(stamp, datetime) or stamp.tzinfo is None or stamp.utcoffset() is None:
        raise _BadRow("time is not a tz-aware datetime")
    if isinstance(stamp, pd.Timestamp):
        # parquet keeps microseconds; pyarrow refuses to truncate nanoseconds silently
        stamp = stamp.floor("us").to_pydatetime()
    flat["time"] = stamp.astimezone(UTC)
    for name in _FLOAT_COLUMNS:
        flat[name] = _float(flat.get(name), name)
    for name in _STRING_COLUMNS:
        value = flat.get(name)
        if value is not None and not isinstance(value, str):
            if isinstance(value, int | np.integer) and not isinstance(value, bool):
                flat[name] = str(value)
            else:
                raise _BadRow(f"{name} is a {type(value).__name__}, not a string")
    flag = flat.get("unknown_card")
    if flag is not None:
        if not isinstance(flag, bool | np.bool_):
            raise _BadRow(f"unknown_card is a {type(flag).__name__}, not a bool")
        flat["unknown_card"] = bool(flag)
    return flat


def _float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, int | float | np.number):
        raise _BadRow(f"{what} is a {type(value).__name__}, not a number")
    return float(value)


def _to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    names = list(dict.fromkeys(itertools.chain(PREDICTION_COLUMNS, *(r.keys() for r in rows))))
    arrays = []
    for name in names:
        values = [r.get(name) for r in rows]
        if name in PREDICTION_COLUMNS:
            arrays.append(pa.array(values, type=SCHEMA.field(name).type))
        elif name.startswith(FEATURE_PREFIX):
            arrays.append(pa.array(values, type=pa.float64()))
        else:
            arrays.append(_infer_array(values))
    return pa.Table.from_arrays(arrays, names=names)


def _infer_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed types in one raw field: keep every value, as text
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def read_prediction_log(
    root: Path | Location, *, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """All logged rows under ``root``, sorted by ``time``; with ``start``/``end``, those with start <= time < end.

    Columns are the union over all files (missing values are NaN/None); a column
    stored with different types in different files is promoted (int to float) or,
    failing that, read as strings. No files: an empty frame with
    :data:`PREDICTION_COLUMNS`.
    """
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise ConfigError(
                f"{name}={bound.isoformat()} has no timezone",
                where="read_prediction_log",
                fix="pass a tz-aware datetime, e.g. datetime(..., tzinfo=UTC)",
            )
    tables = [part.read_table() for part in _files(location(root), start, end)]
    frame: pd.DataFrame = (_concat(tables) if tables else SCHEMA.empty_table()).to_pandas()
    mask = pd.Series(True, index=frame.index)
    if start is not None:
        mask &= frame["time"] >= pd.Timestamp(start)
    if end is not None:
        mask &= frame["time"] < pd.Timestamp(end)
    ordered: pd.DataFrame = frame[mask].sort_values("time", kind="stable").reset_index(drop=True)
    return ordered


def _files(root: Location, start: datetime | None, end: datetime | None) -> Iterator[Location]:
    first = start.astimezone(UTC).date() if start is not None else None
    last = end.astimezone(UTC).date() if end is not None else None
    for relative, part in root.files():  # one listing of the whole log, in path order
        folder, _, name = relative.partition("/")
        if not (
            folder.startswith("date=") and name.startswith("part-") and name.endswith(".parquet") and "/" not in name
        ):
            continue  # not ours
        try:
            day = date.fromisoformat(folder.removeprefix("date="))
        except ValueError:
            continue
        if (first is None or day >= first) and (last is None or day <= last):
            yield part


def _concat(tables: list[pa.Table]) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        types: dict[str, set[pa.DataType]] = {}
        for table in tables:
            for field in table.schema:
                if not pa.types.is_null(field.type):
                    types.setdefault(field.name, set()).add(field.type)
        clash = {name for name, seen in types.items() if len(seen) > 1}
        as_text = [
            t.cast(pa.schema([pa.field(f.name, pa.string()) if f.name in clash else f for f in t.schema]))
            for t in tables
        ]
        return pa.concat_tables(as_text, promote_options="permissive")


__all__ = ["PREDICTION_COLUMNS", "SCHEMA", "PredictionLog", "read_prediction_log"]
