"""Evaluation metrics, threshold choice, bootstrap intervals, plots and the HTML report."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from riskloop.data.policy import ThresholdRule
from riskloop.errors import ConfigError, TrainingError
from riskloop.training.evaluate import (
    ROC_CURVE_MAX_POINTS,
    Evaluation,
    bootstrap_ci,
    choose_threshold,
    choose_threshold_for_cost,
    choose_threshold_for_flag_rate,
    evaluate_scores,
    plot_evaluation,
    render_report_html,
    select_threshold,
)

# Ten rows worked by hand. Sorted by score, highest first:
#   0.90 P, 0.80 N, 0.70 P, 0.60 N, 0.55 N, 0.40 P, 0.30 N, 0.20 N, 0.10 N, 0.05 N
# ROC-AUC: positive 0.90 beats 7 negatives, 0.70 beats 6, 0.40 beats 4 -> 17 / 21.
# AP: precision at each positive's rank 1/1, 2/3, 3/6 -> (1 + 2/3 + 1/2) / 3 = 13/18.
# Target FPR 0.2 of 7 negatives allows 1 false positive -> threshold 0.70
# (0.60 would flag a second negative): tp 2, fp 1, fn 1, tn 6.
# Brier: positives 0.01 + 0.09 + 0.36, negatives 0.64 + 0.36 + 0.3025 + 0.09
# + 0.04 + 0.01 + 0.0025 -> 1.905 / 10.
Y10 = [0, 0, 0, 0, 1, 0, 0, 1, 0, 1]
S10 = [0.05, 0.10, 0.20, 0.30, 0.40, 0.55, 0.60, 0.70, 0.80, 0.90]


def _fpr(y: npt.ArrayLike, s: npt.ArrayLike, threshold: float) -> float:
    ya, sa = np.asarray(y), np.asarray(s)
    return float(np.sum((sa >= threshold) & (ya == 0)) / np.sum(ya == 0))


def _model_like(n: int, seed: int, prevalence: float = 0.1) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    s = np.where(y == 1, rng.beta(3, 2, n), rng.beta(2, 3, n))
    return y, s


def test_ten_rows_match_hand_computation() -> None:
    threshold = choose_threshold(Y10, S10, 0.2)
    assert threshold == 0.70
    ev = evaluate_scores(Y10, S10, threshold=threshold, target_fpr=0.2)
    assert (ev.n, ev.positives) == (10, 3)
    assert ev.roc_auc == pytest.approx(17 / 21)
    assert ev.pr_auc == pytest.approx(13 / 18)
    assert ev.brier == pytest.approx(0.1905)
    assert (ev.tn, ev.fp, ev.fn, ev.tp) == (6, 1, 1, 2)
    assert ev.precision == pytest.approx(2 / 3)
    assert ev.recall == pytest.approx(2 / 3)
    assert ev.fpr == pytest.approx(1 / 7)
    assert ev.recall_at_fpr == pytest.approx(2 / 3)
    assert ev.threshold == 0.70
    assert ev.target_fpr == 0.2


def test_ten_rows_roc_curve_points() -> None:
    ev = evaluate_scores(Y10, S10, threshold=0.7, target_fpr=0.2)
    fpr, tpr, thresholds = ev.roc_curve
    assert fpr == pytest.approx([0, 0, 1 / 7, 1 / 7, 3 / 7, 3 / 7, 1])
    assert tpr == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert thresholds[1:] == [0.9, 0.8, 0.7, 0.55, 0.4, 0.05]
    # "Flag nothing" as a finite number just above any probability.
    assert 1.0 < thresholds[0] < 1.0 + 1e-9


def test_threshold_is_applied_not_re_chosen() -> None:
    # At 0.55 three negatives (0.80, 0.60, 0.55) and two positives are flagged.
    ev = evaluate_scores(Y10, S10, threshold=0.55, target_fpr=0.2)
    assert (ev.tn, ev.fp, ev.fn, ev.tp) == (4, 3, 1, 2)
    assert ev.fpr == pytest.approx(3 / 7)
    assert ev.precision == pytest.approx(2 / 5)
    # The oracle figure is read on this data, independent of the threshold.
    assert ev.recall_at_fpr == pytest.approx(2 / 3)


def test_threshold_above_all_scores_flags_nothing() -> None:
    ev = evaluate_scores(Y10, S10, threshold=0.95, target_fpr=0.2)
    assert (ev.tn, ev.fp, ev.fn, ev.tp) == (7, 0, 3, 0)
    assert ev.precision == 0.0
    assert ev.recall == 0.0


def test_recall_at_fpr_zero_when_top_score_is_negative() -> None:
    # 0.80 is a negative above two positives: with target 0 only the 0.90 row qualifies.
    ev = evaluate_scores(Y10, S10, threshold=0.7, target_fpr=0.0)
    assert ev.recall_at_fpr == pytest.approx(1 / 3)
    y = [0, 1, 0, 1]
    s = [0.9, 0.8, 0.2, 0.1]
    assert evaluate_scores(y, s, threshold=0.5, target_fpr=0.0).recall_at_fpr == 0.0


@pytest.mark.parametrize(
    ("target", "expected"),
    [(0.25, 0.8), (0.5, 0.8), (0.75, 0.5), (1.0, 0.1)],
)
def test_choose_threshold_with_ties(target: float, expected: float) -> None:
    # Tied rows are flagged together: 0.9 flags one positive and one negative.
    y = [1, 0, 1, 0, 0, 0]
    s = [0.9, 0.9, 0.8, 0.5, 0.5, 0.1]
    assert choose_threshold(y, s, target) == expected


def test_choose_threshold_impossible_target_is_a_clear_error() -> None:
    y = [1, 0, 1, 0, 0, 0]
    s = [0.9, 0.9, 0.8, 0.5, 0.5, 0.1]
    with pytest.raises(TrainingError) as info:
        choose_threshold(y, s, 0.0)
    assert "highest score 0.9" in info.value.what
    assert info.value.where and info.value.fix


def test_choose_threshold_needs_negatives() -> None:
    with pytest.raises(TrainingError, match="all 3 rows are positive"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9], 0.1)


@pytest.mark.parametrize("target", [-0.01, 1.5, float("nan")])
def test_choose_threshold_rejects_target_outside_unit_interval(target: float) -> None:
    with pytest.raises(TrainingError, match="target_fpr"):
        choose_threshold(Y10, S10, target)


def test_choose_threshold_exact_fpr_boundary_is_allowed() -> None:
    # 0.29 * 100 rounds to 28.999...: the check must compare fp / n, not floor(target * n).
    y = np.zeros(101, dtype=int)
    y[-1] = 1
    s = np.linspace(0.0, 0.99, 101)
    s[-1] = 1.0
    threshold = choose_threshold(y, s, 0.29)
    assert _fpr(y, s, threshold) == 0.29


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=20)),
        min_size=2,
        max_size=60,
    ),
    target=st.floats(min_value=0.0, max_value=1.0),
)
def test_threshold_property(data: list[tuple[bool, int]], target: float) -> None:
    """FPR at the chosen threshold <= target; one step lower (next distinct score) exceeds it."""
    y = np.array([int(label) for label, _ in data])
    s = np.array([level / 20 for _, level in data])  # coarse levels create ties
    if (y == 0).sum() == 0:
        with pytest.raises(TrainingError):
            choose_threshold(y, s, target)
        return
    try:
        threshold = choose_threshold(y, s, target)
    except TrainingError:
        # Impossible only if even the top score alone flags too many negatives.
        assert _fpr(y, s, float(s.max())) > target
        return
    assert threshold in s
    assert _fpr(y, s, threshold) <= target
    lower = s[s < threshold]
    if len(lower):
        assert _fpr(y, s, float(lower.max())) > target


def test_perfect_scores_give_auc_one() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(2_000) < 0.05).astype(int)
    s = np.where(y == 1, rng.uniform(0.6, 1.0, len(y)), rng.uniform(0.0, 0.4, len(y)))
    ev = evaluate_scores(y, s, threshold=choose_threshold(y, s, 0.01), target_fpr=0.01)
    assert ev.roc_auc == 1.0
    assert ev.pr_auc == 1.0
    assert ev.recall_at_fpr == 1.0
    assert ev.recall == 1.0
    # The smallest threshold within the budget spends it: 19 of 1,903 negatives.
    assert (ev.fp, ev.tn) == (19, 1_884)
    assert ev.fpr <= 0.01


def test_random_scores_give_auc_near_half() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(20_000) < 0.1).astype(int)
    s = rng.random(20_000)
    ev = evaluate_scores(y, s, threshold=0.5, target_fpr=0.05)
    assert abs(ev.roc_auc - 0.5) < 0.03
    assert abs(ev.pr_auc - y.mean()) < 0.02
    assert abs(ev.recall_at_fpr - 0.05) < 0.02
    assert abs(ev.fpr - 0.5) < 0.02


def test_roc_curve_downsampled_and_serialisable() -> None:
    y, s = _model_like(20_000, seed=3)
    ev = evaluate_scores(y, s, threshold=0.5, target_fpr=0.01)
    fpr, tpr, thresholds = ev.roc_curve
    assert len(fpr) == len(tpr) == len(thresholds) <= ROC_CURVE_MAX_POINTS
    assert len(fpr) > 100
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert fpr == sorted(fpr) and tpr == sorted(tpr)
    assert thresholds == sorted(thresholds, reverse=True)
    text = json.dumps(ev.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["roc_curve"]["fpr"] == fpr
    assert back["tp"] == ev.tp and back["roc_auc"] == ev.roc_auc


def test_metrics_are_flat_floats() -> None:
    ev = evaluate_scores(Y10, S10, threshold=0.7, target_fpr=0.2)
    metrics = ev.metrics()
    assert set(metrics) == {
        "roc_auc", "pr_auc", "recall_at_fpr", "brier",
        "precision", "recall", "fpr", "threshold", "n", "positives",
    }  # fmt: skip
    assert all(type(v) is float for v in metrics.values())
    assert metrics["n"] == 10.0 and metrics["positives"] == 3.0
    assert metrics["roc_auc"] == ev.roc_auc


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "all 3 labels are negative"),
        ([1, 1], [0.1, 0.2], "all 2 labels are positive"),
        ([0, 1, 0], [0.1, 0.2], "3 labels but 2 scores"),
        ([0, 1], [0.1, float("nan")], "1 of 2 scores are NaN"),
        ([0, 1], [-0.1, 0.5], "outside \\[0, 1\\]"),
        ([0, 1], [0.1, 1.7], "outside \\[0, 1\\]"),
        ([0, 2], [0.1, 0.5], "not 0 or 1"),
        ([0, float("nan")], [0.1, 0.5], "not 0 or 1"),
        ([], [], "no rows"),
        ([[0, 1]], [[0.1, 0.5]], "1-D"),
        (["a", "b"], [0.1, 0.5], "numeric"),
    ],
)
def test_evaluate_rejects_bad_input(y: Any, s: Any, message: str) -> None:
    with pytest.raises(TrainingError, match=message) as info:
        evaluate_scores(y, s, threshold=0.5, target_fpr=0.01)
    assert info.value.where and "evaluate_scores" in info.value.where
    assert info.value.fix


def test_evaluate_rejects_nan_threshold() -> None:
    with pytest.raises(TrainingError, match="threshold is NaN"):
        evaluate_scores(Y10, S10, threshold=float("nan"), target_fpr=0.2)


def _brier(y: npt.NDArray[Any], s: npt.NDArray[Any]) -> float:
    return float(np.mean((s - y) ** 2))


def test_bootstrap_contains_point() -> None:
    y, s = _model_like(400, seed=11, prevalence=0.2)
    point, low, high = bootstrap_ci(y, s, roc_auc_score, n_boot=100, seed=5)
    assert point == pytest.approx(roc_auc_score(y, s))
    assert low < point < high
    assert 0.0 < high - low < 0.3


def test_bootstrap_is_deterministic_by_seed() -> None:
    y, s = _model_like(400, seed=11, prevalence=0.2)
    first = bootstrap_ci(y, s, _brier, n_boot=50, seed=5)
    assert bootstrap_ci(y, s, _brier, n_boot=50, seed=5) == first
    assert bootstrap_ci(y, s, _brier, n_boot=50, seed=6) != first


def test_bootstrap_narrows_with_more_rows() -> None:
    small = _model_like(300, seed=1)
    large = _model_like(30_000, seed=1)
    _, lo_s, hi_s = bootstrap_ci(*small, _brier, n_boot=100, seed=0)
    _, lo_l, hi_l = bootstrap_ci(*large, _brier, n_boot=100, seed=0)
    # Width shrinks like 1/sqrt(n): 100x the rows, about a tenth of the width.
    assert hi_l - lo_l < (hi_s - lo_s) / 4


def test_bootstrap_is_stratified() -> None:
    # With 3 positives in 1,000 rows a plain resample often has 0-1 positives;
    # a stratified one always has exactly 3.
    y = np.zeros(1_000, dtype=int)
    y[[10, 500, 900]] = 1
    s = np.linspace(0.0, 1.0, 1_000)
    point, low, high = bootstrap_ci(y, s, lambda yy, _: float(yy.sum()), n_boot=50, seed=0)
    assert point == low == high == 3.0


@pytest.mark.parametrize(("kwargs", "message"), [({"n_boot": 1}, "n_boot"), ({"alpha": 1.0}, "alpha")])
def test_bootstrap_rejects_bad_params(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bootstrap_ci(Y10, S10, roc_auc_score, seed=0, **kwargs)


def test_bootstrap_rejects_non_finite_metric() -> None:
    with pytest.raises(ConfigError, match="non-finite"):
        bootstrap_ci(Y10, S10, lambda _y, _s: float("nan"), n_boot=5, seed=0)
    # finite on the data but not on some resample
    with pytest.raises(ConfigError, match="non-finite value on a resample"):  # three distinct positives: 2 in 9
        bootstrap_ci(Y10, S10, lambda yy, ss: 0.0 if len(set(ss[yy == 1])) == 3 else float("inf"), n_boot=50, seed=0)


def test_bootstrap_with_a_single_positive_keeps_it_in_every_resample() -> None:
    # scipy resamples only samples of two or more rows; the lone positive is in every resample.
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert bootstrap_ci(y, s, lambda yy, _: float(yy.sum()), n_boot=20, seed=0) == (1.0, 1.0, 1.0)
    assert bootstrap_ci([1, 0], [0.9, 0.1], roc_auc_score, n_boot=20, seed=0) == (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def plotted(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Evaluation, dict[str, Path]]:
    y, s = _model_like(3_000, seed=2)
    threshold = choose_threshold(y, s, 0.05)
    ev = evaluate_scores(y, s, threshold=threshold, target_fpr=0.05)
    out_dir = tmp_path_factory.mktemp("plots") / "nested" / "dir"
    return ev, plot_evaluation(y, s, threshold=threshold, out_dir=out_dir, title="test window")


def test_plots_are_written_as_png(plotted: tuple[Evaluation, dict[str, Path]]) -> None:
    _, paths = plotted
    assert set(paths) == {"roc", "pr", "calibration"}
    for name, path in paths.items():
        assert path.name == f"{name}.png"
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5_000  # axes, curves and text, not a blank canvas


def test_plot_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="labels are negative"):
        plot_evaluation([0, 0], [0.1, 0.2], threshold=0.5, out_dir=tmp_path, title="t")
    assert not list(tmp_path.iterdir())


def test_report_html_contains_metrics_and_plots(
    plotted: tuple[Evaluation, dict[str, Path]],
) -> None:
    ev, paths = plotted
    page = render_report_html(
        ev,
        paths,
        title="Candidate <v2>",
        extra={"model_version": "7", "note": "<b>x</b>"},
    )
    assert page.startswith("<!DOCTYPE html>")
    for value in (
        ev.roc_auc,
        ev.pr_auc,
        ev.recall_at_fpr,
        ev.brier,
        ev.precision,
        ev.recall,
    ):
        assert f"{value:.4f}" in page
    assert f"{ev.threshold:.6g}" in page
    for count in (ev.tn, ev.fp, ev.fn, ev.tp, ev.n):
        assert f">{count:,}<" in page
    assert "Candidate &lt;v2&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 3
    assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in paths.values()}
    assert 'src="http' not in page and "<script" not in page


def test_report_html_without_plots_or_extra() -> None:
    ev = evaluate_scores(Y10, S10, threshold=0.7, target_fpr=0.2)
    page = render_report_html(ev, {}, title="t")
    assert "0.8095" in page and "0.7222" in page and "0.1905" in page
    assert "<img" not in page


# ----------------------------------------------------------------------------------------- the threshold rules


def test_flag_rate_flags_at_most_that_share_of_all_rows() -> None:
    # S10 highest first: 0.90, 0.80, 0.70, ...: 30 % of ten rows are the top three
    assert choose_threshold_for_flag_rate(S10, 0.3) == 0.70
    assert choose_threshold_for_flag_rate(S10, 0.29) == 0.80
    assert choose_threshold_for_flag_rate(S10, 0.1) == 0.90


def test_flag_rate_flags_ties_together_and_refuses_a_share_no_threshold_meets() -> None:
    tied = [0.9, 0.9, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01]
    assert choose_threshold_for_flag_rate(tied, 0.35) == 0.9
    assert choose_threshold_for_flag_rate(tied, 0.45) == 0.5
    with pytest.raises(TrainingError, match="shared by 3 of 10 rows"):
        choose_threshold_for_flag_rate(tied, 0.2)
    with pytest.raises(TrainingError, match="flag_rate must lie in"):
        choose_threshold_for_flag_rate(S10, 1.0)


def test_cost_ratio_minimises_ratio_times_missed_plus_false_flags() -> None:
    # Y10/S10 highest first: P N P N N P N N N N. Cost 5 x FN + FP by threshold: flag nothing 15, 0.90: 10,
    # 0.80: 11, 0.70: 6, 0.60: 7, 0.55: 8, 0.40: 3 (all three positives, two false flags), 0.30: 4, ...
    assert choose_threshold_for_cost(Y10, S10, 5.0) == 0.40
    # ratio 1: flag nothing 3, 0.90: 2, 0.80: 3, 0.70: 2, ..., 0.40: 3: the highest of the two minima
    assert choose_threshold_for_cost(Y10, S10, 1.0) == 0.90


def test_cost_ratio_flags_nothing_when_every_flag_costs_more_than_it_saves() -> None:
    y, s = [0, 1, 0, 0], [0.9, 0.8, 0.3, 0.2]
    # ratio 0.5: nothing flagged costs 0.5; 0.90 costs 1.5; 0.80 costs 1 (one false flag)
    threshold = choose_threshold_for_cost(y, s, 0.5)
    assert threshold > 0.9 and _fpr(y, s, threshold) == 0.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.floats(0.1, 20.0))
def test_cost_ratio_reaches_the_lowest_cost_of_any_observed_threshold(seed: int, ratio: float) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(60) < 0.3).astype(int)
    y[:2] = [0, 1]
    s = np.round(rng.random(60), 2)  # rounding makes ties

    def cost(t: float) -> float:
        flagged = s >= t
        return float(ratio * np.sum(~flagged & (y == 1)) + np.sum(flagged & (y == 0)))

    best = min(cost(t) for t in [*s, 1.01])
    assert cost(choose_threshold_for_cost(y, s, ratio)) == pytest.approx(best)


def test_cost_ratio_on_calibrated_scores_lands_at_the_bayes_threshold() -> None:
    # scores that are true probabilities: flagging pays once p x ratio > (1 - p), at p = 1 / (1 + ratio)
    rng = np.random.default_rng(0)
    s = rng.random(40_000)
    y = (rng.random(40_000) < s).astype(int)
    assert choose_threshold_for_cost(y, s, 5.0) == pytest.approx(1 / 6, abs=0.02)
    assert choose_threshold_for_cost(y, s, 1.0) == pytest.approx(1 / 2, abs=0.02)


def test_on_a_credit_like_set_the_cost_rule_finds_far_more_positives_than_a_1_percent_fpr() -> None:
    y, s = _model_like(3000, seed=4, prevalence=0.28)
    by_fpr = evaluate_scores(y, s, threshold=choose_threshold(y, s, 0.01), target_fpr=0.01)
    by_cost = evaluate_scores(y, s, threshold=choose_threshold_for_cost(y, s, 5.0), target_fpr=0.01)
    assert by_fpr.recall < 0.2 < 0.5 < by_cost.recall


def test_cost_ratio_refuses_a_non_positive_ratio_and_a_single_class() -> None:
    with pytest.raises(TrainingError, match="cost_ratio must be a positive number"):
        choose_threshold_for_cost(Y10, S10, 0.0)
    with pytest.raises(TrainingError, match="all 3 labels are negative"):
        choose_threshold_for_cost([0, 0, 0], [0.1, 0.5, 0.9], 5.0)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (ThresholdRule(target_fpr=0.2), 0.70),
        (ThresholdRule(flag_rate=0.3), 0.70),
        (ThresholdRule(cost_ratio=5.0), 0.40),
    ],
)
def test_select_threshold_applies_the_rule_it_is_given(rule: ThresholdRule, expected: float) -> None:
    assert select_threshold(Y10, S10, rule) == expected
