"""Reading datasets as their spec describes, and the validated/quarantine layout.

Layout under a dataset's directory (``data/<dataset>/``)::

    transactions/date=YYYY-MM-DD/part-0.parquet   landing: what arrived
    validated/date=YYYY-MM-DD/part-0.parquet      rows that passed the contract
    quarantine/date=YYYY-MM-DD/part-0.parquet     rows that did not, with a reason each

A spec with no time column (``timestamp_column: null``) has no day to partition by: its rows land as
one snapshot, ``<source path>/snapshot/part-0.parquet``, which the training pipeline reads whole.

The landing partitions live under the shared storage root (a local directory, or
an object-store prefix on a cluster: :mod:`riskloop.storage`); ``riskloop data
validate``'s validated and quarantine copies live in the local state dir (in a
pipeline they are the validate step's artifacts).
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from riskloop.data.spec import DatasetSpec
from riskloop.data.validate import ValidationResult, enforce_gate, split_batch, write_quarantine
from riskloop.errors import ConfigError, DataContractError
from riskloop.storage import Location, location

PARTITION_FILE = "part-0.parquet"
SNAPSHOT_DIR = "snapshot"
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")  # read_file reads these as CSV, any other name as parquet
DATA_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")  # a source.path ending so names a file, not a landing dir

# the command that lands each source kind's data where the pipelines read it
_LAND_COMMANDS = {
    "synthetic": "riskloop data generate",
    "ulb": "riskloop data fetch-ulb",
    "german_credit": "riskloop data fetch-german-credit",
}


def dataset_dir(spec: DatasetSpec, state_dir: Path) -> Path:
    return state_dir / "data" / spec.name


def validated_dir(spec: DatasetSpec, state_dir: Path) -> Path:
    return dataset_dir(spec, state_dir) / "validated"


def quarantine_dir(spec: DatasetSpec, state_dir: Path) -> Path:
    return dataset_dir(spec, state_dir) / "quarantine"


def land_command(spec: DatasetSpec) -> str:
    """How this spec's data gets landed (a hint for errors about missing landed data)."""
    return _LAND_COMMANDS.get(spec.source.kind, f"riskloop data land DATA_FILE --spec <the {spec.name} spec>")


def snapshot_file(root: Path | Location) -> Location:
    """The one landed file of a spec with no time column."""
    return location(root) / SNAPSHOT_DIR / PARTITION_FILE


def landing_dir(root: Path | Location) -> Location:
    """``root`` as a directory of landed partitions; a file there (a ``.csv`` named as ``source.path``) is bad
    input, not a raw ``NotADirectoryError`` from the filesystem."""
    landing = location(root)
    if landing.is_file() or (landing.name.lower().endswith(DATA_FILE_SUFFIXES) and not landing.is_dir()):
        raise ConfigError(
            f"the landing location {landing} names a data file, but it must be the directory the landed "
            "partitions go to (a CSV or parquet file is landed there by `riskloop data land`)",
            where="source.path in the dataset spec",
            fix="set source.path to a directory (e.g. data/<dataset name>) and land the file there with "
            f"`riskloop data land {landing.name} --spec SPEC`",
        )
    return landing


def partitions(
    root: Path | Location, start: date | None = None, end: date | None = None
) -> list[tuple[date, Location]]:
    """``(day, file)`` for every ``date=`` partition under ``root`` within ``[start, end]``, by day."""
    out = []
    for relative, f in landing_dir(root).files():
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


def read_file(path: Path | Location, *, text_columns: Collection[str] = ()) -> pd.DataFrame:
    """One data file, with a clear error for a missing, empty or unreadable one: CSV by its name (``*.csv``,
    ``*.csv.gz``, ``*.txt``), parquet otherwise (any name).

    The one reader of data files: landed partitions, ``data land`` and ``spec init`` all see the same values.
    ``text_columns`` (a contract's string and category columns) stay text in a CSV, so a code such as ``01``
    is not read as the number 1.
    """
    source = location(path)
    size = source.size()
    if size is None:
        raise DataContractError(f"data file {source} does not exist", fix="check the path")
    if size == 0:
        raise DataContractError(
            "the data file is empty (0 bytes)",
            where=str(source),
            fix="export it again; an empty file is never valid",
        )
    csv = source.name.lower().endswith(CSV_SUFFIXES)
    try:
        if csv:
            text = dict.fromkeys(text_columns, "string")
            frame: pd.DataFrame = pd.read_csv(
                io.BytesIO(source.read_bytes()),
                dtype=text,
                compression="gzip" if source.name.lower().endswith(".gz") else None,
                low_memory=False,
            )
        else:
            frame = source.read_table().to_pandas()
        return frame
    except Exception as exc:  # pyarrow and pandas raise many types for corrupt files
        raise DataContractError(
            f"cannot read the data file as {'CSV' if csv else 'parquet'}: {exc}",
            where=str(source),
            fix="write it as parquet, or as CSV with a header row named *.csv",
        ) from exc


def landed_files(
    spec: DatasetSpec, root: Path | Location, start: date | None = None, end: date | None = None
) -> list[Location]:
    """The landed files a pipeline reads for ``spec``: the daily partitions of ``[start, end]``, or, for a spec
    with no time column, its one snapshot (whatever the window: its rows have no day to select by)."""
    if spec.timestamp_column is None:
        snapshot = snapshot_file(landing_dir(root))
        if snapshot.is_file():
            return [snapshot]
        raise DataContractError(
            f"no landed snapshot for {spec.name} (a spec without a time column is landed as one snapshot)",
            where=str(snapshot),
            fix=f"land the data first: `{land_command(spec)}`",
        )
    parts = partitions(root, start, end)
    if not parts:
        raise DataContractError(
            f"no landing partitions for {spec.name}"
            if start is None and end is None
            else f"no landing data for {spec.name} between {start} and {end}",
            where=str(location(root)),
            fix=f"land the data first: `{land_command(spec)}`",
        )
    return [f for _, f in parts]


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
    day: date | None  # None: the snapshot of a spec with no time column
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
    """Validate each landing partition (or the snapshot), writing validated rows and quarantine per partition.

    Landed data holds the mapped 0/1 label, so it is checked against ``spec.landed_contract``. The quarantine
    is written before the gate is checked, so a failing batch still leaves its bad rows (with reasons) on disk;
    validated partitions of earlier days are never touched by a later failure.
    """
    contract = (
        spec.landed_contract
        if max_bad_fraction is None
        else spec.landed_contract.model_copy(update={"max_bad_fraction": max_bad_fraction})
    )
    for path in landed_files(spec, landing, start, end):
        folder = path.parent.name  # date=YYYY-MM-DD or snapshot
        raw = read_file(path)
        result = split_batch(raw, contract, where=str(path))
        q = write_quarantine(result, quarantine_dir(spec, state_dir) / folder / PARTITION_FILE)
        enforce_gate(result, contract, where=str(path))
        out = validated_dir(spec, state_dir) / folder / PARTITION_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        result.valid.to_parquet(tmp, index=False)
        tmp.replace(out)
        day = None if folder == SNAPSHOT_DIR else date.fromisoformat(folder.removeprefix("date="))
        yield DayValidation(day, result, out, q)


def land_frame(df: pd.DataFrame, spec: DatasetSpec, landing: Path | Location) -> list[Location]:
    """Write a source frame where the pipelines read it: daily partitions by the spec's timestamp column,
    or one snapshot when the spec has none.

    Every table is built before the first write, and each file is written atomically (:mod:`riskloop.storage`),
    so a frame that cannot be stored leaves what was landed before untouched. A day (or the snapshot) landed
    again is replaced; other days are kept.
    """
    root = landing_dir(landing)
    if spec.timestamp_column is None:
        groups: list[tuple[Location, pd.DataFrame]] = [(snapshot_file(root), df)]
    else:
        days = pd.to_datetime(df[spec.timestamp_column], utc=True).dt.date
        groups = [(root / f"date={day}" / PARTITION_FILE, part) for day, part in df.groupby(days, sort=True)]
    try:
        tables = [(path, pa.Table.from_pandas(part, preserve_index=False)) for path, part in groups]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # e.g. numbers and text mixed in one object column
        raise DataContractError(
            f"the data cannot be stored as parquet: {exc}",
            where=str(root),
            fix="give each column one type (the contract's) in the source file",
        ) from exc
    for path, table in tables:
        path.write_table(table)
    return [path for path, _ in tables]
