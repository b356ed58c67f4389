"""Canary analysis: the verdict, its histogram helpers, windows from snapshots, labels, and parsing of both sources."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from statsmodels.stats.proportion import test_proportions_2indep as two_proportions_test  # not collected by pytest

from riskloop.delivery.analysis import (
    Buckets,
    CanaryPolicy,
    LabeledCounts,
    RoleWindow,
    Verdict,
    _exceedance,
    analyze,
    histogram_quantile,
    psi,
)
from riskloop.delivery.metrics_source import (
    PrometheusSource,
    RoleCounters,
    ScrapeSource,
    Snapshot,
    labeled_counts,
    window,
)
from riskloop.errors import ConfigError, DataContractError, DeploymentError, ServiceUnavailable
from riskloop.serving.metrics import REQUEST_SECONDS_BUCKETS, SCORE_BUCKETS, ModelLabels, ServingMetrics

INF = math.inf
THRESHOLD = 0.3  # ~2 % of Beta(0.5, 8) scores are above it
T0 = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)


def bucketize(values: Sequence[float] | np.ndarray, bounds: Sequence[float]) -> Buckets:
    """Cumulative ``le`` buckets of ``values``, as prometheus-client fills them, plus +Inf."""
    v = np.asarray(values, dtype=np.float64)
    return (*((float(le), float((v <= le).sum())) for le in bounds), (INF, float(len(v))))


def traffic(
    role: str,
    *,
    seed: int,
    n: int = 1000,
    error_share: float = 0.0,
    score_shift: float = 0.0,
    latency_scale: float = 1.0,
    version: str | None = None,
) -> RoleWindow:
    """A role's window from ``n`` seeded requests of one instance each: lognormal latency, Beta(0.5, 8) scores."""
    rng = np.random.default_rng(seed)
    latencies = rng.lognormal(math.log(0.004), 0.5, size=n) * latency_scale
    scores = np.clip(rng.beta(0.5, 8, size=n) + score_shift, 0.0, 1.0)
    return RoleWindow(
        role=role,
        model_version=version or ("7" if role == "champion" else "8"),
        requests=float(n),
        errors=float(round(n * error_share)),
        latency_buckets=bucketize(latencies, REQUEST_SECONDS_BUCKETS),
        score_buckets=bucketize(scores, SCORE_BUCKETS),
        instances=float(n),
        flagged=float((scores >= THRESHOLD).sum()),
    )


def statuses(verdict: Verdict) -> dict[str, str]:
    """``{check: status}`` from the verdict's reasons (``"<check> <status>: ..."``)."""
    pairs = (reason.split(":", 1)[0].split(" ", 1) for reason in verdict.reasons)
    return {name: status for name, status in pairs}


# --- analyze ---------------------------------------------------------------------------------------------------


def test_identical_traffic_promotes() -> None:
    champion = traffic("champion", seed=1)
    challenger = dataclasses.replace(champion, role="challenger", model_version="8")
    verdict = analyze(champion, challenger, CanaryPolicy())
    assert verdict.value == "promote"
    assert verdict.measures["psi"] == 0.0
    assert verdict.measures["error_rate_champion"] == verdict.measures["error_rate_challenger"] == 0.0
    assert verdict.measures["p99_champion_seconds"] == verdict.measures["p99_challenger_seconds"]
    assert statuses(verdict) == {
        "errors": "pass",
        "latency": "pass",
        "score_psi": "pass",
        "alert_rate": "pass",
        "labels": "skipped",
    }


def test_same_distribution_different_draws_promotes() -> None:
    verdict = analyze(traffic("champion", seed=1), traffic("challenger", seed=2), CanaryPolicy())
    assert verdict.value == "promote", verdict.reasons
    assert 0 < verdict.measures["psi"] < 0.05


def test_too_few_requests_continues_and_says_so() -> None:
    champion = traffic("champion", seed=1)
    challenger = traffic("challenger", seed=2, n=150, error_share=0.5)  # bad, but too little to judge
    verdict = analyze(champion, challenger, CanaryPolicy(min_requests=200))
    assert verdict.value == "continue"
    assert len(verdict.reasons) == 1
    assert "challenger 8 answered 150 requests < min_requests 200" in verdict.reasons[0]
    assert verdict.measures["requests_challenger"] == 150


def test_champion_with_too_few_requests_also_continues() -> None:
    verdict = analyze(traffic("champion", seed=1, n=50), traffic("challenger", seed=2), CanaryPolicy())
    assert verdict.value == "continue"
    assert "champion 7 answered 50 requests" in verdict.reasons[0]


def test_challenger_failing_a_fifth_of_requests_rolls_back() -> None:
    verdict = analyze(traffic("champion", seed=1), traffic("challenger", seed=2, error_share=0.2), CanaryPolicy())
    assert verdict.value == "rollback"
    assert statuses(verdict)["errors"] == "FAIL"
    reason = next(r for r in verdict.reasons if r.startswith("errors"))
    assert "challenger 20.00 % of 1000 vs champion 0.00 % of 1000" in reason
    assert "+20.00 pp" in reason and "+1.00 pp allowed" in reason
    assert verdict.measures["error_rate_challenger"] == pytest.approx(0.2)


def test_few_extra_errors_are_inconclusive_not_a_rollback() -> None:
    champion = dataclasses.replace(traffic("champion", seed=1, n=250), errors=0.0)
    challenger = dataclasses.replace(traffic("challenger", seed=2, n=250), errors=4.0)  # 1.6 %: > 1 pp, but 4 of 250
    verdict = analyze(champion, challenger, CanaryPolicy())
    assert statuses(verdict)["errors"] == "inconclusive"
    assert verdict.value == "continue"
    # without the test, the threshold alone decides
    assert analyze(champion, challenger, CanaryPolicy(significance=None)).value == "rollback"


def test_scores_shifted_by_a_third_roll_back_on_psi_without_errors() -> None:
    verdict = analyze(traffic("champion", seed=1), traffic("challenger", seed=2, score_shift=0.3), CanaryPolicy())
    assert verdict.value == "rollback"
    checks = statuses(verdict)
    assert checks["errors"] == "pass"
    assert checks["score_psi"] == "FAIL"
    assert verdict.measures["psi"] > 1.0
    assert verdict.measures["error_rate_challenger"] == 0.0


def test_slow_challenger_rolls_back_on_p99_only() -> None:
    verdict = analyze(traffic("champion", seed=1), traffic("challenger", seed=1, latency_scale=3.0), CanaryPolicy())
    assert verdict.value == "rollback"
    checks = statuses(verdict)
    assert checks["latency"] == "FAIL"
    assert {checks[c] for c in ("errors", "score_psi", "alert_rate")} == {"pass"}
    assert verdict.measures["p99_challenger_seconds"] > 1.5 * verdict.measures["p99_champion_seconds"]


def test_p99_slack_forgives_a_slower_but_fast_challenger() -> None:
    champion, challenger = traffic("champion", seed=1), traffic("challenger", seed=1, latency_scale=3.0)
    assert analyze(champion, challenger, CanaryPolicy(p99_slack_seconds=0.1)).value == "promote"


def test_alert_rate_both_ways() -> None:
    champion = dataclasses.replace(traffic("champion", seed=1, n=5000), flagged=100.0)  # 2 %
    same = traffic("challenger", seed=1, n=5000)
    many = analyze(champion, dataclasses.replace(same, flagged=400.0), CanaryPolicy())  # 8 %
    assert many.value == "rollback" and statuses(many)["alert_rate"] == "FAIL"
    few = analyze(champion, dataclasses.replace(same, flagged=10.0), CanaryPolicy())  # 0.2 %
    assert few.value == "rollback" and statuses(few)["alert_rate"] == "FAIL"
    close = analyze(champion, dataclasses.replace(same, flagged=150.0), CanaryPolicy())  # 3 %
    assert statuses(close)["alert_rate"] == "pass"
    assert close.measures["alert_rate_challenger"] == pytest.approx(0.03)


def test_alert_rate_on_few_instances_is_inconclusive() -> None:
    champion = dataclasses.replace(traffic("champion", seed=1, n=300), flagged=3.0)
    challenger = dataclasses.replace(traffic("challenger", seed=1, n=300), flagged=8.0)  # 2.7x, but 8 of 300
    verdict = analyze(champion, challenger, CanaryPolicy())
    assert statuses(verdict)["alert_rate"] == "inconclusive"
    assert verdict.value == "continue"


def test_no_flags_in_a_small_canary_is_not_a_significant_drop() -> None:
    """Seen in a drill: 0 of 61 flagged vs 11 of 520 (the Wald variance is 0 for 0 events; adjusted it is not)."""
    policy = CanaryPolicy(min_requests=40, min_instances=40)
    champion = dataclasses.replace(traffic("champion", seed=1, n=520), flagged=11.0)
    challenger = dataclasses.replace(traffic("challenger", seed=2, n=61), flagged=0.0)
    assert statuses(analyze(champion, challenger, policy))["alert_rate"] != "FAIL"


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b", "slack"),
    [
        (0 / 61, 61, 11 / 520, 520, 0.0),
        (5 / 100, 100, 1 / 100, 100, 0.01),
        (3 / 37.5, 37.5, 2 / 80.2, 80.2, 0.02),
        (0.0, 300, 0.0, 900, 0.01),
    ],
)
def test_rate_test_at_ratio_one_is_statsmodels_agresti_caffo(
    a: float, n_a: float, b: float, n_b: float, slack: float
) -> None:
    """The error, recall and precision checks (ratio 1) are statsmodels' test; fractional counts included."""
    with np.errstate(invalid="ignore", divide="ignore"):  # statsmodels also divides the raw rates, 0 / 0 here
        expected = two_proportions_test(
            a * n_a, n_a, b * n_b, n_b, value=slack, method="agresti-caffo", compare="diff", alternative="larger"
        ).pvalue
    excess, p = _exceedance(a, n_a, b, n_b, 1.0, slack)
    assert excess == pytest.approx(a - b - slack)
    assert p == pytest.approx(expected, rel=1e-12)


def test_recall_drop_on_labeled_traffic_rolls_back() -> None:
    champion = dataclasses.replace(traffic("champion", seed=1), labeled=LabeledCounts(tp=90, fp=30, fn=10, tn=870))
    challenger = dataclasses.replace(traffic("challenger", seed=1), labeled=LabeledCounts(tp=60, fp=20, fn=40, tn=880))
    verdict = analyze(champion, challenger, CanaryPolicy())
    checks = statuses(verdict)
    assert checks["recall"] == "FAIL" and checks["precision"] == "pass"
    assert verdict.value == "rollback"
    assert verdict.measures["recall_champion"] == pytest.approx(0.9)
    assert verdict.measures["recall_challenger"] == pytest.approx(0.6)


def test_precision_drop_on_labeled_traffic_rolls_back() -> None:
    champion = dataclasses.replace(traffic("champion", seed=1), labeled=LabeledCounts(tp=80, fp=20, fn=20, tn=880))
    challenger = dataclasses.replace(traffic("challenger", seed=1), labeled=LabeledCounts(tp=80, fp=80, fn=20, tn=820))
    verdict = analyze(champion, challenger, CanaryPolicy())
    assert statuses(verdict)["precision"] == "FAIL"
    assert verdict.measures["precision_challenger"] == pytest.approx(0.5)
    assert verdict.value == "rollback"


def test_too_few_labels_are_skipped_and_do_not_hold_the_rollout() -> None:
    champion = dataclasses.replace(traffic("champion", seed=1), labeled=LabeledCounts(tp=5, fp=1, fn=1, tn=300))
    challenger = dataclasses.replace(traffic("challenger", seed=1), labeled=LabeledCounts(tp=1, fp=5, fn=5, tn=300))
    verdict = analyze(champion, challenger, CanaryPolicy(min_labeled=30))
    checks = statuses(verdict)
    assert checks["recall"] == checks["precision"] == "skipped"
    assert verdict.value == "promote"
    assert any("6 labeled frauds in one role < min_labeled 30" in r for r in verdict.reasons)


def test_every_failure_is_listed() -> None:
    challenger = traffic("challenger", seed=2, error_share=0.2, score_shift=0.3, latency_scale=4.0)
    verdict = analyze(traffic("champion", seed=1), challenger, CanaryPolicy())
    failed = {name for name, status in statuses(verdict).items() if status == "FAIL"}
    assert failed == {"errors", "latency", "score_psi", "alert_rate"}


def test_measures_are_named_by_argument_not_by_role() -> None:
    shadow = traffic("shadow", seed=2)
    verdict = analyze(traffic("champion", seed=1), shadow, CanaryPolicy())
    assert "requests_challenger" in verdict.measures and "requests_shadow" not in verdict.measures


def test_verdict_to_dict_is_strict_json() -> None:
    champion = traffic("champion", seed=1)
    challenger = dataclasses.replace(champion, role="challenger", score_buckets=(), instances=0.0, flagged=0.0)
    verdict = analyze(champion, challenger, CanaryPolicy())
    text = json.dumps(verdict.to_dict(), allow_nan=False)  # NaN measures (no scores) are left out
    back = json.loads(text)
    assert back["decision"] == verdict.value == "continue"
    assert back["reasons"] == list(verdict.reasons)
    assert "alert_rate_challenger" not in back["measures"]


def test_verdict_rejects_an_unknown_value() -> None:
    with pytest.raises(ConfigError, match="unknown canary verdict 'ship'"):
        Verdict("ship", (), {})  # type: ignore[arg-type]


# --- the policy --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min_requests": 0}, r"min_requests=0 \(an integer >= 1\)"),
        ({"min_requests": True}, r"min_requests=True"),
        ({"min_requests": 10.5}, r"min_requests=10.5"),
        ({"max_error_rate_increase": -0.01}, r"max_error_rate_increase=-0.01 \(a number in \[0, 1\)\)"),
        ({"max_error_rate_increase": math.nan}, r"max_error_rate_increase=nan"),
        ({"max_p99_ratio": 0.9}, r"max_p99_ratio=0.9 \(a number >= 1\)"),
        ({"p99_slack_seconds": -1.0}, r"p99_slack_seconds=-1.0"),
        ({"max_psi": 0.0}, r"max_psi=0.0 \(a number > 0\)"),
        ({"max_alert_rate_ratio": 0.5}, r"max_alert_rate_ratio=0.5"),
        ({"max_recall_drop": 1.0}, r"max_recall_drop=1.0"),
        ({"significance": 0.0}, r"significance=0.0 \(None or a number in \(0, 0.5\]\)"),
        ({"significance": 0.9}, r"significance=0.9"),
    ],
)
def test_policy_rejects_bad_thresholds(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        CanaryPolicy(**change)  # type: ignore[arg-type]
    assert info.value.where == "CanaryPolicy" and info.value.fix


def test_policy_lists_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        CanaryPolicy(min_requests=-1, max_psi=-1.0)
    assert "min_requests=-1" in info.value.what and "max_psi=-1.0" in info.value.what


def test_policy_from_mapping() -> None:
    assert CanaryPolicy.from_mapping({"max_psi": 0.1}) == CanaryPolicy(max_psi=0.1)
    with pytest.raises(ConfigError, match="unknown canary policy keys: max_pis") as info:
        CanaryPolicy.from_mapping({"max_pis": 0.1})
    assert "max_psi" in (info.value.fix or "")


# --- RoleWindow / LabeledCounts contracts ---------------------------------------------------------------------------


def test_role_window_rejects_broken_inputs() -> None:
    good = traffic("champion", seed=1, n=10)
    with pytest.raises(DataContractError, match=r"errors .* exceed requests"):
        dataclasses.replace(good, errors=11.0)
    with pytest.raises(DataContractError, match="unknown role 'canary'"):
        dataclasses.replace(good, role="canary")
    with pytest.raises(DataContractError, match="not cumulative"):
        dataclasses.replace(good, latency_buckets=((0.1, 5.0), (0.2, 4.0), (INF, 10.0)))
    with pytest.raises(DataContractError, match="up to \\+inf"):
        dataclasses.replace(good, latency_buckets=((0.1, 5.0), (0.2, 10.0)))
    with pytest.raises(DataContractError, match="flagged"):
        dataclasses.replace(good, flagged=11.0)
    with pytest.raises(DataContractError, match=r"LabeledCounts\.tp"):
        LabeledCounts(tp=-1, fp=0, fn=0, tn=0)


# --- histogram_quantile --------------------------------------------------------------------------------------------


def _bucket_of(x: float, bounds: Sequence[float]) -> tuple[float, float]:
    """The ``(lower, upper]`` bucket holding ``x`` (the first bucket's lower bound is 0)."""
    i = int(np.searchsorted(bounds, x, side="left"))
    return (0.0 if i == 0 else bounds[i - 1]), bounds[i]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    q=st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]),
    sigma=st.floats(0.1, 2.0),
)
def test_histogram_quantile_agrees_with_numpy_within_a_bucket(seed: int, n: int, q: float, sigma: float) -> None:
    bounds = list(REQUEST_SECONDS_BUCKETS)
    rng = np.random.default_rng(seed)
    x = np.minimum(rng.lognormal(math.log(0.01), sigma, size=n), bounds[-1])  # nothing in the +Inf bucket
    got = histogram_quantile(q, bucketize(x, bounds))
    # PromQL finds the bucket of the ceil(q*n)-th sample, numpy interpolates around the (n-1)*q-th: both lie
    # between these two order statistics, so the result lies within their buckets.
    ordered = np.sort(x)
    lo = ordered[max(0, math.floor(q * n) - 1)]
    hi = ordered[min(n - 1, math.ceil(q * n))]
    assert _bucket_of(lo, bounds)[0] <= got <= _bucket_of(hi, bounds)[1]
    exact = float(np.quantile(x, q))
    lower, upper = _bucket_of(exact, bounds)
    assert abs(got - exact) <= max(upper - lower, _bucket_of(hi, bounds)[1] - _bucket_of(lo, bounds)[0])


def test_histogram_quantile_follows_promql() -> None:
    buckets = ((0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (INF, 40.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.125, buckets) == pytest.approx(0.05)  # first bucket starts at 0
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.4)
    assert histogram_quantile(0.0, buckets) == 0.0
    # a quantile in the +Inf bucket is the largest finite bound
    assert histogram_quantile(0.99, ((0.1, 10.0), (0.2, 10.0), (INF, 20.0))) == 0.2
    # a first bucket with le <= 0 answers its bound
    assert histogram_quantile(0.1, ((0.0, 5.0), (1.0, 10.0), (INF, 10.0))) == 0.0


def test_histogram_quantile_nan_and_errors() -> None:
    assert math.isnan(histogram_quantile(0.99, ()))
    assert math.isnan(histogram_quantile(0.99, ((0.1, 0.0), (INF, 0.0))))
    assert math.isnan(histogram_quantile(0.99, ((0.1, 1.0), (0.2, 2.0))))  # no +Inf bucket
    with pytest.raises(ConfigError, match="outside"):
        histogram_quantile(1.5, ((0.1, 1.0), (INF, 1.0)))


# --- psi -----------------------------------------------------------------------------------------------------------


scores_strategy = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=400)


@settings(max_examples=100, deadline=None)
@given(a=scores_strategy, b=scores_strategy)
def test_psi_is_symmetric_non_negative_and_zero_for_identical(a: list[float], b: list[float]) -> None:
    ha, hb = bucketize(a, SCORE_BUCKETS), bucketize(b, SCORE_BUCKETS)
    assert psi(ha, ha) == 0.0
    assert psi(ha, hb) >= 0.0
    assert psi(ha, hb) == pytest.approx(psi(hb, ha), rel=1e-9, abs=1e-12)


def test_psi_merges_fine_buckets_into_twenty_bins() -> None:
    # all of a in [0, 0.05] spread over the fine buckets, all of b in one fine bucket: same bin, PSI 0
    a = bucketize([0.0, 0.0007, 0.003, 0.012, 0.02, 0.045], SCORE_BUCKETS)
    b = bucketize([0.049] * 6, SCORE_BUCKETS)
    assert psi(a, b) == 0.0


def test_psi_known_value() -> None:
    a = bucketize([0.01] * 50 + [0.97] * 50, SCORE_BUCKETS)  # bins 1 and 20, half each
    b = bucketize([0.01] * 80 + [0.97] * 20, SCORE_BUCKETS)
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(a, b) == pytest.approx(expected)
    # an empty bin is smoothed with epsilon: large but finite
    c = bucketize([0.01] * 100, SCORE_BUCKETS)
    assert math.isfinite(psi(a, c)) and psi(a, c) > 2


def test_psi_needs_bucket_bounds_at_every_bin_edge() -> None:
    coarse = ((0.1, 1.0), (0.5, 2.0), (1.0, 3.0), (INF, 3.0))
    with pytest.raises(DataContractError, match=r"no bucket at le=0\.05") as info:
        psi(coarse, coarse)
    assert "SCORE_BUCKETS" in (info.value.fix or "")
    assert psi(coarse, coarse, bins=2) == 0.0  # edges 0.5: present
    assert math.isnan(psi(bucketize([], SCORE_BUCKETS), bucketize([0.5], SCORE_BUCKETS)))


# --- window() ------------------------------------------------------------------------------------------------------


def counters(
    ok: float,
    error: float = 0.0,
    invalid: float = 0.0,
    latency: Sequence[float] = (),
    scores: Sequence[float] = (),
    flagged: float = 0.0,
) -> RoleCounters:
    return RoleCounters(
        requests={"ok": ok, "invalid": invalid, "error": error, "unavailable": 0.0},
        latency_buckets=bucketize(latency, (0.01, 0.1)),
        score_buckets=bucketize(scores, SCORE_BUCKETS),
        instances={"flagged": flagged, "passed": len(scores) - flagged},
    )


def test_window_subtracts_counters_and_leaves_out_invalid() -> None:
    start = Snapshot(
        T0, {("challenger", "8"): counters(10, error=1, invalid=5, latency=[0.005] * 11, scores=[0.01] * 10)}
    )
    end = Snapshot(
        T0 + timedelta(minutes=5),
        {
            ("challenger", "8"): counters(
                40, error=5, invalid=9, latency=[0.005] * 30 + [0.05] * 15, scores=[0.01] * 30 + [0.5] * 10, flagged=10
            ),
        },
    )
    w = window(start, end, "challenger")
    assert (w.role, w.model_version) == ("challenger", "8")
    assert (w.requests, w.errors) == (34.0, 4.0)  # (40 + 5) - (10 + 1): invalid left out
    assert w.latency_buckets == ((0.01, 19.0), (0.1, 34.0), (INF, 34.0))
    assert w.score_buckets[-1] == (INF, 30.0)
    assert (w.instances, w.flagged) == (30.0, 10.0)


def test_window_counts_a_restarted_process_from_zero() -> None:
    start = Snapshot(T0, {("champion", "7"): counters(500, latency=[0.005] * 500)})
    end = Snapshot(T0 + timedelta(minutes=5), {("champion", "7"): counters(30, error=3, latency=[0.05] * 33)})
    w = window(start, end, "champion", "7")
    assert (w.requests, w.errors) == (33.0, 3.0)
    assert w.latency_buckets == ((0.01, 0.0), (0.1, 33.0), (INF, 33.0))


def test_window_subtracts_target_by_target() -> None:
    a0, b0 = counters(1000, latency=[0.005] * 1000), counters(400, latency=[0.005] * 400)
    a1, b1 = counters(1100, latency=[0.005] * 1100), counters(50, latency=[0.005] * 50)  # b restarted
    start = Snapshot.from_targets(T0, {("champion", "7", "a"): a0, ("champion", "7", "b"): b0})
    end = Snapshot.from_targets(T0 + timedelta(minutes=1), {("champion", "7", "a"): a1, ("champion", "7", "b"): b1})
    assert end.series[("champion", "7")].requests["ok"] == 1150  # the sum went down ...
    assert window(start, end, "champion").requests == 150  # ... yet only b counts from zero: 100 + 50
    # a pod that scaled away does not fake a restart of the others
    gone = Snapshot.from_targets(T0 + timedelta(minutes=1), {("champion", "7", "a"): a1})
    assert window(start, gone, "champion").requests == 100
    # a pod new in the window counts from zero
    new = Snapshot.from_targets(T0 + timedelta(minutes=1), {**end.targets, ("champion", "7", "c"): a0})
    assert window(start, new, "champion").requests == 1150


def test_window_errors_say_what_is_missing() -> None:
    start = Snapshot(T0, {("challenger", "8"): counters(1), ("challenger", "9"): counters(1)})
    end = Snapshot(T0 + timedelta(minutes=1), start.series)
    with pytest.raises(DeploymentError, match="versions 8, 9") as ambiguous:
        window(start, end, "challenger")
    assert ambiguous.value.fix == "pass model_version"
    with pytest.raises(DeploymentError, match="no series of the champion"):
        window(start, end, "champion")
    with pytest.raises(DeploymentError, match="model_version '10'") as missing:
        window(start, end, "challenger", "10")
    assert "8, 9" in (missing.value.fix or "")
    with pytest.raises(ConfigError, match="before its start"):
        window(end, start, "challenger", "8")
    with pytest.raises(ConfigError, match="no timezone"):
        Snapshot(datetime(2026, 1, 1), {})


# --- labeled_counts ------------------------------------------------------------------------------------------------


def test_labeled_counts_only_counts_labels_known_at_as_of() -> None:
    as_of = T0
    day = timedelta(days=1)
    rows = [  # transaction, role, decision, scored at
        ("fraud-arrived-flagged", "challenger", "flagged", as_of - 2 * day),  # tp
        ("fraud-arrived-passed", "challenger", "passed", as_of - 1 * day),  # fn: young, but the chargeback is in
        ("fraud-pending-young", "challenger", "flagged", as_of - 1 * day),  # left out: not yet known
        ("fraud-pending-mature", "challenger", "flagged", as_of - 9 * day),  # fp: looks legitimate at as_of
        ("legit-mature-flagged", "challenger", "flagged", as_of - 8 * day),  # fp
        ("legit-mature-passed", "challenger", "passed", as_of - 8 * day),  # tn
        ("legit-young", "challenger", "passed", as_of - 2 * day),  # left out: too young
        ("unlabeled", "challenger", "passed", as_of - 9 * day),  # left out: no label row
        ("legit-mature-passed", "champion", "flagged", as_of - 8 * day),  # another role
        ("scored-later", "challenger", "flagged", as_of + day),  # after as_of
        ("rescored", "challenger", "flagged", as_of - 9 * day),
        ("rescored", "challenger", "passed", as_of - 8 * day),  # latest decision wins: tn
    ]
    predictions = pd.DataFrame(rows, columns=["transaction_id", "role", "decision", "time"])
    labels = pd.DataFrame(
        [
            ("fraud-arrived-flagged", 1, as_of - day),
            ("fraud-arrived-passed", 1, as_of - timedelta(hours=1)),
            ("fraud-pending-young", 1, as_of + day),
            ("fraud-pending-mature", 1, as_of + day),
            ("legit-mature-flagged", 0, pd.NaT),
            ("legit-mature-passed", 0, pd.NaT),
            ("legit-young", 0, pd.NaT),
            ("scored-later", 1, as_of - day),
            ("rescored", 0, pd.NaT),
        ],
        columns=["transaction_id", "is_fraud", "chargeback_timestamp"],
    )
    counts = labeled_counts(predictions, labels, role="challenger", as_of=as_of, label_maturity=timedelta(days=7))
    assert counts == LabeledCounts(tp=1, fp=2, fn=1, tn=2)
    champion = labeled_counts(predictions, labels, role="champion", as_of=as_of, label_maturity=timedelta(days=7))
    assert champion == LabeledCounts(tp=0, fp=1, fn=0, tn=0)


def test_labeled_counts_filters_model_version_and_works_without_chargeback_times() -> None:
    predictions = pd.DataFrame(
        {
            "transaction_id": ["a", "b"],
            "role": ["challenger"] * 2,
            "decision": ["flagged", "passed"],
            "time": [T0 - timedelta(days=30)] * 2,
            "model_version": ["8", "9"],
        }
    )
    labels = pd.DataFrame({"transaction_id": ["a", "b"], "is_fraud": [1, 1]})
    counts = labeled_counts(
        predictions, labels, role="challenger", as_of=T0, label_maturity=timedelta(0), model_version="8"
    )
    assert counts == LabeledCounts(tp=1, fp=0, fn=0, tn=0)


def test_labeled_counts_rejects_bad_input() -> None:
    predictions = pd.DataFrame(
        {"transaction_id": ["a"], "role": ["challenger"], "decision": ["flagged"], "time": [T0 - timedelta(days=30)]}
    )
    labels = pd.DataFrame({"transaction_id": ["a"], "is_fraud": [1]})
    kwargs = {"role": "challenger", "as_of": T0, "label_maturity": timedelta(days=7)}
    with pytest.raises(DataContractError, match=r"predictions lacks columns \['time'\]"):
        labeled_counts(predictions.drop(columns="time"), labels, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DataContractError, match="several rows"):
        labeled_counts(predictions, pd.concat([labels, labels]), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DataContractError, match="decision"):
        labeled_counts(predictions.assign(decision="maybe"), labels, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no timezone"):
        labeled_counts(
            predictions, labels, role="challenger", as_of=datetime(2026, 1, 1), label_maturity=timedelta(days=7)
        )
    with pytest.raises(ConfigError, match="negative"):
        labeled_counts(predictions, labels, role="challenger", as_of=T0, label_maturity=timedelta(days=-1))


# --- the sources, over a mock transport ---------------------------------------------------------------------------

MODEL = "fraud-detector"


def exposition() -> str:
    """What a server with a champion (7) and a challenger (8) exposes, plus another model's series."""
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    champion, challenger = ModelLabels(MODEL, "7", "champion"), ModelLabels(MODEL, "8", "challenger")
    other = ModelLabels("other-model", "1", "champion")
    for labels in (champion, challenger, other):
        metrics.register_model(labels, model_sha256="ab" * 32)
    for outcome, seconds in (("ok", 0.004), ("ok", 0.02), ("error", 0.3), ("invalid", 0.0001)):
        metrics.observe_request(champion, outcome=outcome, seconds=seconds)
    metrics.observe_request(challenger, outcome="unavailable", seconds=0.5)
    metrics.observe_request(other, outcome="ok", seconds=0.5)
    metrics.observe_instances(champion, [0.01, 0.6], ["passed", "flagged"])
    return generate_latest(registry).decode()


def test_scrape_source_parses_the_servers_exposition() -> None:
    text = exposition()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=text, headers={"content-type": "text/plain; version=0.0.4"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        snap = ScrapeSource("http://server:8080/", MODEL, client=client).snapshot()
    assert str(seen[0].url) == "http://server:8080/metrics"
    assert set(snap.series) == {("champion", "7"), ("challenger", "8")}
    champion = snap.series[("champion", "7")]
    assert champion.requests == {"ok": 2.0, "invalid": 1.0, "error": 1.0, "unavailable": 0.0}
    assert champion.instances == {"flagged": 1.0, "passed": 1.0}
    assert [le for le, _ in champion.latency_buckets] == [*REQUEST_SECONDS_BUCKETS, INF]
    assert [le for le, _ in champion.score_buckets] == [*SCORE_BUCKETS, INF]
    assert champion.latency_buckets[-1] == (INF, 4.0)
    w = window(Snapshot(snap.at, {}), snap, "champion")
    assert (w.requests, w.errors, w.instances, w.flagged) == (3.0, 1.0, 2.0, 1.0)
    with pytest.raises(ConfigError, match="cannot read the counters at"):
        ScrapeSource("http://server:8080", MODEL).snapshot(T0)


def test_prometheus_source_queries_at_one_instant_and_parses_vectors() -> None:
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        queries.append(params)
        base = {"role": "challenger", "model_version": "8", "instance": "10.0.0.1:8080"}
        values: tuple[tuple[str, str], ...]
        if "riskloop_requests_total" in params["query"]:
            split, values = "outcome", (("ok", "90"), ("error", "10"))
        elif "_bucket" in params["query"]:
            split, values = "le", (("0.5", "60"), ("+Inf", "100"))
        else:
            split, values = "decision", (("flagged", "3"),)
        result = [{"metric": base | {split: key}, "value": [0, v]} for key, v in values]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        snap = PrometheusSource("http://prom:9090", 'we"ird', client=client).snapshot(T0)
    assert snap.at == T0
    assert {q["time"] for q in queries} == {f"{T0.timestamp():.3f}"}
    assert all('{model="we\\"ird"}' in q["query"] for q in queries)
    assert queries[0]["query"] == (
        'sum by (role, model_version, outcome, instance) (riskloop_requests_total{model="we\\"ird"})'
    )
    assert set(snap.targets) == {("challenger", "8", "10.0.0.1:8080")}
    counters_ = snap.series[("challenger", "8")]
    assert counters_.requests == {"ok": 90.0, "error": 10.0}
    assert counters_.score_buckets == ((0.5, 60.0), (INF, 100.0))


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "HTTP 400.*parse error"),
        (503, "service unavailable", "HTTP 503"),
        (200, "not json", "no JSON"),
        (200, {"status": "error", "errorType": "timeout", "error": "query timed out"}, "query failed: timeout"),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, "query failed"),
    ],
)
def test_prometheus_source_turns_bad_answers_into_deployment_errors(status: int, body: object, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(DeploymentError, match=message) as info,
    ):
        PrometheusSource("http://prom:9090", MODEL, client=client).snapshot()
    assert info.value.where and "http://prom:9090/api/v1/query" in info.value.where


def test_sources_turn_transport_failures_into_service_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(ServiceUnavailable, match="Prometheus is not reachable"),
    ):
        PrometheusSource("http://prom:9090", MODEL, client=client).snapshot()
    with (
        httpx.Client(transport=httpx.MockTransport(slow)) as client,
        pytest.raises(ServiceUnavailable, match="did not answer within 5 s"),
    ):
        ScrapeSource("http://server:8080", MODEL, client=client).snapshot()


def test_sources_reject_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="model '' is empty"):
        PrometheusSource("http://prom:9090", "")
    with pytest.raises(ConfigError, match="not a Prometheus label name"):
        PrometheusSource("http://prom:9090", MODEL, target_label="pod-name")
    with pytest.raises(ConfigError, match="no timezone"):
        PrometheusSource("http://prom:9090", MODEL).snapshot(datetime(2026, 1, 1))
