"""riskloop.stats: the ranking metrics scored for every bootstrap resample from one sort agree with
scikit-learn, and their intervals are the ones a per-resample scikit-learn metric gives on the same draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from riskloop.errors import ConfigError
from riskloop.stats import bootstrap_ranking_metric, roc_auc
from riskloop.training.evaluate import bootstrap_ci


def test_roc_auc_equals_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = rng.integers(0, 15, 400) / 15  # many ties: a tie counts one half
    w = rng.integers(0, 4, size=(3, 400)).astype(float)
    assert roc_auc(y, s)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    for row, value in zip(w, roc_auc(y, s, w), strict=True):
        assert value == pytest.approx(roc_auc_score(y, s, sample_weight=row), abs=1e-12)
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2])[0])


@pytest.mark.parametrize(
    ("metric", "sklearn_metric"), [("roc_auc", roc_auc_score), ("average_precision", average_precision_score)]
)
def test_the_interval_is_the_per_resample_one(metric: str, sklearn_metric: object) -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(3000) < 0.05).astype(int)
    s = np.round(np.clip(rng.random(3000) * 0.6 + y * 0.3, 0, 1), 2)
    point, low, high, se = bootstrap_ranking_metric(metric, y, s, n_boot=60, seed=5)
    ref_point, ref_low, ref_high = bootstrap_ci(y, s, sklearn_metric, n_boot=60, seed=5)  # type: ignore[arg-type]
    assert (point, low, high) == pytest.approx((ref_point, ref_low, ref_high), abs=1e-12)
    assert low <= point <= high and se > 0


def test_an_unknown_ranking_metric_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown ranking metric"):
        bootstrap_ranking_metric("f1", [0, 1], [0.1, 0.9], n_boot=10, seed=0)
