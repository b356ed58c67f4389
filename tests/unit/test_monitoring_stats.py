"""The monitor's statistics: Benjamini-Hochberg against a hand computation, PR-AUC against scikit-learn, interval
coverage, and the one-sided tests against their textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from riskloop.errors import ConfigError
from riskloop.monitoring.stats import (
    average_precision,
    benjamini_hochberg,
    bootstrap_average_precision,
    one_sided_drop_p_value,
    proportion_drop_p_value,
    wilson_interval,
)


def test_bh_matches_a_hand_computation() -> None:
    # sorted: 0.001, 0.03, 0.032, 0.5; BH lines k/4 * 0.05 = 0.0125, 0.025, 0.0375, 0.05.
    # 0.03 > 0.025 but 0.032 <= 0.0375: step-up rejects the three smallest.
    # adjusted: 0.001*4/1 = 0.004; 0.03*4/2 = 0.06 -> min(0.06, 0.032*4/3) = 0.042667; 0.042667; 0.5*4/4 = 0.5
    p = [0.5, 0.032, 0.001, 0.03]
    rejected, adjusted = benjamini_hochberg(p, 0.05)
    assert rejected.tolist() == [False, True, True, True]
    assert adjusted.tolist() == pytest.approx([0.5, 0.032 * 4 / 3, 0.004, 0.032 * 4 / 3])


def test_bh_rejects_nothing_when_the_smallest_misses_its_line() -> None:
    rejected, adjusted = benjamini_hochberg([0.02, 0.03, 0.04], 0.05 / 3)  # lines 0.0056, 0.011, 0.0167
    assert not rejected.any()
    assert adjusted.tolist() == pytest.approx([0.04, 0.04, 0.04])


def test_bh_rejections_are_the_step_up_procedure() -> None:
    # scipy gives adjusted p-values only; rejecting adjusted <= fdr must equal the step-up rule
    p = np.random.default_rng(3).random(200) ** 3
    rejected, _ = benjamini_hochberg(p, 0.1)
    ordered = np.sort(p)
    below = np.flatnonzero(ordered <= np.arange(1, len(p) + 1) / len(p) * 0.1)
    k = below[-1] + 1 if len(below) else 0
    assert 0 < k < len(p)
    assert rejected.tolist() == (p <= ordered[k - 1]).tolist()


def test_bh_edge_cases() -> None:
    rejected, adjusted = benjamini_hochberg([], 0.05)
    assert rejected.size == 0 and adjusted.size == 0
    with pytest.raises(ConfigError, match="no NaN"):
        benjamini_hochberg([0.1, math.nan], 0.05)
    with pytest.raises(ConfigError, match="fdr"):
        benjamini_hochberg([0.1], 0.0)


def test_average_precision_equals_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 20, 500) / 20  # many ties
    w = rng.integers(0, 4, size=(3, 500)).astype(float)
    assert average_precision(y, s)[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    for row, value in zip(w, average_precision(y, s, w), strict=True):
        assert value == pytest.approx(average_precision_score(y, s, sample_weight=row), abs=1e-12)
    assert math.isnan(average_precision([0, 0], [0.1, 0.2])[0])


def test_wilson_interval_known_value_and_coverage() -> None:
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ConfigError, match="outside"):
        wilson_interval(11, 10)
    # coverage sanity: recall 0.6 on 80 positives, 400 seeded windows
    rng = np.random.default_rng(1)
    hits = [wilson_interval(int(k), 80)[0] <= 0.6 <= wilson_interval(int(k), 80)[1] for k in rng.binomial(80, 0.6, 400)]
    assert 0.92 <= np.mean(hits) <= 0.98


def test_bootstrap_pr_auc_interval_covers_the_population_value() -> None:
    def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.05).astype(int)
        return y, np.where(y == 1, rng.normal(1.5, 1.0, n), rng.normal(0.0, 1.0, n))

    y_big, s_big = draw(1_000_000, np.random.default_rng(0))
    population = float(average_precision(y_big, s_big)[0])
    covered, widths = [], []
    for i in range(60):
        y, s = draw(3000, np.random.default_rng(100 + i))
        point, low, high, se = bootstrap_average_precision(y, s, n_boot=200, seed=i)
        assert low <= point <= high and se > 0
        covered.append(low <= population <= high)
        widths.append(high - low)
    # a percentile bootstrap of AP under-covers a little on ~150 positives (measured 0.90-0.92)
    assert 0.8 <= np.mean(covered) <= 1.0
    assert bootstrap_average_precision(y, s, n_boot=200, seed=5) == bootstrap_average_precision(
        y, s, n_boot=200, seed=5
    )
    assert all(math.isnan(v) for v in bootstrap_average_precision([0, 0, 0], [0.1, 0.2, 0.3], n_boot=10, seed=0))


def test_bootstrap_pr_auc_with_one_positive_resamples_the_negatives() -> None:
    y = np.array([1] + [0] * 40)
    s = np.r_[0.8, np.linspace(0.0, 1.0, 40)]
    point, low, high, se = bootstrap_average_precision(y, s, n_boot=200, seed=0)
    assert point == pytest.approx(average_precision_score(y, s))
    assert low < point < high and se > 0


@pytest.mark.parametrize(("kwargs", "message"), [({"n_boot": 1}, "n_boot"), ({"confidence": 1.0}, "confidence")])
def test_bootstrap_pr_auc_rejects_bad_params(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bootstrap_average_precision([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], **{"n_boot": 10, "seed": 0, **kwargs})


def test_one_sided_tests_point_the_right_way() -> None:
    assert proportion_drop_p_value(80, 100, 50, 100) < 0.001
    assert proportion_drop_p_value(50, 100, 80, 100) > 0.999
    assert proportion_drop_p_value(0, 10, 0, 10) == 1.0
    assert proportion_drop_p_value(10, 10, 10, 10) == 1.0
    # pooled 0.65, se = sqrt(0.65 * 0.35 * (1/100 + 1/100)) = 0.0674537, z = 0.3 / se = 4.4475
    assert proportion_drop_p_value(80, 100, 50, 100) == pytest.approx(0.5 * math.erfc(4.447496 / math.sqrt(2)))
    assert math.isnan(proportion_drop_p_value(1, 0, 1, 1))
    assert one_sided_drop_p_value(0.5, 0.4, 0.03, 0.04) == pytest.approx(0.02275, abs=1e-4)  # z = 2
    assert math.isnan(one_sided_drop_p_value(0.5, 0.4, 0.0, 0.0))
