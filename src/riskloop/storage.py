"""Shared storage: a local directory or an object-store prefix, behind one small interface.

On one machine all state lives in the state dir. On a cluster every pipeline
step and the predictor run in pods of their own, each with a private state dir
that is gone when the pod is. What more than one pod must see lives under the
shared storage root, ``RISKLOOP_STORAGE__URI`` (e.g. ``s3://riskloop/state``):

- the landing data the training and monitoring pipelines read
  (``data/<dataset>/transactions/date=YYYY-MM-DD/part-0.parquet``);
- the prediction log every predictor replica writes and the monitoring job reads
  (``predictions/date=YYYY-MM-DD/part-*.parquet``);
- the monitoring job's state (``monitoring/<model>-state.json``).

Unset, the root is the state dir and nothing changes for a local run.

The filesystems are pyarrow's (local, S3, GCS), which pandas and parquet use
natively. S3 credentials come from the standard ``AWS_*`` variables; the
endpoint of an S3-compatible store from ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL`` or, failing both, ``MLFLOW_S3_ENDPOINT_URL`` (so the one
Secret that points MLflow at MinIO points riskloop there too).

Writes are atomic for readers: a local file is written under a hidden name and
renamed; an object store makes an object visible only once its upload is
complete. Listing never shows hidden (``.``-prefixed) names.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from riskloop.errors import ConfigError, RiskloopError

T = TypeVar("T")

SCHEMES = ("s3", "gs", "file")  # object stores pyarrow ships, and file:// for a local directory by URI
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")


class StorageError(RiskloopError):
    """The shared storage could not be read or written (missing bucket, credentials, network)."""


def check_uri(uri: str, *, where: str = "RISKLOOP_STORAGE__URI") -> str:
    """``uri`` if riskloop can use it as a storage root; else a ConfigError saying why and how to fix it."""
    fix = "use an absolute path or s3://bucket/prefix, gs://bucket/prefix or file:///path"
    if "://" not in uri:
        if not Path(uri).is_absolute():
            raise ConfigError(f"storage root {uri!r} is a relative path", where=where, fix=fix)
        return uri
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"storage root {uri!r} has the scheme {parts.scheme!r}, which riskloop cannot use", where=where, fix=fix
        )
    if parts.scheme != "file" and not parts.netloc:
        raise ConfigError(f"storage root {uri!r} names no bucket", where=where, fix=fix)
    if parts.query or parts.fragment:
        raise ConfigError(
            f"storage root {uri!r} has a query or fragment",
            where=where,
            fix="drop it; the S3 endpoint comes from AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL",
        )
    return uri


class Location:
    """A file or directory on a local or object-store filesystem: a small, path-like handle."""

    __slots__ = ("fs", "path", "uri")

    def __init__(self, fs: pafs.FileSystem, path: str, uri: str) -> None:
        self.fs = fs
        self.path = path.rstrip("/") or "/"
        self.uri = uri.rstrip("/") if uri.rstrip("/") else uri

    def __truediv__(self, part: str) -> Location:
        part = part.strip("/")
        return Location(self.fs, f"{self.path.rstrip('/')}/{part}", f"{self.uri}/{part}")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.uri, self.fs.type_name) == (other.uri, other.fs.type_name)

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        """The enclosing directory (a bucket's root is its own parent)."""
        if "/" not in self.path.strip("/"):
            return self
        return Location(self.fs, self.path.rsplit("/", 1)[0] or "/", self.uri.rsplit("/", 1)[0])

    @property
    def local_path(self) -> Path | None:
        """The path on this machine's disk, or None on an object store."""
        return Path(self.path) if isinstance(self.fs, pafs.LocalFileSystem) else None

    def _info(self) -> pafs.FileInfo:
        return _call(self, "look up", lambda: self.fs.get_file_info(self.path))

    def is_file(self) -> bool:
        return bool(self._info().type == pafs.FileType.File)

    def is_dir(self) -> bool:
        """True for a directory; on an object store, for a prefix that has objects under it."""
        return bool(self._info().type == pafs.FileType.Directory)

    def size(self) -> int | None:
        """The file's size in bytes; None when there is no file here."""
        info = self._info()
        return int(info.size or 0) if info.type == pafs.FileType.File else None

    def children(self, *, dirs: bool | None = None) -> list[Location]:
        """Entries directly under this location, sorted by name (none if it does not exist).

        ``dirs=True``: only directories; ``False``: only files; hidden names are never listed.
        """
        infos = self._list(recursive=False)
        out = []
        for info in infos:
            name = info.path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            if dirs is not None and (info.type == pafs.FileType.Directory) != dirs:
                continue
            out.append(self / name)
        return sorted(out, key=lambda loc: loc.name)

    def files(self) -> list[tuple[str, Location]]:
        """``(path relative to here, file)`` for every file below this location at any depth, sorted by path.

        One listing (on an object store a paged LIST, not a request per directory); a name under a hidden
        (``.``-prefixed) component is never listed.
        """
        base = self.path.rstrip("/") + "/"
        out = []
        for info in self._list(recursive=True):
            relative = info.path.removeprefix(base)
            if info.type != pafs.FileType.File or any(part.startswith(".") for part in relative.split("/")):
                continue
            out.append((relative, self / relative))
        return sorted(out, key=lambda pair: pair[0])

    def _list(self, *, recursive: bool) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        infos: list[pafs.FileInfo] = _call(self, "list", lambda: self.fs.get_file_info(selector))
        if not infos and self.local_path is None:
            # an empty prefix is normal (nothing written yet); a missing bucket is a mistake to report
            bucket = self.path.split("/", 1)[0]
            if _call(self, "look up", lambda: self.fs.get_file_info(bucket)).type == pafs.FileType.NotFound:
                raise StorageError(
                    f"the bucket {bucket!r} of {self.uri} does not exist",
                    where=self.uri,
                    fix=f"create the bucket {bucket!r}, or point RISKLOOP_STORAGE__URI at one that "
                    "exists (and check AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL)",
                )
        return infos

    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path) as f:
                return bytes(f.read())

        return _call(self, "read", read)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def read_table(self) -> pa.Table:
        """The parquet file at this location."""
        return _call(self, "read", lambda: pq.read_table(self.path, filesystem=self.fs))

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` so that no reader ever sees part of it; parent directories are created."""

        def write(target: str) -> None:
            with self.fs.open_output_stream(target) as f:
                f.write(data)

        self._write_atomically(write)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_table(self, table: pa.Table) -> None:
        """Write ``table`` as parquet, atomically for readers (see :meth:`write_bytes`)."""
        self._write_atomically(lambda target: pq.write_table(table, target, filesystem=self.fs))

    def _write_atomically(self, write: Callable[[str], object]) -> None:
        local = self.local_path
        if local is None:  # an object appears whole once its upload completes
            _call(self, "write", lambda: write(self.path))
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}-{time.monotonic_ns()}.tmp")
        try:
            write(str(tmp))
            os.replace(tmp, local)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _call(loc: Location, verb: str, action: Callable[[], T]) -> T:
    """Run ``action``; a filesystem failure becomes a StorageError naming the location and the likely fix."""
    try:
        return action()
    except FileNotFoundError:
        raise
    except OSError as exc:
        if loc.local_path is not None:
            raise
        raise StorageError(
            f"cannot {verb} {loc.uri}: {exc}",
            where=loc.uri,
            fix="check that the bucket exists, the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY) and the endpoint (AWS_ENDPOINT_URL or "
            "MLFLOW_S3_ENDPOINT_URL)",
        ) from exc


def location(target: str | Path | Location) -> Location:
    """A :class:`Location` for a local path, a ``file://``, ``s3://`` or ``gs://`` URI, or a Location."""
    if isinstance(target, Location):
        return target
    text = str(target)
    if "://" not in text:
        path = Path(text).resolve()
        return Location(_local(), str(path), str(path))
    check_uri(text, where=text)
    scheme, rest = text.split("://", 1)
    if scheme == "file":
        path = Path(urlsplit(text).path).resolve()
        return Location(_local(), str(path), str(path))
    if scheme == "s3":
        endpoint = next((os.environ[v] for v in _ENDPOINT_VARIABLES if os.environ.get(v)), "")
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or ""
        return Location(_s3(endpoint, region), rest, text)
    fs, path = pafs.FileSystem.from_uri(text)
    return Location(fs, path, text)


@functools.cache
def _local() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


@functools.cache
def _s3(endpoint: str, region: str) -> pafs.FileSystem:
    """One S3 filesystem per endpoint and region (each holds a client and its connection pool)."""
    kwargs: dict[str, object] = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
        # an S3-compatible store (MinIO) has one region; naming it skips the region lookup of AWS
        kwargs["region"] = region or "us-east-1"
    elif region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


__all__ = ["SCHEMES", "Location", "StorageError", "check_uri", "location"]
