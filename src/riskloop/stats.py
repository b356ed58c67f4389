"""The one stratified bootstrap (training's metric intervals, the model card's, the monitor's PR-AUC interval),
and the ranking metrics (ROC-AUC, average precision) computed for every bootstrap resample from one sort.

A leaf module (numpy and scipy only) so that :mod:`riskloop.training.evaluate`
and :mod:`riskloop.monitoring.stats` can share it: the monitor must not import
training, and the two used to carry their own resamplers with different
errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import bootstrap

from riskloop.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

# scipy's batch is cut so that one batch of resampled indices holds at most this many cells
_BATCH_CELLS = 4_000_000


def stratified_bootstrap(
    y_true: npt.ArrayLike,
    statistic: Callable[[IndexArray], FloatArray],
    *,
    n_boot: int,
    confidence: float,
    seed: int,
    where: str,
) -> tuple[float, float, float]:
    """``(low, high, se)``: percentile bootstrap interval and standard error of ``statistic``, by class.

    ``scipy.stats.bootstrap`` (``method="percentile"``) resamples the row
    indices of the positives and of the negatives of ``y_true`` (0/1) as two
    independent samples, each with replacement to its own count: every
    resample keeps the class counts, so rare positives never vanish.
    ``statistic`` gets a ``(b, n)`` array of row indices (one resample per
    row, in no particular order) and returns the ``b`` values; handing it indices
    rather than rows lets a caller turn them into draw counts and score every
    resample from one sort (see :func:`bootstrap_ranking_metric`).
    ``se`` is the standard deviation of the resampled values (``ddof=1``).
    Deterministic by ``seed``.

    scipy needs two or more rows per resampled sample; a class with a single
    row is the same in every resample, so it is appended to each resample
    instead of resampled (with one row in each class every resample is the
    data: the interval is the point and ``se`` is 0). Without a row in one
    class every figure is NaN (a class-stratified resample does not exist).
    Raises ConfigError for ``n_boot < 2``, ``confidence`` outside (0, 1),
    labels other than 0/1, or a statistic that is not finite on a resample.
    """
    if n_boot < 2:
        raise ConfigError(f"n_boot must be at least 2, got {n_boot}", where=where, fix="use n_boot=200 or more")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(
            f"confidence must lie in (0, 1), got {confidence!r}", where=where, fix="use 0.95 for a 95 % interval"
        )
    y = np.asarray(y_true)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ConfigError("labels must be a 1-D array of 0 and 1", where=where, fix="map the labels to 0/1")
    classes = [np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
    if any(len(c) == 0 for c in classes):
        return math.nan, math.nan, math.nan
    resampled = [c for c in classes if len(c) > 1]
    fixed = np.array([c[0] for c in classes if len(c) == 1], dtype=np.intp)

    def values(*samples: npt.NDArray[Any], axis: int = -1) -> FloatArray:
        # scipy calls a vectorised statistic with axis=-1: each sample is (b, class count)
        b = samples[0].shape[0] if samples else 1
        parts = [np.asarray(s, dtype=np.intp) for s in samples]
        idx = np.concatenate([*parts, np.broadcast_to(fixed, (b, len(fixed)))], axis=-1)
        out = np.asarray(statistic(idx), dtype=np.float64)
        if not np.isfinite(out).all():
            raise ConfigError(
                "the statistic returned a non-finite value on a resample",
                where=where,
                fix="pass a metric that is defined whenever both classes are present",
            )
        return out

    if not resampled:
        only = float(values()[0])
        return only, only, 0.0
    res = bootstrap(
        resampled,
        values,
        n_resamples=n_boot,
        batch=max(1, _BATCH_CELLS // len(y)),
        vectorized=True,
        paired=False,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high), float(res.standard_error)


def average_precision(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> FloatArray:
    """Average precision (PR-AUC) of ``y_score`` for labels ``y_true``, once per row of ``weights``.

    Equal to ``sklearn.metrics.average_precision_score`` (with ``sample_weight``):
    ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct scores from the highest
    down, rows with equal scores flagged together. ``weights`` is ``(n,)`` or
    ``(b, n)`` (for example bootstrap counts); without it every row weighs 1.
    Returns an array of shape ``(b,)`` (``(1,)`` without weights); NaN where a
    weight vector gives the positives no weight.
    """
    y, s, w = _ranking_inputs(y_true, y_score, weights, "average_precision")
    order = np.argsort(-s, kind="stable")
    return _sorted_average_precision(y[order], _run_ends(s[order]), w[:, order])


def _run_ends(s_sorted: FloatArray) -> npt.NDArray[np.int64]:
    """Index of the last row of each run of equal scores (a threshold flags the whole run)."""
    if len(s_sorted) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])


def _sorted_average_precision(y_sorted: FloatArray, ends: npt.NDArray[np.int64], w_sorted: FloatArray) -> FloatArray:
    if len(ends) == 0:
        return np.full(w_sorted.shape[0], np.nan)
    tp = np.cumsum(w_sorted * y_sorted, axis=1)[:, ends]
    flagged = np.cumsum(w_sorted, axis=1)[:, ends]
    total_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, tp / flagged, 0.0)
        recall = tp / total_pos
    gains = np.diff(recall, axis=1, prepend=0.0)
    ap: FloatArray = np.sum(gains * precision, axis=1)
    ap[total_pos[:, 0] <= 0] = np.nan
    return ap


def roc_auc(y_true: npt.ArrayLike, y_score: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> FloatArray:
    """ROC-AUC of ``y_score`` for labels ``y_true``, once per row of ``weights`` (as :func:`average_precision`).

    Equal to ``sklearn.metrics.roc_auc_score`` (with ``sample_weight``): the weighted share of
    (positive, negative) pairs the scores order correctly, a tie counting one half. NaN where a weight
    vector gives one class no weight.
    """
    y, s, w = _ranking_inputs(y_true, y_score, weights, "roc_auc")
    order = np.argsort(-s, kind="stable")
    return _sorted_roc_auc(y[order], _run_ends(s[order]), w[:, order])


def _ranking_inputs(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, weights: npt.ArrayLike | None, where: str
) -> tuple[FloatArray, FloatArray, FloatArray]:
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if y.ndim != 1 or s.shape != y.shape or w.shape[1] != len(y):
        raise ConfigError(
            f"shapes differ: y_true {y.shape}, y_score {s.shape}, weights {w.shape}",
            where=where,
            fix="pass one label, one score and one weight per row",
        )
    return y, s, w


def _sorted_roc_auc(y_sorted: FloatArray, ends: npt.NDArray[np.int64], w_sorted: FloatArray) -> FloatArray:
    if len(ends) == 0:
        return np.full(w_sorted.shape[0], np.nan)
    pos = np.cumsum(w_sorted * y_sorted, axis=1)[:, ends]  # positive weight at or above each distinct score
    neg = np.cumsum(w_sorted * (1.0 - y_sorted), axis=1)[:, ends]
    total_pos, total_neg = pos[:, -1], neg[:, -1]
    pos_here = np.diff(pos, axis=1, prepend=0.0)
    neg_here = np.diff(neg, axis=1, prepend=0.0)
    below = total_neg[:, None] - neg  # negative weight strictly below each run
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: FloatArray = np.sum(pos_here * (below + 0.5 * neg_here), axis=1) / (total_pos * total_neg)
    auc[(total_pos <= 0) | (total_neg <= 0)] = np.nan
    return auc


RANKING_METRICS: dict[str, Callable[[FloatArray, npt.NDArray[np.int64], FloatArray], FloatArray]] = {
    "roc_auc": _sorted_roc_auc,
    "average_precision": _sorted_average_precision,
}


def bootstrap_ranking_metric(
    metric: str, y_true: npt.ArrayLike, y_score: npt.ArrayLike, *, n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """``(point, low, high, se)`` of ``roc_auc`` or ``average_precision``: the metric, its stratified
    percentile bootstrap interval (:func:`stratified_bootstrap`) and bootstrap standard error.

    Each resample's row indices become draw counts used as weights, so one sort serves every resample
    (scikit-learn per resample sorts ``n_boot`` times: 2.6x slower for ROC-AUC, 2.7x for average precision
    at 24k rows, 2 % positives and 200 resamples, measured side by side on a loaded 2-core machine). The
    draws are those ``stratified_bootstrap`` makes for a per-resample metric on the same rows, so the
    interval is the one :func:`riskloop.training.evaluate.bootstrap_ci` gives with scikit-learn's metric
    (a test checks it).
    Deterministic by ``seed``; NaN figures without a row of each class.
    """
    where = f"bootstrap_ranking_metric({metric!r})"
    if metric not in RANKING_METRICS:
        raise ConfigError(
            f"unknown ranking metric {metric!r}", where=where, fix=f"use one of {sorted(RANKING_METRICS)}"
        )
    sorted_metric = RANKING_METRICS[metric]
    y, s, _ = _ranking_inputs(y_true, y_score, None, where)
    order = np.argsort(-s, kind="stable")
    y_sorted = y[order]
    position = np.empty(len(y), dtype=np.intp)
    position[order] = np.arange(len(y))  # row i of the data is row position[i] in score order
    ends = _run_ends(s[order])
    point = float(sorted_metric(y_sorted, ends, np.ones((1, len(y))))[0])

    def resampled(idx: npt.NDArray[np.intp]) -> FloatArray:
        # idx are row numbers of the data as given (so the draws are those of a per-resample metric); counted
        # at their place in score order, they weigh the one sort
        b = idx.shape[0]
        at = position[idx] + (np.arange(b) * len(y))[:, None]
        counts = np.bincount(at.ravel(), minlength=b * len(y))
        return sorted_metric(y_sorted, ends, counts.reshape(b, len(y)).astype(np.float64))

    low, high, se = stratified_bootstrap(y, resampled, n_boot=n_boot, confidence=confidence, seed=seed, where=where)
    return (point, low, high, se) if not math.isnan(low) else (math.nan, math.nan, math.nan, math.nan)


def bootstrap_average_precision(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, *, n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """PR-AUC with its interval: :func:`bootstrap_ranking_metric` for ``average_precision``."""
    return bootstrap_ranking_metric(
        "average_precision", y_true, y_score, n_boot=n_boot, seed=seed, confidence=confidence
    )


__all__ = [
    "RANKING_METRICS",
    "average_precision",
    "bootstrap_average_precision",
    "bootstrap_ranking_metric",
    "roc_auc",
    "stratified_bootstrap",
]
