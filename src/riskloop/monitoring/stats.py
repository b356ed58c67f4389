"""Small statistics the monitor needs, on numpy arrays: multiple testing, intervals, one-sided tests.

* :func:`benjamini_hochberg` controls the false discovery rate over a family of
  p-values (all feature × day drift tests of a window).
* :func:`average_precision` is scikit-learn's ``average_precision_score`` (PR-AUC,
  a step function over distinct scores, ties flagged together), computed for
  many weight vectors at once, which is what a fast bootstrap needs;
  :func:`bootstrap_average_precision` resamples positives and negatives
  separately (the class counts stay fixed, rare positives never vanish).
* :func:`wilson_interval` for a proportion such as recall (``tp / positives``).
* :func:`one_sided_drop_p_value` and :func:`proportion_drop_p_value`: is a
  metric lower now than in a baseline?
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from riskloop.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# the bootstrap's weight matrix is cut into chunks of at most this many cells (8 bytes each)
_BOOTSTRAP_CHUNK_CELLS = 4_000_000


def benjamini_hochberg(p_values: Sequence[float] | FloatArray, fdr: float) -> tuple[BoolArray, FloatArray]:
    """Which hypotheses to reject at false discovery rate ``fdr``, and the BH-adjusted p-values.

    The step-up procedure: sort the ``m`` p-values, find the largest ``k`` with
    ``p_(k) <= k / m * fdr`` and reject the ``k`` smallest. The adjusted p-value
    of ``p_(i)`` is ``min_{j >= i} p_(j) * m / j`` (capped at 1); a hypothesis is
    rejected exactly when its adjusted p-value is ``<= fdr``. Valid for
    independent or positively dependent tests. Results are in input order; an
    empty family rejects nothing.
    """
    if not 0.0 < fdr < 1.0:
        raise ConfigError(f"fdr must lie in (0, 1), got {fdr!r}", where="benjamini_hochberg",
                          fix="use a false discovery rate such as 0.05")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ConfigError(f"p-values must be one-dimensional, got shape {p.shape}", where="benjamini_hochberg",
                          fix="pass a flat sequence of p-values")
    if not np.all((p >= 0.0) & (p <= 1.0)):  # also false for NaN
        raise ConfigError("p-values must be numbers in [0, 1] (no NaN)", where="benjamini_hochberg",
                          fix="leave untested hypotheses out of the family instead of passing NaN")
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=np.bool_), np.zeros(0, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = adjusted_sorted
    return adjusted <= fdr, adjusted


def average_precision(y_true: npt.ArrayLike, y_score: npt.ArrayLike,
                      weights: npt.ArrayLike | None = None) -> FloatArray:
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
        raise ConfigError(f"shapes differ: y_true {y.shape}, y_score {s.shape}, weights {w.shape}",
                          where="average_precision", fix="pass one label, one score and one weight per row")
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


def bootstrap_average_precision(y_true: npt.ArrayLike, y_score: npt.ArrayLike, *, n_boot: int, seed: int,
                                confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``(point, low, high, se)``: PR-AUC, its percentile bootstrap interval and bootstrap standard error.

    Positives and negatives are resampled separately, each to its own count
    (draw counts used as weights, so one sort serves every resample);
    deterministic by ``seed``. Needs at least one positive and one negative,
    otherwise every figure is NaN.
    """
    if n_boot < 2:
        raise ConfigError(f"n_boot must be at least 2, got {n_boot}", where="bootstrap_average_precision",
                          fix="use n_boot=200 or more")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}", where="bootstrap_average_precision",
                          fix="use confidence=0.95 for a 95 % interval")
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    y_sorted = y[order]
    ends = _run_ends(s[order])
    pos, neg = np.flatnonzero(y_sorted == 1), np.flatnonzero(y_sorted == 0)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan, math.nan, math.nan, math.nan
    point = float(_sorted_average_precision(y_sorted, ends, np.ones((1, len(y))))[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // len(y))
    stats: list[FloatArray] = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w = np.zeros((b, len(y)))
        w[:, pos] = _resample_counts(rng, len(pos), b)
        w[:, neg] = _resample_counts(rng, len(neg), b)
        stats.append(_sorted_average_precision(y_sorted, ends, w))
    values = np.concatenate(stats)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return point, float(low), float(high), float(np.std(values, ddof=1))


def _resample_counts(rng: np.random.Generator, k: int, b: int) -> npt.NDArray[np.int64]:
    """``(b, k)``: how often each of ``k`` items is drawn in each of ``b`` resamples of size ``k`` with replacement."""
    draws = rng.integers(0, k, size=(b, k)) + (np.arange(b) * k)[:, None]
    counts: npt.NDArray[np.int64] = np.bincount(draws.ravel(), minlength=b * k).reshape(b, k)
    return counts


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; ``(nan, nan)`` when there are no trials."""
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ConfigError(f"successes={successes} outside [0, trials={trials}]", where="wilson_interval",
                          fix="count successes among the trials")
    z = _normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
    return _normal_sf((baseline - recent) / se)


def proportion_drop_p_value(successes_baseline: int, trials_baseline: int,
                            successes_recent: int, trials_recent: int) -> float:
    """One-sided pooled two-proportion z-test of "the recent proportion is lower"; NaN without trials."""
    if trials_baseline <= 0 or trials_recent <= 0:
        return math.nan
    pooled = (successes_baseline + successes_recent) / (trials_baseline + trials_recent)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_baseline + 1 / trials_recent))
    drop = successes_baseline / trials_baseline - successes_recent / trials_recent
    if se == 0.0:  # both proportions are 0 or both are 1: no evidence of a drop
        return 1.0
    return _normal_sf(drop / se)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


__all__ = [
    "average_precision",
    "benjamini_hochberg",
    "bootstrap_average_precision",
    "one_sided_drop_p_value",
    "proportion_drop_p_value",
    "wilson_interval",
]
