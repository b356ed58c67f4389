"""The training frame: features joined point-in-time, labels as known at the cutoff, a time split.

* **Labels as known at the cutoff**: a row counts as positive only if its label
  was available before the cutoff (for the synthetic set: the chargeback arrived
  before it). Rows of the newest ``maturity_days`` before the cutoff are left
  out of training *and* testing: their labels are not mature yet.
* **Split by time, never at random**: train on the earliest days, early-stop on
  the next ``validation_days``, test on the last ``test_days``. Datasets without
  a usable time axis get a seeded, stratified split instead.
* **Stable order**: rows sorted by (timestamp, id), so the same inputs give the
  same matrix, hence a byte-identical model.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from riskloop.data.spec import DatasetSpec
from riskloop.errors import TrainingError
from riskloop.features.compute import event_hour
from riskloop.model import LABEL, SPLIT, UNLABELLED


class WindowParams(BaseModel):
    """The training window and how labels mature (typed KFP parameters validate into this)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cutoff: datetime = Field(description="labels known strictly before this instant count")
    maturity_days: float = Field(default=7, ge=0)
    validation_days: float = Field(default=3, gt=0)
    test_days: float = Field(default=4, gt=0)
    seed: int = 0

    @field_validator("cutoff")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        # event times are UTC: a naive cutoff means UTC, an aware one is converted
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)


def label_as_known(df: pd.DataFrame, spec: DatasetSpec, cutoff: datetime) -> pd.Series:
    """1 where the label is positive *and* was known before the cutoff (a naive cutoff is UTC)."""
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=timezone.utc)
    y = df[spec.label.column].astype("int64")
    if spec.label.available_at:
        known = df[spec.label.available_at].notna() & (df[spec.label.available_at] < pd.Timestamp(cutoff))
        y = (y.astype(bool) & known).astype("int64")
    return y


def assemble(tx: pd.DataFrame, features: pd.DataFrame | None, spec: DatasetSpec, params: WindowParams) -> pd.DataFrame:
    """The training frame: one row per usable transaction with features, label and split.

    Time-split specs: rows before ``cutoff - maturity_days`` are split into
    train / validation / test by time; the younger rows up to the cutoff,
    whose labels are not known yet, get the split ``unlabelled`` and are used
    by nothing that learns or evaluates (they are the drift reference's pool).

    ``features`` is the output of Feast retrieval (keyed by the id column) or
    None for raw-feature specs.
    """
    ts_col, id_col = spec.timestamp_column, spec.id_column
    df = tx.copy()
    if ts_col is not None and "event_hour" not in df:
        df["event_hour"] = event_hour(df[ts_col])
    if features is not None:
        f = features.set_index(id_col)
        dup = [c for c in f.columns if c in df.columns]
        df = df.join(f.drop(columns=dup), on=id_col)
    cutoff = pd.Timestamp(params.cutoff)
    df[LABEL] = label_as_known(df, spec, cutoff.to_pydatetime())
    if ts_col is None:
        df = df.sort_values(id_col, kind="stable").reset_index(drop=True)
        if df.empty:
            raise TrainingError("no rows", where="the training frame", fix="pass a non-empty dataset")
        df[SPLIT] = _split(df, spec, params, None)
        return df
    df = df[df[ts_col] < cutoff]
    mature_before = cutoff - pd.Timedelta(days=params.maturity_days)
    df = df.sort_values([ts_col, id_col], kind="stable").reset_index(drop=True)
    mature = (df[ts_col] < mature_before).to_numpy()
    if not mature.any():
        raise TrainingError(
            "no rows left after the label-maturity cut",
            where=f"cutoff {cutoff}",
            fix="move the cutoff later or lower maturity_days",
        )
    split = np.full(len(df), UNLABELLED, dtype=object)
    split[mature] = _split(df[mature], spec, params, mature_before)
    df[SPLIT] = split
    return df


def _split(df: pd.DataFrame, spec: DatasetSpec, params: WindowParams, end: pd.Timestamp | None) -> np.ndarray:
    if spec.split.kind == "time" and end is not None and spec.timestamp_column:
        ts = df[spec.timestamp_column]
        test_start = end - pd.Timedelta(days=params.test_days)
        val_start = test_start - pd.Timedelta(days=params.validation_days)
        split = np.where(ts >= test_start, "test", np.where(ts >= val_start, "validation", "train"))
    else:
        rng = np.random.default_rng(params.seed)
        split = np.full(len(df), "train", dtype=object)
        y = df[LABEL].to_numpy()
        for cls in (0, 1):  # stratified: each class is split in the same proportions
            idx = np.flatnonzero(y == cls)
            rng.shuffle(idx)
            n_test = round(len(idx) * spec.split.test_fraction)
            n_val = round(len(idx) * spec.split.validation_fraction)
            split[idx[:n_test]] = "test"
            split[idx[n_test : n_test + n_val]] = "validation"
    counts = pd.Series(split).value_counts()
    for part in ("train", "validation", "test"):
        if counts.get(part, 0) == 0:
            raise TrainingError(
                f"the {part} split is empty",
                where=f"{len(df)} rows after the maturity cut",
                fix="use a longer window or shorter validation/test periods",
            )
    return np.asarray(split)


def training_window(df: pd.DataFrame, spec: DatasetSpec) -> tuple[str, str]:
    """First and last event time of the rows a model learns or is judged on (the unlabelled tail excluded)."""
    if spec.timestamp_column is None:
        return ("", "")
    ts = df.loc[df[SPLIT] != UNLABELLED, spec.timestamp_column] if SPLIT in df else df[spec.timestamp_column]
    return (ts.min().isoformat(), ts.max().isoformat())


def day_start(d: datetime) -> datetime:
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


__all__ = ["WindowParams", "assemble", "day_start", "label_as_known", "training_window"]
