"""``riskloop data land``: a CSV or parquet file a user brings becomes landed data where the pipelines read it.

The data sets are built here: text labels (good/bad), missing values, mixed types, with and without a time axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from riskloop.data.io import landed_files, partitions, read_file, snapshot_file, validate_partitions
from riskloop.data.land import land_file
from riskloop.data.spec import DatasetSpec, parse_spec
from riskloop.data.validate import split_batch
from riskloop.errors import ConfigError, DataContractError

SPEC = """
name: byo-credit
model_name: byo-credit-scorer
source: {kind: csv, path: data/byo-credit}
id_column: row_id
timestamp_column: null
label: {column: status, positive: [bad]}
features:
  source: raw
  raw_columns: [age, income, housing, branch]
  categorical: [housing, branch]
split: {kind: stratified}
contract:
  max_bad_fraction: 0.0
  columns:
    row_id: {type: integer, unique: true}
    age: {type: integer, nullable: true, min: 18}
    income: {type: float, nullable: true, min: 0}
    housing: {type: category, allowed: [own, rent, free], nullable: true}
    branch: {type: category, allowed: ["01", "02", "10"]}
    purpose: {type: string, nullable: true}
    status: {type: category, allowed: [good, bad]}
"""
TIMED = SPEC.replace("timestamp_column: null", "timestamp_column: applied_at").replace(
    "    status:", "    applied_at: {type: timestamp}\n    status:"
)


def credit_frame(n: int = 40, *, seed: int = 3) -> pd.DataFrame:
    """Applicants with text labels, missing values, codes that look like numbers ("01") and free text."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype("float64"),
            "income": rng.gamma(2.0, 1500.0, n).round(2),
            "housing": rng.choice(["own", "rent", "free"], n).astype(object),
            "branch": rng.choice(["01", "02", "10"], n),
            "purpose": rng.choice(["car", "tv, radio", "42"], n),
            "status": rng.choice(["good", "bad"], n, p=[0.7, 0.3]),
        }
    )
    frame.loc[::7, "age"] = np.nan
    frame.loc[::5, "income"] = np.nan
    frame.loc[::9, "housing"] = None
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture()
def spec() -> DatasetSpec:
    return parse_spec(SPEC, where="test spec")


def test_a_csv_without_a_time_axis_lands_as_one_snapshot_that_ingest_and_validation_read(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    frame = credit_frame()
    landed = land_file(write_csv(frame, tmp_path / "applicants 2024.csv"), spec, tmp_path / "store")

    snapshot = snapshot_file(tmp_path / "store" / "data" / "byo-credit")
    assert landed.snapshot and landed.created_id and landed.files == (snapshot,)
    assert landed_files(spec, spec.source_path(tmp_path / "store")) == [snapshot]
    assert partitions(spec.source_path(tmp_path / "store")) == []  # no invented partition date
    stored = read_file(snapshot)
    assert stored["row_id"].tolist() == list(range(len(frame)))  # the row number, from 0
    assert stored["status"].dtype == "int64"
    assert stored["status"].tolist() == (frame["status"] == "bad").astype(int).tolist()
    assert landed.rows == len(frame) and landed.positives == int((frame["status"] == "bad").sum())
    assert stored["branch"].tolist() == frame["branch"].tolist()  # "01" stays text, not the number 1
    assert stored["purpose"].tolist() == frame["purpose"].tolist()  # "42" too
    assert stored["age"].isna().sum() == frame["age"].isna().sum() > 0  # missing stays missing
    assert stored["housing"].isna().sum() == frame["housing"].isna().sum() > 0
    # the validate step's contract for landed data (the label as 0/1) takes every row
    result = split_batch(stored, spec.landed_contract)
    assert len(result.valid) == len(frame) and result.quarantine.empty
    (checked,) = validate_partitions(spec, spec.source_path(tmp_path / "store"), tmp_path / "state")
    assert checked.day is None and checked.valid_path.parent.name == "snapshot" and len(checked.result.valid) == 40


def test_an_id_column_in_the_file_is_kept_and_parquet_lands_under_any_name(spec: DatasetSpec, tmp_path: Path) -> None:
    frame = credit_frame().assign(row_id=lambda f: np.arange(100, 100 + len(f)))
    frame.to_parquet(tmp_path / "export.data", index=False)  # any name that is not a CSV's is read as parquet
    landed = land_file(tmp_path / "export.data", spec, tmp_path)
    assert not landed.created_id
    assert read_file(landed.files[0])["row_id"].tolist() == frame["row_id"].tolist()


def test_a_csv_with_a_time_column_lands_as_daily_partitions_and_a_second_file_keeps_other_days(
    tmp_path: Path,
) -> None:
    spec = parse_spec(TIMED, where="timed spec")
    frame = credit_frame(30).assign(applied_at=[f"2026-03-0{1 + i % 3}T{10 + i % 5}:15:00Z" for i in range(30)])
    landed = land_file(write_csv(frame, tmp_path / "march.csv"), spec, tmp_path)
    root = spec.source_path(tmp_path)
    days = [d.isoformat() for d, _ in partitions(root)]
    assert not landed.snapshot and days == ["2026-03-01", "2026-03-02", "2026-03-03"]
    first = read_file(partitions(root)[0][1])
    assert len(first) == 10 and str(first["applied_at"].dt.tz) == "UTC"
    assert not snapshot_file(root).is_file()

    later = credit_frame(5, seed=9).assign(applied_at="2026-03-03 08:00:00+00:00")
    land_file(write_csv(later, tmp_path / "more.csv"), spec, tmp_path)
    assert [len(read_file(f)) for f in landed_files(spec, root)] == [10, 10, 5]  # 03-03 replaced, the rest kept


@pytest.mark.parametrize(
    ("change", "error", "said"),
    [
        (lambda f: f.assign(status=f["status"].where(f.index != 3, "unknown")), DataContractError, "'unknown'"),
        (lambda f: f.assign(status=f["status"].where(f.index != 3, None)), DataContractError, "missing"),
        (lambda f: f.drop(columns=["branch"]), DataContractError, "lacks the contract's column(s) ['branch']"),
    ],
    ids=["unmappable-label", "missing-label", "missing-column"],
)
def test_bad_input_says_what_and_where_and_leaves_the_landed_snapshot_untouched(
    spec: DatasetSpec, tmp_path: Path, change: object, error: type[Exception], said: str
) -> None:
    land_file(write_csv(credit_frame(), tmp_path / "good.csv"), spec, tmp_path)
    snapshot = snapshot_file(spec.source_path(tmp_path))
    before = snapshot.read_bytes()
    bad = write_csv(change(credit_frame(60, seed=5)), tmp_path / "bad.csv")  # type: ignore[operator]
    with pytest.raises(error) as raised:
        land_file(bad, spec, tmp_path)
    assert said in str(raised.value) and str(bad) in str(raised.value)
    assert raised.value.fix  # type: ignore[attr-defined]
    assert snapshot.read_bytes() == before


def test_unparsable_times_are_refused_before_any_partition_is_written(tmp_path: Path) -> None:
    spec = parse_spec(TIMED, where="timed spec")
    frame = credit_frame(6).assign(applied_at=["2026-03-01", "2026-03-02", "yesterday", "2026-03-02", "", "x"])
    with pytest.raises(DataContractError, match=r"2 value\(s\) are not a time \(e.g. 'x', 'yesterday'\); 1 value"):
        land_file(write_csv(frame, tmp_path / "t.csv"), spec, tmp_path)
    assert partitions(spec.source_path(tmp_path)) == []


@pytest.mark.parametrize(
    ("name", "content", "error", "said"),
    [
        ("applicants.xlsx", b"PK\x03\x04 not a table", DataContractError, "cannot read the data file as parquet"),
        ("applicants.csv", b"\xff\xfe\x00 not text", DataContractError, "cannot read the data file as CSV"),
        ("applicants.csv", b"", DataContractError, "empty"),
        ("absent.csv", None, ConfigError, "does not exist"),
    ],
)
def test_files_that_cannot_be_read_are_refused_with_a_fix(
    spec: DatasetSpec, tmp_path: Path, name: str, content: bytes | None, error: type[Exception], said: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(error, match=said) as raised:
        land_file(tmp_path / name, spec, tmp_path)
    assert raised.value.fix  # type: ignore[attr-defined]
    assert not spec.source_path(tmp_path).is_dir()


def test_a_source_path_naming_a_csv_file_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    csv = write_csv(credit_frame(), tmp_path / "applicants.csv")
    spec = parse_spec(SPEC.replace("path: data/byo-credit", f"path: {csv}"), where="spec")
    for read in (lambda: partitions(csv), lambda: landed_files(spec, csv), lambda: land_file(csv, spec, tmp_path)):
        with pytest.raises(ConfigError, match="names a data file") as raised:
            read()
        assert "riskloop data land applicants.csv --spec" in str(raised.value)
    # a .csv path that does not exist yet is no landing directory either
    with pytest.raises(ConfigError, match="names a data file"):
        landed_files(spec, tmp_path / "later.csv")


def _cli(*args: str, state: Path) -> tuple[int, str]:
    from riskloop.cli import app

    r = CliRunner().invoke(app, list(args), env={"RISKLOOP_STATE_DIR": str(state), "COLUMNS": "200"})
    return r.exit_code, r.output


def test_the_cli_lands_a_file_and_refuses_a_window_for_a_snapshot_spec(tmp_path: Path) -> None:
    spec_file = tmp_path / "byo-credit.yaml"
    spec_file.write_text(SPEC)
    state = tmp_path / "state"

    code, out = _cli("run", "training", "--spec", str(spec_file), state=state)
    assert code == 2 and "no landed snapshot for byo-credit" in out and "riskloop data land" in out, out

    code, out = _cli(
        "data", "land", str(write_csv(credit_frame(), tmp_path / "a.csv")), "--spec", str(spec_file), state=state
    )
    assert code == 0, out
    assert "one snapshot (no time column)" in out and "row_id (created from the row number)" in out, out
    assert snapshot_file(state / "data" / "byo-credit").is_file()

    for window in (["--days", "30"], ["--end", "2026-01-31"], ["--end", "2026-01-31", "--days", "2"]):
        code, out = _cli("run", "training", "--spec", str(spec_file), *window, state=state)
        assert code == 2, out
        assert f"dataset spec {spec_file} has no time column" in " ".join(out.split()), out
        assert "whole landed snapshot" in out and "leave out" in out, out

    bad = write_csv(credit_frame().assign(status="maybe"), tmp_path / "b.csv")
    code, out = _cli("data", "land", str(bad), "--spec", str(spec_file), state=state)
    assert code == 2 and "'maybe'" in out and "label.positive" in " ".join(out.split()), out
