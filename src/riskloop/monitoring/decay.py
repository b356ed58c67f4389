"""Performance decay: the champion's predictions joined with the labels that have arrived, per day and per window.

Labels arrive late (chargebacks days after the transaction). As of an instant
``as_of`` (:func:`known_labels`):

* a transaction is **positive** once its label is positive and, for datasets
  with a label-availability column (``chargeback_timestamp``), that column is
  ``<= as_of``;
* a transaction is **negative** once it is older than ``maturity_days`` at
  ``as_of`` and no positive label is known for it. A fraud whose chargeback
  comes later still counts as negative: that is what anyone could know then
  (for the synthetic set, chargebacks come 1 + Gamma(2, 1.5) days after the
  transaction, so ~9 % of frauds are still unknown after 7 days);
* anything younger is **unlabelled** and left out.

Metrics are computed only on **mature days** (every transaction of the day is
older than ``maturity_days``): a younger day would hold its known frauds but
not yet its negatives, which inflates PR-AUC.

Per day and per window (:class:`Performance`):

* **PR-AUC** (average precision, scikit-learn's definition), with a seeded
  stratified percentile-bootstrap interval and standard error. PR-AUC moves
  with the fraud rate as well as with the model: compare windows with similar
  prevalence, or read it beside recall.
* **recall at the model's fixed decision threshold**: the share of known frauds
  the deployed model *flagged* (the prediction log's ``decision``), i.e. at the
  threshold chosen at training time on validation data for the model's target
  false-positive rate and logged with every prediction. Not re-tuned on the
  monitored labels. Wilson interval. The FPR at that threshold is reported too.

:func:`detect_decay` asks whether a recent window is significantly worse than
a baseline: the model's own test evaluation (:func:`baseline_from_evaluation`)
or the first monitored days (:func:`window_performance` of those rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from riskloop.data.spec import DatasetSpec
from riskloop.errors import ConfigError, DataContractError
from riskloop.monitoring.stats import (
    bootstrap_average_precision,
    one_sided_drop_p_value,
    proportion_drop_p_value,
    wilson_interval,
)

LABEL = "label"
CHAMPION = "champion"
_LOG_COLUMNS = ("transaction_id", "time", "model_version", "role", "score", "decision", "threshold")


@dataclass(frozen=True)
class Performance:
    """A model's quality on one labelled window (figures NaN where undefined, e.g. no positives).

    ``recall`` = ``true_positives / positives`` at the model's own decision
    threshold(s) (``threshold`` is NaN when the window mixes several);
    ``pr_auc_se`` is the bootstrap standard error, NaN when unknown (e.g. a
    baseline taken from recorded metrics).
    """

    n: int
    positives: int
    pr_auc: float
    pr_auc_low: float
    pr_auc_high: float
    pr_auc_se: float
    recall: float
    recall_low: float
    recall_high: float
    true_positives: int
    false_positives: int
    fpr: float
    threshold: float


@dataclass(frozen=True)
class DayPerformance:
    """:class:`Performance` of one model version on one UTC day of prediction times."""

    day: date
    model_version: str
    performance: Performance


@dataclass(frozen=True)
class DecayResult:
    """Whether ``recent`` is significantly worse than ``baseline``.

    Two one-sided tests: PR-AUC (normal approximation with both standard errors)
    and recall at the fixed threshold (pooled two-proportion z-test). With two
    tests, each is read at ``alpha / 2`` (Bonferroni). ``significant`` needs a
    test rejected *and* its drop at least ``min_drop``, and ``enough_labels``
    (``min_positives`` known frauds on each side). ``reasons`` says which.
    """

    baseline: Performance
    recent: Performance
    pr_auc_drop: float
    pr_auc_p_value: float
    recall_drop: float
    recall_p_value: float
    alpha: float
    min_drop: float
    min_positives: int
    enough_labels: bool
    significant: bool
    reasons: tuple[str, ...]


def known_labels(
    transactions: pd.DataFrame, spec: DatasetSpec, *, as_of: datetime, maturity_days: float | None = None
) -> pd.DataFrame:
    """``[<id column>, label]`` of the transactions whose label is known at ``as_of``.

    ``maturity_days`` defaults to the spec's ``label.maturity_days``; the rules
    are in the module docstring. ``transactions`` holds the spec's id,
    timestamp, label and (if any) label-availability columns.
    """
    if as_of.utcoffset() is None:
        raise ConfigError(
            f"as_of={as_of.isoformat()} has no timezone",
            where="known_labels",
            fix="pass a tz-aware datetime, e.g. datetime(..., tzinfo=UTC)",
        )
    if spec.timestamp_column is None:
        raise ConfigError(
            f"dataset {spec.name!r} has no timestamp column",
            where="known_labels",
            fix="monitor decay only for datasets with a time axis",
        )
    maturity = spec.label.maturity_days if maturity_days is None else maturity_days
    if maturity < 0:
        raise ConfigError(f"maturity_days must be >= 0, got {maturity}", where="known_labels", fix="use e.g. 7")
    id_col, ts_col, label_col, avail_col = (
        spec.id_column,
        spec.timestamp_column,
        spec.label.column,
        spec.label.available_at,
    )
    needed = [id_col, ts_col, label_col, *([avail_col] if avail_col else [])]
    missing = [c for c in needed if c not in transactions.columns]
    if missing:
        raise DataContractError(
            f"columns missing from the transactions: {missing}",
            where="known_labels",
            fix=f"pass the {spec.name!r} transactions with their label columns",
        )
    cutoff = pd.Timestamp(as_of)
    ts = pd.to_datetime(transactions[ts_col], utc=True)
    positive = transactions[label_col].fillna(0).astype("int64").to_numpy() == 1
    if avail_col:
        arrived = pd.to_datetime(transactions[avail_col], utc=True)
        positive &= (arrived.notna() & (arrived <= cutoff)).to_numpy()
    else:
        positive &= (ts <= cutoff).to_numpy()
    mature = (ts <= cutoff - pd.Timedelta(days=maturity)).to_numpy()
    keep = positive | mature
    return pd.DataFrame(
        {
            id_col: transactions[id_col].to_numpy()[keep],
            LABEL: positive[keep].astype("int64"),
        }
    )


def join_labels(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    id_column: str = "transaction_id",
    role: str | None = CHAMPION,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Prediction-log rows of ``role`` (and ``model_version``, if given) that have a known label.

    A transaction scored more than once in that role keeps its first scoring.
    Columns: the log's ``transaction_id, time, model_version, role, score,
    decision, threshold`` and ``label``; sorted by time.
    """
    missing = [c for c in _LOG_COLUMNS if c not in predictions.columns]
    if missing:
        raise DataContractError(
            f"prediction-log columns missing: {missing}",
            where="join_labels",
            fix="pass the frame returned by riskloop.serving.prediction_log.read_prediction_log",
        )
    if id_column not in labels.columns or LABEL not in labels.columns:
        raise DataContractError(
            f"labels need columns {id_column!r} and {LABEL!r}",
            where="join_labels",
            fix="pass the frame returned by known_labels",
        )
    rows = predictions[list(_LOG_COLUMNS)]
    if role is not None:
        rows = rows[rows["role"] == role]
    if model_version is not None:
        rows = rows[rows["model_version"] == model_version]
    rows = rows.sort_values("time", kind="stable").drop_duplicates("transaction_id", keep="first")
    lab = labels[[id_column, LABEL]].drop_duplicates(id_column).rename(columns={id_column: "transaction_id"})
    lab = lab.astype({"transaction_id": str})
    joined = rows.astype({"transaction_id": str}).merge(lab, on="transaction_id", how="inner", validate="one_to_one")
    return joined.reset_index(drop=True)


def window_performance(
    joined: pd.DataFrame, *, confidence: float = 0.95, n_boot: int = 200, seed: int = 0
) -> Performance:
    """:class:`Performance` of the rows of :func:`join_labels` (all of them, as one window)."""
    _require_joined(joined, "window_performance")
    y = joined[LABEL].to_numpy(np.int64)
    s = joined["score"].to_numpy(np.float64)
    flagged = (joined["decision"] == "flagged").to_numpy()
    positives, n = int(y.sum()), len(y)
    tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
    pr_auc, pr_low, pr_high, pr_se = bootstrap_average_precision(y, s, n_boot=n_boot, seed=seed, confidence=confidence)
    recall = tp / positives if positives else math.nan
    r_low, r_high = wilson_interval(tp, positives, confidence)
    negatives = n - positives
    thresholds = joined["threshold"].dropna().unique()
    return Performance(
        n=n,
        positives=positives,
        pr_auc=pr_auc,
        pr_auc_low=pr_low,
        pr_auc_high=pr_high,
        pr_auc_se=pr_se,
        recall=recall,
        recall_low=r_low,
        recall_high=r_high,
        true_positives=tp,
        false_positives=fp,
        fpr=fp / negatives if negatives else math.nan,
        threshold=float(thresholds[0]) if len(thresholds) == 1 else math.nan,
    )


def daily_performance(
    joined: pd.DataFrame,
    *,
    as_of: datetime,
    maturity_days: float,
    confidence: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[DayPerformance, ...]:
    """:class:`Performance` per model version and mature UTC day (see the module docstring), oldest first.

    A day is mature when it ended at least ``maturity_days`` before ``as_of``.
    Each day's bootstrap uses its own seed derived from ``seed`` and the day.
    """
    _require_joined(joined, "daily_performance")
    last_mature = _last_mature_day(as_of, maturity_days, "daily_performance")
    days = pd.to_datetime(joined["time"], utc=True).dt.date
    out = []
    for (version, key), rows in joined.groupby([joined["model_version"], days], sort=True):
        day = key if isinstance(key, date) else date.fromisoformat(str(key))
        if day > last_mature:
            continue
        day_seed = seed * 1_000_003 + day.toordinal()
        perf = window_performance(rows, confidence=confidence, n_boot=n_boot, seed=day_seed)
        out.append(DayPerformance(day=day, model_version=str(version), performance=perf))
    return tuple(sorted(out, key=lambda d: (d.day, d.model_version)))


def baseline_from_evaluation(metrics: Mapping[str, float]) -> Performance:
    """A baseline from a model's recorded test evaluation (``Evaluation.metrics()`` keys).

    Needs ``pr_auc``, ``recall``, ``n`` and ``positives``; ``fpr`` and
    ``threshold`` are used when present. No standard error is recorded, so
    :func:`detect_decay` estimates it (see there).
    """
    missing = [k for k in ("pr_auc", "recall", "n", "positives") if k not in metrics]
    if missing:
        raise DataContractError(
            f"evaluation metrics lack {missing}",
            where="baseline_from_evaluation",
            fix="pass the model version's test metrics (pr_auc, recall, n, positives)",
        )
    n, positives = int(metrics["n"]), int(metrics["positives"])
    recall = float(metrics["recall"])
    tp = round(recall * positives)
    fpr = float(metrics.get("fpr", math.nan))
    low, high = wilson_interval(tp, positives) if positives else (math.nan, math.nan)
    return Performance(
        n=n,
        positives=positives,
        pr_auc=float(metrics["pr_auc"]),
        pr_auc_low=math.nan,
        pr_auc_high=math.nan,
        pr_auc_se=math.nan,
        recall=recall,
        recall_low=low,
        recall_high=high,
        true_positives=tp,
        false_positives=round(fpr * (n - positives)) if not math.isnan(fpr) else 0,
        fpr=fpr,
        threshold=float(metrics.get("threshold", math.nan)),
    )


def detect_decay(
    baseline: Performance, recent: Performance, *, alpha: float = 0.05, min_positives: int = 30, min_drop: float = 0.0
) -> DecayResult:
    """Is ``recent`` significantly worse than ``baseline``? (the tests are described on :class:`DecayResult`).

    A baseline without a PR-AUC standard error (taken from recorded metrics)
    borrows the recent window's, scaled by ``sqrt(recent.positives /
    baseline.positives)``: average precision's sampling error is driven by the
    number of positives. ``min_drop`` is an absolute drop (PR-AUC and recall
    are both in [0, 1]) below which a significant change is not acted on.
    """
    where = f"detect_decay(alpha={alpha!r}, min_positives={min_positives!r}, min_drop={min_drop!r})"
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}", where=where, fix="use alpha=0.05")
    if min_positives < 1 or min_drop < 0:
        raise ConfigError(
            "min_positives must be >= 1 and min_drop >= 0", where=where, fix="use e.g. min_positives=30, min_drop=0.0"
        )
    reasons: list[str] = []
    enough = recent.positives >= min_positives and baseline.positives >= min_positives
    if not enough:
        reasons.append(
            f"not enough labels: {recent.positives} recent and {baseline.positives} baseline "
            f"positives, {min_positives} needed on each side"
        )
    se_base = baseline.pr_auc_se
    if math.isnan(se_base) and baseline.positives > 0 and recent.positives > 0:
        se_base = recent.pr_auc_se * math.sqrt(recent.positives / baseline.positives)
    pr_drop = baseline.pr_auc - recent.pr_auc
    pr_p = one_sided_drop_p_value(baseline.pr_auc, recent.pr_auc, se_base, recent.pr_auc_se)
    recall_drop = baseline.recall - recent.recall
    recall_p = proportion_drop_p_value(
        baseline.true_positives, baseline.positives, recent.true_positives, recent.positives
    )
    level = alpha / 2
    significant = False
    for name, drop, p in (("PR-AUC", pr_drop, pr_p), ("recall", recall_drop, recall_p)):
        if math.isnan(p) or p >= level:
            continue
        if drop < min_drop:
            reasons.append(f"{name} drop {drop:.3f} is significant (p={p:.2g}) but below min_drop {min_drop:g}")
            continue
        reasons.append(f"{name} dropped {drop:.3f} (p={p:.2g} < {level:g})")
        significant = significant or enough
    return DecayResult(
        baseline=baseline,
        recent=recent,
        pr_auc_drop=pr_drop,
        pr_auc_p_value=pr_p,
        recall_drop=recall_drop,
        recall_p_value=recall_p,
        alpha=alpha,
        min_drop=min_drop,
        min_positives=min_positives,
        enough_labels=enough,
        significant=significant,
        reasons=tuple(reasons),
    )


def mature_rows(joined: pd.DataFrame, *, as_of: datetime, maturity_days: float) -> pd.DataFrame:
    """The rows of :func:`join_labels` on mature days: what a recent window's :func:`window_performance` takes."""
    _require_joined(joined, "mature_rows")
    days = pd.to_datetime(joined["time"], utc=True).dt.date
    kept: pd.DataFrame = joined[days <= _last_mature_day(as_of, maturity_days, "mature_rows")]
    return kept.reset_index(drop=True)


def recent_mature_rows(joined: pd.DataFrame, *, as_of: datetime, maturity_days: float, days: int) -> pd.DataFrame:
    """The rows of :func:`join_labels` on the last ``days`` mature days as of ``as_of``: the recent window.

    With ``maturity_days=7`` and ``as_of`` the end of day D, the mature days end on
    D-7 and a 7-day window covers D-13 .. D-7.
    """
    if days < 1:
        raise ConfigError(f"a window of {days} day(s)", where="recent_mature_rows", fix="use days >= 1, e.g. 7")
    mature = mature_rows(joined, as_of=as_of, maturity_days=maturity_days)
    first = _last_mature_day(as_of, maturity_days, "recent_mature_rows") - pd.Timedelta(days=days - 1)
    kept: pd.DataFrame = mature[pd.to_datetime(mature["time"], utc=True).dt.date >= first]
    return kept.reset_index(drop=True)


def _last_mature_day(as_of: datetime, maturity_days: float, where: str) -> date:
    if as_of.utcoffset() is None:
        raise ConfigError(
            f"as_of={as_of.isoformat()} has no timezone",
            where=where,
            fix="pass a tz-aware datetime, e.g. datetime(..., tzinfo=UTC)",
        )
    if maturity_days < 0:
        raise ConfigError(f"maturity_days must be >= 0, got {maturity_days}", where=where, fix="use e.g. 7")
    end = pd.Timestamp(as_of).tz_convert("UTC") - pd.Timedelta(days=maturity_days)
    return (end - pd.Timedelta(days=1)).date()


def _require_joined(joined: pd.DataFrame, where: str) -> None:
    missing = [c for c in (*_LOG_COLUMNS, LABEL) if c not in joined.columns]
    if missing:
        raise DataContractError(f"columns missing: {missing}", where=where, fix="pass the frame of join_labels")


__all__ = [
    "DayPerformance",
    "DecayResult",
    "Performance",
    "baseline_from_evaluation",
    "daily_performance",
    "detect_decay",
    "join_labels",
    "known_labels",
    "mature_rows",
    "recent_mature_rows",
    "window_performance",
]
