"""Landing a user's file: a CSV or parquet file becomes landed data where the pipelines read it.

``riskloop data land DATA_FILE --spec SPEC`` is how a dataset riskloop has never seen gets in. The file is read
with the contract's types (text and category columns stay text, so ``"01"`` stays ``"01"``), the label is mapped
to 0/1 by the spec (``label.positive`` / ``label.mapping``), a missing id column is created from the row number
(``spec init`` names it ``row_id``), and the rows are written by :func:`riskloop.data.io.land_frame`: one
partition per day of the spec's time column, or one snapshot when it has none, under ``spec.source_path`` in the
storage root (the state dir locally, the object store on a cluster).

Landing checks only what it needs to store the rows where they belong: a readable file, the contract's columns,
a label that maps, parseable times. Row-level rules (ranges, categories, nulls) are the validate step's, which
quarantines bad rows with a reason each. Everything is checked before the first write, so bad input leaves
what was landed before untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from riskloop.data.io import land_frame, landing_dir, read_file
from riskloop.data.spec import ColumnType, DatasetSpec
from riskloop.errors import ConfigError, DataContractError
from riskloop.storage import Location, location

_TEXT_TYPES = (ColumnType.string, ColumnType.category)


@dataclass(frozen=True)
class Landed:
    """What one ``data land`` wrote."""

    rows: int
    positives: int
    files: tuple[Location, ...]
    snapshot: bool  # one snapshot (no time column) rather than daily partitions
    created_id: bool  # the id column was made from the row number


def read_source(path: str | Path | Location, spec: DatasetSpec) -> pd.DataFrame:
    """The file as a frame (:func:`riskloop.data.io.read_file`), the contract's text and category columns as text."""
    source = location(path)
    if source.size() is None:
        raise ConfigError(
            f"data file {source} does not exist", where="DATA_FILE", fix="pass the path of a CSV or parquet file"
        )
    return read_file(source, text_columns=[c for c, rule in spec.contract.columns.items() if rule.type in _TEXT_TYPES])


def prepare(frame: pd.DataFrame, spec: DatasetSpec, *, where: str) -> tuple[pd.DataFrame, bool]:
    """The frame as landed data: label mapped to int 0/1, the id column present, times parsed (UTC).

    Returns the frame and whether the id column was created (the row's position in the file, from 0).
    """
    if frame.empty:
        raise DataContractError("the data file has no rows", where=where, fix="export the data again")
    df = frame.copy()
    created_id = spec.id_column not in df.columns
    if created_id:
        df.insert(0, spec.id_column, pd.RangeIndex(len(df), dtype="int64"))
    missing = [c for c in spec.contract.columns if c not in df.columns]
    if missing:
        raise DataContractError(
            f"the data file lacks the contract's column(s) {missing}",
            where=where,
            fix=f"the file has {sorted(map(str, frame.columns))}: rename its columns or edit contract.columns "
            "in the dataset spec",
        )
    try:
        df[spec.label.column] = spec.binary_label(df[spec.label.column])
    except DataContractError as exc:
        raise DataContractError(exc.what, where=f"{exc.where} of {where}", fix=exc.fix) from exc
    if spec.timestamp_column is not None:
        df[spec.timestamp_column] = _times(df[spec.timestamp_column], spec.timestamp_column, where)
    return df, created_id


def _times(values: pd.Series, column: str, where: str) -> pd.Series:
    """The time column as UTC timestamps; a value that does not parse has no day to land in, so it is an error."""
    if pd.api.types.is_numeric_dtype(values):
        raise DataContractError(
            f"time column {column!r} holds numbers ({values.dtype})",
            where=where,
            fix="write the times as ISO-8601 text (2026-01-31 or 2026-01-31T12:00:00Z)",
        )
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    missing = values.isna()
    unparsed = parsed.isna() & ~missing
    if missing.any() or unparsed.any():
        problems = []
        if unparsed.any():
            shown = sorted({str(v) for v in values[unparsed]})[:5]
            problems.append(f"{int(unparsed.sum())} value(s) are not a time (e.g. {', '.join(map(repr, shown))})")
        if missing.any():
            problems.append(f"{int(missing.sum())} value(s) are missing")
        raise DataContractError(
            f"time column {column!r}: {'; '.join(problems)}, of {len(values)}: such rows have no day to land in",
            where=where,
            fix="write the times as ISO-8601 text (2026-01-31 or 2026-01-31T12:00:00Z) and drop rows without one",
        )
    return parsed.dt.as_unit("us")


def land_file(path: str | Path | Location, spec: DatasetSpec, root: Path | Location) -> Landed:
    """Read, prepare and land one file under ``spec.source_path(root)``; nothing is written on bad input."""
    landing = landing_dir(spec.source_path(root))
    where = str(location(path))
    frame, created_id = prepare(read_source(path, spec), spec, where=where)
    files = land_frame(frame, spec, landing)
    return Landed(
        rows=len(frame),
        positives=int(frame[spec.label.column].sum()),
        files=tuple(files),
        snapshot=spec.timestamp_column is None,
        created_id=created_id,
    )


__all__ = ["Landed", "land_file", "prepare", "read_source"]
