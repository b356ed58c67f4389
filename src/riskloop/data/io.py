"""Reading datasets as their spec describes, and the validated/quarantine layout.

Layout under a dataset's directory (``data/<dataset>/``)::

    transactions/date=YYYY-MM-DD/part-0.parquet   landing: what arrived
    validated/date=YYYY-MM-DD/part-0.parquet      rows that passed the contract
    quarantine/date=YYYY-MM-DD/part-0.parquet     rows that did not, with a reason each

The landing partitions live under the shared storage root (a local directory, or
an object-store prefix on a cluster: :mod:`riskloop.storage`); ``riskloop data
validate``'s validated and quarantine copies live in the local state dir (in a
pipeline they are the validate step's artifacts).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from riskloop.data.spec import DatasetSpec
from riskloop.data.validate import ValidationResult, enforce_gate, split_batch, write_quarantine
from riskloop.errors import DataContractError
from riskloop.storage import Location, location

PARTITION_FILE = "part-0.parquet"


def dataset_dir(spec: DatasetSpec, state_dir: Path) -> Path:
    return state_dir / "data" / spec.name


def validated_dir(spec: DatasetSpec, state_dir: Path) -> Path:
    return dataset_dir(spec, state_dir) / "validated"


def quarantine_dir(spec: DatasetSpec, state_dir: Path) -> Path:
    return dataset_dir(spec, state_dir) / "quarantine"


def partitions(
    root: Path | Location, start: date | None = None, end: date | None = None
) -> list[tuple[date, Location]]:
    """``(day, file)`` for every ``date=`` partition under ``root`` within ``[start, end]``, by day."""
    out = []
    for relative, f in location(root).files():
        folder, _, name = relative.partition("/")
        if name != PARTITION_FILE or not folder.startswith("date="):
            continue
        try:
            day = date.fromisoformat(folder.removeprefix("date="))
        except ValueError:
            continue
        if (start is None or day >= start) and (end is None or day <= end):
            out.append((day, f))
    return out


def read_file(path: Path | Location) -> pd.DataFrame:
    """One batch file (parquet or CSV) with a clear error for empty or unreadable files."""
    source = location(path)
    size = source.size()
    if size is None:
        raise DataContractError(f"batch file {source} does not exist", fix="check the path")
    if size == 0:
        raise DataContractError(
            "the batch file is empty (0 bytes)",
            where=str(source),
            fix="re-export the batch; an empty file is never valid",
        )
    try:
        frame: pd.DataFrame = (
            pd.read_csv(io.BytesIO(source.read_bytes()))
            if source.name.endswith(".csv")
            else source.read_table().to_pandas()
        )
        return frame
    except Exception as exc:  # pyarrow and pandas raise many types for corrupt files
        raise DataContractError(
            f"cannot read the batch: {exc}", where=str(source), fix="the file is not valid parquet/CSV; re-export it"
        ) from exc


def read_partitions(root: Path | Location, start: date | None = None, end: date | None = None) -> pd.DataFrame:
    parts = partitions(root, start, end)
    if not parts:
        raise DataContractError(
            f"no partitions under {location(root)} between {start} and {end}",
            fix="generate or ingest data first (`riskloop data generate`)",
        )
    return pd.concat([read_file(p) for _, p in parts], ignore_index=True)


def read_validated(
    spec: DatasetSpec, state_dir: Path, start: date | None = None, end: date | None = None
) -> pd.DataFrame:
    """Validated rows of a dataset, with their contract dtypes."""
    df = read_partitions(validated_dir(spec, state_dir), start, end)
    for name, cats in spec.categories.items():
        df[name] = pd.Categorical(df[name].astype(str), categories=list(cats))
    return df


@dataclass(frozen=True)
class DayValidation:
    day: date
    result: ValidationResult
    valid_path: Path
    quarantine_path: Path | None


def validate_partitions(
    spec: DatasetSpec,
    landing: Path | Location,
    state_dir: Path,
    *,
    start: date | None = None,
    end: date | None = None,
    max_bad_fraction: float | None = None,
) -> Iterator[DayValidation]:
    """Validate each landing partition, writing validated rows and quarantine per day.

    The quarantine is written before the gate is checked, so a failing batch
    still leaves its bad rows (with reasons) on disk; validated partitions of
    earlier days are never touched by a later failure.
    """
    contract = (
        spec.contract
        if max_bad_fraction is None
        else spec.contract.model_copy(update={"max_bad_fraction": max_bad_fraction})
    )
    parts = partitions(landing, start, end)
    if not parts:
        raise DataContractError(
            f"no landing partitions under {location(landing)}",
            fix="run `riskloop data generate` or copy date=YYYY-MM-DD/part-0.parquet files there",
        )
    for day, path in parts:
        raw = read_file(path)
        result = split_batch(raw, contract, where=str(path))
        q = write_quarantine(result, quarantine_dir(spec, state_dir) / f"date={day}" / PARTITION_FILE)
        enforce_gate(result, contract, where=str(path))
        out = validated_dir(spec, state_dir) / f"date={day}" / PARTITION_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        result.valid.to_parquet(tmp, index=False)
        tmp.replace(out)
        yield DayValidation(day, result, out, q)


def land_frame(df: pd.DataFrame, spec: DatasetSpec, landing: Path | Location) -> list[Location]:
    """Write a source frame into daily landing partitions (by the spec's timestamp column)."""
    if spec.timestamp_column is None:
        raise DataContractError(
            f"dataset {spec.name} has no timestamp column to partition by", fix="set timestamp_column in the spec"
        )
    days = pd.to_datetime(df[spec.timestamp_column], utc=True).dt.date
    paths = []
    for day, part in df.groupby(days, sort=True):
        out = location(landing) / f"date={day}" / PARTITION_FILE
        out.write_table(pa.Table.from_pandas(part, preserve_index=False))
        paths.append(out)
    return paths
