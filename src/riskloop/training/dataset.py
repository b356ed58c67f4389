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

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from riskloop.data.spec import DatasetSpec
from riskloop.errors import TrainingError
from riskloop.features.compute import REALTIME_FEATURES, STORE_FEATURES, event_hour

LABEL = "label"
SPLIT = "split"
# rows younger than the label maturity at the cutoff: their labels are not known yet, so no model learns or is
# judged on them; they are kept (features only) as the newest picture of the inputs, the drift reference
UNLABELLED = "unlabelled"
LABELLED_SPLITS = ("train", "validation", "test")
RAW_TRANSACTION_FEATURES = ("amount", "distance_from_home_km", "card_age_days", "event_hour")
RAW_CATEGORICAL = ("merchant_category", "channel", "device_type", "country")


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


@dataclass(frozen=True)
class FeatureSpec:
    """The model's ordered inputs and, for categoricals, their fixed category order."""

    names: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]

    @property
    def types(self) -> list[str]:
        return ["c" if n in self.categories else "q" for n in self.names]

    def to_dict(self) -> list[dict[str, object]]:
        return [{"name": n, "type": "categorical" if n in self.categories else "float",
                 **({"categories": list(self.categories[n])} if n in self.categories else {})}
                for n in self.names]

    @classmethod
    def from_dict(cls, items: list[dict[str, object]]) -> FeatureSpec:
        names = tuple(str(i["name"]) for i in items)
        cats: dict[str, tuple[str, ...]] = {
            str(i["name"]): tuple(str(c) for c in i["categories"])  # type: ignore[attr-defined]
            for i in items if "categories" in i}
        return cls(names, cats)


def feature_spec(spec: DatasetSpec) -> FeatureSpec:
    """The model inputs a dataset spec implies."""
    if spec.features.source == "raw":
        names = spec.features.raw_columns
    else:
        names = (*RAW_TRANSACTION_FEATURES, *RAW_CATEGORICAL, *STORE_FEATURES, *REALTIME_FEATURES)
    cats = {n: c for n, c in spec.categories.items() if n in names}
    return FeatureSpec(tuple(names), cats)


def label_as_known(df: pd.DataFrame, spec: DatasetSpec, cutoff: datetime) -> pd.Series:
    """1 where the label is positive *and* was known before the cutoff (a naive cutoff is UTC)."""
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=timezone.utc)
    y = df[spec.label.column].astype("int64")
    if spec.label.available_at:
        known = df[spec.label.available_at].notna() & (df[spec.label.available_at] < pd.Timestamp(cutoff))
        y = (y.astype(bool) & known).astype("int64")
    return y


def assemble(tx: pd.DataFrame, features: pd.DataFrame | None, spec: DatasetSpec,
             params: WindowParams) -> pd.DataFrame:
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
        raise TrainingError("no rows left after the label-maturity cut", where=f"cutoff {cutoff}",
                            fix="move the cutoff later or lower maturity_days")
    split = np.full(len(df), UNLABELLED, dtype=object)
    split[mature] = _split(df[mature], spec, params, mature_before)
    df[SPLIT] = split
    return df


def _split(df: pd.DataFrame, spec: DatasetSpec, params: WindowParams,
           end: pd.Timestamp | None) -> np.ndarray:
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
            split[idx[n_test:n_test + n_val]] = "validation"
    counts = pd.Series(split).value_counts()
    for part in ("train", "validation", "test"):
        if counts.get(part, 0) == 0:
            raise TrainingError(f"the {part} split is empty", where=f"{len(df)} rows after the maturity cut",
                                fix="use a longer window or shorter validation/test periods")
    return np.asarray(split)


def matrix(df: pd.DataFrame, fspec: FeatureSpec) -> np.ndarray:
    """The model matrix in feature order: categoricals as codes of the fixed order, NaN = missing."""
    cols = []
    for name in fspec.names:
        if name not in df.columns:
            raise TrainingError(f"feature {name!r} is missing from the training frame",
                                fix="rebuild the training set with the feature service the model expects")
        s = df[name]
        if name in fspec.categories:
            codes = pd.Categorical(s.astype("string").astype(object), categories=list(fspec.categories[name])).codes
            cols.append(np.where(codes < 0, np.nan, codes).astype(np.float32))
        else:
            cols.append(pd.to_numeric(s, errors="coerce").to_numpy(np.float32, na_value=np.nan))
    return np.column_stack(cols) if cols else np.empty((len(df), 0), np.float32)


def training_window(df: pd.DataFrame, spec: DatasetSpec) -> tuple[str, str]:
    """First and last event time of the rows a model learns or is judged on (the unlabelled tail excluded)."""
    if spec.timestamp_column is None:
        return ("", "")
    ts = df.loc[df[SPLIT] != UNLABELLED, spec.timestamp_column] if SPLIT in df else df[spec.timestamp_column]
    return (ts.min().isoformat(), ts.max().isoformat())


def day_start(d: datetime) -> datetime:
    return d.replace(hour=0, minute=0, second=0, microsecond=0)


__all__ = ["LABEL", "LABELLED_SPLITS", "SPLIT", "UNLABELLED", "FeatureSpec", "WindowParams", "assemble", "day_start",
           "feature_spec", "label_as_known", "matrix", "training_window"]
