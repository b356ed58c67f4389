"""Drift detection: calibrated under no drift, finds shifted numeric, categorical and score distributions.

Evidently builds plotly widgets for every column (~0.1 s each, whatever the
row count), so the calls to ``detect_drift`` are few; the many-seed checks of
the tests themselves run on the same statistics directly (Evidently's KS is
``scipy.stats.ks_2samp``, asserted below).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

from riskloop.errors import ConfigError, DataContractError
from riskloop.monitoring.drift import (
    CHI_SQUARE,
    KS,
    DriftReport,
    chi_square_homogeneity,
    detect_drift,
    normed_wasserstein,
    read_report,
    write_report,
)
from riskloop.monitoring.frames import MISSING
from riskloop.monitoring.stats import benjamini_hochberg

NUMERIC = [f"x{i}" for i in range(8)]
CATEGORICAL = ["merchant_category", "channel"]
CATEGORIES = ["grocery", "restaurant", "fuel", "travel", "jewelry"]
CATEGORY_P = [0.4, 0.3, 0.15, 0.1, 0.05]


def frame(
    n: int, rng: np.random.Generator, *, shift: float = 0.0, online: float = 0.3, score_scale: float = 1.0
) -> pd.DataFrame:
    data: dict[str, object] = {name: rng.normal(shift if name == "x0" else 0.0, 1.0, n) for name in NUMERIC}
    data["merchant_category"] = rng.choice(CATEGORIES, n, p=CATEGORY_P)
    data["channel"] = rng.choice(["pos", "online"], n, p=[1 - online, online])
    data["score"] = np.clip(rng.beta(1, 20, n) * score_scale, 0, 1)
    return pd.DataFrame(data)


def drift(reference: pd.DataFrame, current: pd.DataFrame, **kwargs: object) -> DriftReport:
    return detect_drift(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, **kwargs)  # type: ignore[arg-type]


def test_no_drift_between_samples_of_one_distribution() -> None:
    p_values, any_discovery = [], 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        report = drift(frame(2000, rng), frame(5000, rng), seed=seed)
        p = [*report.p_values.values(), report.score_p_value]
        p_values += p
        any_discovery += bool(benjamini_hochberg(p, 0.05)[0].any())
        assert report.tests == {**dict.fromkeys(NUMERIC, KS), **dict.fromkeys(CATEGORICAL, CHI_SQUARE)}
    rejected = sum(p < 0.05 for p in p_values)
    assert rejected <= 6, f"{rejected} of {len(p_values)} tests rejected at 0.05 with no drift"  # expected 2.2
    assert any_discovery <= 1


def test_false_positive_rates_near_alpha_over_many_seeds() -> None:
    """KS (as Evidently runs it) and the categorical test at 300 seeds, 2,000 vs 20,000 rows; BH over 150 families."""
    ks_p, chi_p, families = [], [], 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        ks_p.append(ks_2samp(rng.normal(size=2000), rng.normal(size=20_000)).pvalue)
        ref = np.bincount(rng.choice(5, 2000, p=CATEGORY_P), minlength=5)
        cur = np.bincount(rng.choice(5, 20_000, p=CATEGORY_P), minlength=5)
        chi_p.append(chi_square_homogeneity(ref, cur)[0])
        if seed < 150:  # a family of 20 tests per seed
            family = [ks_2samp(rng.normal(size=300), rng.normal(size=900), method="asymp").pvalue for _ in range(20)]
            families += bool(benjamini_hochberg(family, 0.05)[0].any())
    for name, p in (("KS", ks_p), ("chi-square", chi_p)):
        rate = np.mean(np.array(p) < 0.05)
        assert 0.025 <= rate <= 0.08, f"{name} rejected {rate:.1%} at alpha 5 %"  # 300 draws: sd 1.3 %
    assert families / 150 <= 0.09  # BH at 5 %: under the global null, P(any discovery) <= 5 %


def test_evidently_ks_is_scipys_two_sample_ks() -> None:
    rng = np.random.default_rng(7)
    ref, cur = frame(500, rng), frame(800, rng, shift=0.1)
    report = drift(ref, cur)
    for name in (*NUMERIC, "score"):
        expected = ks_2samp(ref[name], cur[name]).pvalue
        got = report.score_p_value if name == "score" else report.p_values[name]
        assert got == pytest.approx(expected, rel=1e-9)
    # the effect size beside the p-value: the Wasserstein distance in reference standard deviations
    for f in report.features:
        if f.kind == "numeric":
            expected = wasserstein_distance(ref[f.feature], cur[f.feature]) / np.std(ref[f.feature])
            assert f.effect == pytest.approx(expected, rel=1e-9)
        else:
            assert 0.0 <= f.effect <= 1.0


def test_effect_size_is_in_reference_standard_deviations() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(10.0, 2.0, 50_000)
    # a pure location shift of 0.3 SD has a normed Wasserstein distance of 0.3, whatever the scale
    assert normed_wasserstein(ref, ref + 0.6) == pytest.approx(0.3, rel=0.02)
    assert normed_wasserstein(ref * 100, ref * 100 + 60) == pytest.approx(normed_wasserstein(ref, ref + 0.6))
    # a merchant-level count: every row of a merchant carries its value, a few big merchants hold most rows;
    # each merchant's count moving by 2 the next day is no drift, but it moves a whole step of the CDF
    sizes = np.array([0.3, 0.2, 0.1, *[0.4 / 40] * 40])
    values = np.sort(rng.uniform(0, 1000, len(sizes)))
    day1 = rng.choice(values, 5_000, p=sizes)
    day2 = rng.choice(values + 2, 5_000, p=sizes)
    assert ks_2samp(day1, day2).statistic > 0.15
    assert normed_wasserstein(day1, day2) < 0.05  # sampling noise included; the policy acts from 0.1
    # a constant reference: the distance unscaled; an empty side: NaN
    assert normed_wasserstein(np.full(10, 3.0), np.full(10, 3.5)) == pytest.approx(0.5)
    assert np.isnan(normed_wasserstein(np.array([]), ref))


def test_finds_a_shifted_feature_a_new_channel_mix_and_score_drift(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    report = drift(
        frame(5000, rng), frame(20_000, rng, shift=0.15, online=0.4, score_scale=1.3), html_path=tmp_path / "drift.html"
    )
    assert report.drifted_features() == ("x0", "channel")
    assert report.p_values["x0"] < 1e-6 and report.p_values["channel"] < 1e-6
    assert report.p_values["merchant_category"] > 0.01
    assert report.score_drifted and report.score_p_value < 1e-6
    assert report.drift_share == pytest.approx(2 / 10)
    html = (tmp_path / "drift.html").read_text(encoding="utf-8")
    assert "x0" in html and "channel" in html and report.html_path == str(tmp_path / "drift.html")


def test_a_surge_of_unknown_categories_is_drift_not_dropped_rows() -> None:
    rng = np.random.default_rng(5)
    ref, cur = frame(3000, rng), frame(3000, rng)
    cur.loc[cur.index[:300], "merchant_category"] = None  # 10 % unknown now, none before
    report = drift(ref, cur)
    feature = next(f for f in report.features if f.feature == "merchant_category")
    assert feature.p_value < 1e-10
    assert feature.missing_share_current == pytest.approx(0.1) and feature.missing_share_reference == 0.0


def test_large_windows_are_sampled_uniformly_and_reproducibly() -> None:
    rng = np.random.default_rng(2)
    ref, cur = frame(2000, rng), frame(30_000, rng)
    a, b = drift(ref, cur, max_rows=5000, seed=3), drift(ref, cur, max_rows=5000, seed=3)
    assert a == b
    assert (a.sampled, a.n_current, a.n_current_total, a.n_reference) == (True, 5000, 30_000, 2000)
    c = drift(ref, cur, max_rows=5000, seed=4)
    assert c.p_values != a.p_values
    full = drift(ref, cur.head(4000), max_rows=5000)
    assert (full.sampled, full.n_current) == (False, 4000)


def test_chi_square_pools_rare_levels_and_handles_a_single_level() -> None:
    p, stat, note = chi_square_homogeneity([500, 490, 2, 1], [5000, 5100, 30, 0])
    assert 0 <= p <= 1 and stat is not None and "2 level(s)" in note
    assert chi_square_homogeneity([10, 0], [20, 0]) == (1.0, None, "fewer than two levels to compare")


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ref, cur = frame(600, rng), frame(900, rng)
    cur["x1"] = np.nan  # nothing to test: NaN p-value, kept as null
    start, end = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC)
    report = drift(ref, cur, model_version="3", window_start=start, window_end=end)
    assert math.isnan(report.p_values["x1"]) and "x1" not in report.drifted_features()
    path = write_report(report, tmp_path / "out" / "drift.json")
    data = json.loads(path.read_text())
    assert data["features"][1]["p_value"] is None and data["model_version"] == "3"
    back = read_report(path)
    assert back.to_dict() == report.to_dict() and back.window_end == end


def test_bad_input_says_what_and_how_to_fix() -> None:
    rng = np.random.default_rng(0)
    ref, cur = frame(100, rng), frame(100, rng)
    with pytest.raises(DataContractError, match="missing from the current frame"):
        drift(ref, cur.drop(columns=["x3"]))
    with pytest.raises(DataContractError, match="no rows"):
        drift(ref, cur.head(0))
    with pytest.raises(ConfigError, match="alpha"):
        drift(ref, cur, alpha=1.5)
    with pytest.raises(ConfigError, match="timezone"):
        drift(ref, cur, window_end=datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="listed twice"):
        detect_drift(ref, cur, numeric=["x0"], categorical=["x0"])
    with pytest.raises(DataContractError, match="dtype"):
        detect_drift(ref, cur, numeric=["channel"], categorical=[])
    assert MISSING not in ref["channel"].unique()


def test_degenerate_columns_give_valid_results_without_warnings() -> None:
    ref = pd.DataFrame(
        {"a": np.zeros(500), "b": np.r_[np.full(499, np.inf), 1.0], "c": ["x"] * 500, "score": np.full(500, 0.1)}
    )
    cur = pd.DataFrame(
        {"a": np.zeros(800), "b": np.arange(800.0), "c": ["x"] * 799 + [None], "score": np.full(800, 0.1)}
    )
    report = detect_drift(ref, cur, numeric=["a", "b"], categorical=["c"])
    a, b, c = report.features
    assert a.p_value == 1.0 and report.score_p_value == 1.0
    assert (b.n_reference, b.missing_share_reference) == (1, pytest.approx(0.998))  # inf counts as missing
    assert c.p_value == 1.0 and "fewer than two levels" in c.note
