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
from riskloop.stats import average_precision, bootstrap_average_precision  # re-exported: the monitor's PR-AUC

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
