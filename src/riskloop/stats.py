"""The one stratified bootstrap: training's metric intervals and the monitor's PR-AUC interval both use it.

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
    resample from one sort (see :func:`riskloop.monitoring.stats.bootstrap_average_precision`).
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


__all__ = ["stratified_bootstrap"]
