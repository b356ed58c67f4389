"""Late labels joined to the prediction log; daily PR-AUC and recall; is a drop significant?"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from riskloop.data.spec import load_spec
from riskloop.errors import ConfigError, DataContractError
from riskloop.monitoring.decay import (
    LABEL,
    Performance,
    baseline_from_evaluation,
    daily_performance,
    detect_decay,
    join_labels,
    known_labels,
    mature_rows,
    recent_mature_rows,
    window_performance,
)

SPEC = load_spec("synthetic-fraud")
START = datetime(2026, 3, 1, tzinfo=UTC)
THRESHOLD = 0.5


def traffic(
    days: int, per_day: int, rng: np.random.Generator, *, separation: float = 2.5, fraud_rate: float = 0.05
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(transactions, prediction log)``: champion rows with scores, chargebacks 1-10 days after fraud."""
    n = days * per_day
    times = pd.Series(
        [START + timedelta(days=i // per_day, seconds=int(s)) for i, s in enumerate(rng.integers(0, 86_400, n))]
    )
    fraud = (rng.random(n) < fraud_rate).astype("int64")
    logit = np.where(fraud == 1, rng.normal(separation, 1.0, n), rng.normal(-separation, 1.0, n))
    score = 1 / (1 + np.exp(-logit))
    ids = [f"t{i}" for i in range(n)]
    chargeback = pd.Series(times + pd.to_timedelta(rng.uniform(1, 10, n), unit="D")).where(fraud == 1)
    tx = pd.DataFrame(
        {"transaction_id": ids, "event_timestamp": times, "is_fraud": fraud, "chargeback_timestamp": chargeback}
    )
    log = pd.DataFrame(
        {
            "transaction_id": ids,
            "time": times,
            "model_version": "4",
            "role": "champion",
            "score": score,
            "decision": np.where(score >= THRESHOLD, "flagged", "passed"),
            "threshold": THRESHOLD,
        }
    )
    return tx, log


def test_known_labels_follow_chargebacks_and_maturity() -> None:
    as_of = datetime(2026, 3, 20, tzinfo=UTC)
    tx = pd.DataFrame(
        {
            "transaction_id": ["old-legit", "old-fraud-known", "old-fraud-late", "young-fraud-known", "young-legit"],
            "event_timestamp": pd.to_datetime([as_of - timedelta(days=d) for d in (10, 10, 10, 2, 2)]),
            "is_fraud": [0, 1, 1, 1, 0],
            "chargeback_timestamp": pd.Series(
                [pd.NaT, as_of - timedelta(days=1), as_of + timedelta(days=1), as_of - timedelta(hours=1), pd.NaT],
                dtype="datetime64[us, UTC]",
            ),
        }
    )
    labels = known_labels(tx, SPEC, as_of=as_of)  # the spec's maturity: 7 days
    assert dict(zip(labels["transaction_id"], labels[LABEL], strict=True)) == {
        "old-legit": 0,
        "old-fraud-known": 1,
        "old-fraud-late": 0,
        "young-fraud-known": 1,
    }
    with pytest.raises(ConfigError, match="timezone"):
        known_labels(tx, SPEC, as_of=datetime(2026, 3, 20))
    with pytest.raises(DataContractError, match="chargeback_timestamp"):
        known_labels(tx.drop(columns=["chargeback_timestamp"]), SPEC, as_of=as_of)


def test_join_keeps_the_champions_first_scoring() -> None:
    tx, log = traffic(2, 50, np.random.default_rng(0))
    shadow = log.head(10).assign(role="shadow", score=0.99)
    again = log.head(5).assign(time=log["time"].head(5) + timedelta(minutes=1), score=0.0)
    labels = known_labels(tx, SPEC, as_of=START + timedelta(days=30))
    joined = join_labels(pd.concat([log, shadow, again]), labels)
    assert len(joined) == 100 and (joined["role"] == "champion").all()
    assert float(joined.set_index("transaction_id")["score"]["t0"]) == float(log["score"].iloc[0])
    assert join_labels(log, labels, model_version="5").empty


def test_daily_metrics_only_on_mature_days() -> None:
    rng = np.random.default_rng(1)
    tx, log = traffic(10, 400, rng)
    as_of = START + timedelta(days=10)
    joined = join_labels(log, known_labels(tx, SPEC, as_of=as_of, maturity_days=3))
    days = daily_performance(joined, as_of=as_of, maturity_days=3, n_boot=50)
    assert [d.day for d in days] == [(START + timedelta(days=i)).date() for i in range(7)]
    p = days[0].performance
    assert p.n == 400 and 0 < p.positives < 60 and p.pr_auc_low <= p.pr_auc <= p.pr_auc_high
    assert p.recall_low <= p.recall <= p.recall_high and p.threshold == THRESHOLD
    assert p.recall == p.true_positives / p.positives
    assert len(mature_rows(joined, as_of=as_of, maturity_days=3)) == 7 * 400
    assert days == daily_performance(joined, as_of=as_of, maturity_days=3, n_boot=50)  # seeded
    # the recent window: the last `days` mature days (days 3..6 of 0..9 here), not the days before as_of
    recent = recent_mature_rows(joined, as_of=as_of, maturity_days=3, days=4)
    assert sorted(set(pd.to_datetime(recent["time"], utc=True).dt.date)) == [
        (START + timedelta(days=i)).date() for i in range(3, 7)
    ]
    assert len(recent) == 4 * 400
    with pytest.raises(ConfigError, match="window of 0"):
        recent_mature_rows(joined, as_of=as_of, maturity_days=3, days=0)


def test_a_decayed_model_is_detected_and_a_steady_one_is_not() -> None:
    rng = np.random.default_rng(2)
    as_of = START + timedelta(days=20)
    tx, log = traffic(12, 1000, rng)
    base = window_performance(join_labels(log, known_labels(tx, SPEC, as_of=as_of)), seed=1)
    tx2, same = traffic(3, 1000, rng)
    steady = window_performance(join_labels(same, known_labels(tx2, SPEC, as_of=as_of)), seed=2)
    result = detect_decay(base, steady)
    assert not result.significant and result.enough_labels
    tx3, worse = traffic(3, 1000, rng, separation=1.2)
    decayed = window_performance(join_labels(worse, known_labels(tx3, SPEC, as_of=as_of)), seed=3)
    result = detect_decay(base, decayed)
    assert result.significant and result.recall_p_value < 0.001 and result.pr_auc_drop > 0.1
    assert any("recall dropped" in r for r in result.reasons)
    assert not detect_decay(base, decayed, min_drop=0.9).significant


def test_too_few_labels_is_never_significant() -> None:
    base = Performance(
        n=10_000,
        positives=500,
        pr_auc=0.8,
        pr_auc_low=0.77,
        pr_auc_high=0.83,
        pr_auc_se=0.015,
        recall=0.8,
        recall_low=0.76,
        recall_high=0.83,
        true_positives=400,
        false_positives=50,
        fpr=0.005,
        threshold=0.5,
    )
    recent = Performance(
        n=300,
        positives=12,
        pr_auc=0.2,
        pr_auc_low=0.1,
        pr_auc_high=0.35,
        pr_auc_se=0.06,
        recall=0.25,
        recall_low=0.09,
        recall_high=0.53,
        true_positives=3,
        false_positives=2,
        fpr=0.007,
        threshold=0.5,
    )
    result = detect_decay(base, recent, min_positives=30)
    assert not result.enough_labels and not result.significant
    assert "not enough labels" in result.reasons[0]


def test_baseline_from_recorded_evaluation_metrics() -> None:
    metrics = {"pr_auc": 0.7, "recall": 0.6, "n": 20_000.0, "positives": 200.0, "fpr": 0.01, "threshold": 0.4}
    base = baseline_from_evaluation(metrics)
    assert (base.true_positives, base.positives, base.threshold) == (120, 200, 0.4)
    assert math.isnan(base.pr_auc_se) and base.recall_low < 0.6 < base.recall_high
    recent = Performance(
        n=5000,
        positives=100,
        pr_auc=0.5,
        pr_auc_low=0.42,
        pr_auc_high=0.58,
        pr_auc_se=0.04,
        recall=0.45,
        recall_low=0.35,
        recall_high=0.55,
        true_positives=45,
        false_positives=40,
        fpr=0.008,
        threshold=0.4,
    )
    result = detect_decay(base, recent)
    # the baseline borrows the recent SE scaled by sqrt(100/200): z = 0.2 / sqrt(0.04^2 / 2 + 0.04^2)
    assert result.pr_auc_p_value == pytest.approx(0.5 * math.erfc(0.2 / math.sqrt(0.0024) / math.sqrt(2)))
    assert result.significant
    with pytest.raises(DataContractError, match="positives"):
        baseline_from_evaluation({"pr_auc": 0.7, "recall": 0.6, "n": 100.0})
