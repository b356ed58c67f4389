"""Small statistics the monitor needs, on numpy arrays: multiple testing, intervals, one-sided tests.

* :func:`benjamini_hochberg` controls the false discovery rate over a family of
  p-values (all feature × day drift tests of a window), with scipy's
  ``false_discovery_control``.
* :func:`average_precision` is scikit-learn's ``average_precision_score`` (PR-AUC,
  a step function over distinct scores, ties flagged together), computed for
  many weight vectors at once, which is what a fast bootstrap needs;
  :func:`bootstrap_average_precision` resamples positives and negatives
  separately through :func:`riskloop.stats.stratified_bootstrap` (the class
  counts stay fixed, rare positives never vanish).
* :func:`wilson_interval` for a proportion such as recall (``tp / positives``),
  from statsmodels.
* :func:`one_sided_drop_p_value` and :func:`proportion_drop_p_value` (statsmodels'
  pooled z-test): is a metric lower now than in a baseline?
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import false_discovery_control, norm
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from riskloop.errors import ConfigError
from riskloop.stats import stratified_bootstrap

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def benjamini_hochberg(p_values: Sequence[float] | FloatArray, fdr: float) -> tuple[BoolArray, FloatArray]:
    """Which hypotheses to reject at false discovery rate ``fdr``, and the BH-adjusted p-values.

    The adjusted p-values are ``scipy.stats.false_discovery_control(p, method="bh")``;
    a hypothesis is rejected exactly when its adjusted p-value is ``<= fdr``,
    which is the step-up procedure (reject the ``k`` smallest for the largest
    ``k`` with ``p_(k) <= k / m * fdr``). Valid for independent or positively
    dependent tests. Results are in input order; an empty family rejects
    nothing. The input is checked here rather than left to scipy so that the
    error names the fix.
    """
    if not 0.0 < fdr < 1.0:
        raise ConfigError(
            f"fdr must lie in (0, 1), got {fdr!r}",
            where="benjamini_hochberg",
            fix="use a false discovery rate such as 0.05",
        )
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ConfigError(
            f"p-values must be one-dimensional, got shape {p.shape}",
            where="benjamini_hochberg",
            fix="pass a flat sequence of p-values",
        )
    if not np.all((p >= 0.0) & (p <= 1.0)):  # also false for NaN
        raise ConfigError(
            "p-values must be numbers in [0, 1] (no NaN)",
            where="benjamini_hochberg",
            fix="leave untested hypotheses out of the family instead of passing NaN",
        )
    adjusted = np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64)
    return adjusted <= fdr, adjusted


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
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if y.ndim != 1 or s.shape != y.shape or w.shape[1] != len(y):
        raise ConfigError(
            f"shapes differ: y_true {y.shape}, y_score {s.shape}, weights {w.shape}",
            where="average_precision",
            fix="pass one label, one score and one weight per row",
        )
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


def bootstrap_average_precision(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, *, n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """``(point, low, high, se)``: PR-AUC, its percentile bootstrap interval and bootstrap standard error.

    :func:`riskloop.stats.stratified_bootstrap` resamples positives and
    negatives separately, each to its own count; each resample's row indices
    become draw counts used as weights, so one sort serves every resample
    (sorting each resample instead would cost ``n_boot`` sorts). Deterministic
    by ``seed``. Needs at least one positive and one negative, otherwise every
    figure is NaN.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    y_sorted = y[order]
    ends = _run_ends(s[order])
    point = float(_sorted_average_precision(y_sorted, ends, np.ones((1, len(y))))[0])

    def resampled_ap(idx: npt.NDArray[np.intp]) -> FloatArray:
        b = idx.shape[0]
        counts = np.bincount((idx + (np.arange(b) * len(y))[:, None]).ravel(), minlength=b * len(y))
        return _sorted_average_precision(y_sorted, ends, counts.reshape(b, len(y)).astype(np.float64))

    low, high, se = stratified_bootstrap(
        y_sorted, resampled_ap, n_boot=n_boot, confidence=confidence, seed=seed, where="bootstrap_average_precision"
    )
    return (point, low, high, se) if not math.isnan(low) else (math.nan, math.nan, math.nan, math.nan)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; ``(nan, nan)`` when there are no trials.

    ``statsmodels.stats.proportion.proportion_confint(method="wilson")``; the
    guards stay here because statsmodels divides by zero trials and accepts
    ``successes > trials``.
    """
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ConfigError(
            f"successes={successes} outside [0, trials={trials}]",
            where="wilson_interval",
            fix="count successes among the trials",
        )
    low, high = proportion_confint(successes, trials, alpha=1.0 - confidence, method="wilson")
    return float(low), float(high)


def one_sided_drop_p_value(baseline: float, recent: float, se_baseline: float, se_recent: float) -> float:
    """P-value of "recent is lower than baseline" from two independent estimates and their standard errors.

    ``z = (baseline - recent) / sqrt(se_b^2 + se_r^2)``, ``p = 1 - Phi(z)``.
    NaN when an input is NaN or both standard errors are zero.
    """
    values = (baseline, recent, se_baseline, se_recent)
    if any(math.isnan(v) for v in values):
        return math.nan
    se = math.hypot(se_baseline, se_recent)
    if se == 0.0:
        return math.nan
    return float(norm.sf((baseline - recent) / se))


def proportion_drop_p_value(
    successes_baseline: int, trials_baseline: int, successes_recent: int, trials_recent: int
) -> float:
    """One-sided pooled two-proportion z-test of "the recent proportion is lower"; NaN without trials.

    ``statsmodels.stats.proportion.proportions_ztest(alternative="larger")``
    (pooled variance, baseline first). Where the pooled variance is zero (both
    proportions 0, or both 1) statsmodels divides by zero; that is no evidence
    of a drop, so the answer is 1.0.
    """
    if trials_baseline <= 0 or trials_recent <= 0:
        return math.nan
    successes = successes_baseline + successes_recent
    if successes in (0, trials_baseline + trials_recent):
        return 1.0
    _, p = proportions_ztest(
        [successes_baseline, successes_recent], [trials_baseline, trials_recent], alternative="larger"
    )
    return float(p)


__all__ = [
    "average_precision",
    "benjamini_hochberg",
    "bootstrap_average_precision",
    "one_sided_drop_p_value",
    "proportion_drop_p_value",
    "wilson_interval",
]
