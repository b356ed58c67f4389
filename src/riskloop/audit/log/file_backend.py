"""The file backend: the audit log as JSON lines in one file, for one machine."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import filelock

from riskloop.audit.log.backend import StoredAuditLog
from riskloop.audit.log.events import AuditEvent, malformed
from riskloop.errors import AuditError

_TAIL_CHUNK_BYTES = 4096


class FileAuditLog(StoredAuditLog[bytes]):
    """Audit log as JSON lines in one file, for one machine.

    One writer at a time: every append takes ``filelock.FileLock(path + ".lock")``
    and re-reads the head (only the last line) under it, so processes appending
    concurrently still build one valid chain. Each line is fsynced before the
    lock is released. Parent directories are created on the first append.
    Reads take the same lock when they can (so they never see half a line), and
    read without it when the directory is not writable (an archived copy).
    :meth:`verify` also checks that each line is byte-for-byte canonical and that
    the file ends with a newline.
    """

    store_noun: ClassVar[str] = "log"
    record_noun: ClassVar[str] = "line"
    unreadable_fix: ClassVar[str] = (
        "the file was damaged or edited by hand; restore it from a verified copy (verify() reports every check)"
    )
    inspect_fix: ClassVar[str] = "inspect the file with verify(); restore it from a verified copy"

    def __init__(self, path: Path, *, lock_timeout_seconds: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout_seconds = lock_timeout_seconds

    def __repr__(self) -> str:
        return f"FileAuditLog({str(self.path)!r})"

    def head(self) -> AuditEvent | None:
        """The last event, read from the end of the file without parsing the rest."""
        with self._lock(for_write=False):
            return self._read_head()

    def _append_after_head(self, build: Callable[[AuditEvent | None], AuditEvent]) -> AuditEvent:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(for_write=True):
            new = build(self._read_head())
            with self.path.open("ab") as handle:
                handle.write(new.to_json().encode("utf-8") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        return new

    def _read(self) -> tuple[list[bytes], str | None]:
        """The file's lines, and that the last one has no final newline if so."""
        with self._lock(for_write=False):
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return [], None
        # Split on b"\n" only: str.splitlines would also split inside values at U+2028 etc.
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
            return lines, None
        return lines, (f"line {len(lines)} has no final newline: the last write was cut short or the file was edited")

    def _parse(self, record: bytes) -> AuditEvent:
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise malformed(f"not UTF-8 (byte {exc.start})") from exc
        return AuditEvent.from_json(text)

    def _label(self, index: int, record: bytes) -> str:
        return f"line {index + 1}"

    def _altered(self, record: bytes, event: AuditEvent) -> str | None:
        if record == event.to_json().encode("utf-8"):
            return None
        return "is not byte-for-byte the line the writer produced (it was re-encoded or edited by hand)"

    def _where(self) -> str:
        return str(self.path)

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
            raise self._lock_timed_out(
                where=f"{self.path}.lock",
                fix="another process is writing the audit log; retry, or find the process holding the lock",
            ) from exc
        try:
            yield
        finally:
            lock.release()

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
                    fix=self.inspect_fix,
                )
            tail = b""
            position = end - 1
            while position > 0 and b"\n" not in tail:
                step = min(_TAIL_CHUNK_BYTES, position)
                position -= step
                handle.seek(position)
                tail = handle.read(step) + tail
            last = tail.rsplit(b"\n", 1)[-1] if b"\n" in tail else tail
        return self._parse_head(last)
