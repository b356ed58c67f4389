"""The monitoring gauges carry exactly the names and labels the alert rules and dashboard use."""

from __future__ import annotations

import math
import socket
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from riskloop.errors import ConfigError, ServiceUnavailable
from riskloop.monitoring.assessment import MonitorPolicy, MonitorState, assess
from riskloop.monitoring.decay import DecayResult, Performance
from riskloop.monitoring.drift import CHI_SQUARE, KS, DriftReport, FeatureDrift
from riskloop.monitoring.metrics import MonitoringMetrics, push_monitoring_metrics

NOW = datetime(2026, 5, 2, 1, 0, tzinfo=UTC)
EXPECTED_NAMES = {
    "riskloop_drift_share_ratio",
    "riskloop_feature_drift_p_value",
    "riskloop_score_drift_p_value",
    "riskloop_decay_pr_auc",
    "riskloop_decay_recall_ratio",
    "riskloop_decay_significant",
    "riskloop_monitor_action",
    "riskloop_retrain_triggered_total",
    "riskloop_monitor_last_run_timestamp_seconds",
}


def sample_report() -> DriftReport:
    features = (
        FeatureDrift("amount", "numeric", KS, 1e-8, None, 5000, 100_000, 0.0, 0.0),
        FeatureDrift("channel", "categorical", CHI_SQUARE, 0.4, 2.1, 5000, 100_000, 0.0, 0.01),
        FeatureDrift("card_count_1h", "numeric", KS, math.nan, None, 0, 0, 1.0, 1.0, "not tested"),
    )
    score = FeatureDrift("score", "numeric", KS, 0.03, None, 5000, 100_000, 0.0, 0.0)
    return DriftReport(
        features=features,
        score=score,
        alpha=0.05,
        n_reference=5000,
        n_current=100_000,
        n_current_total=400_000,
        sampled=True,
        seed=0,
        model_version="7",
        window_start=NOW - timedelta(days=1, hours=1),
        window_end=NOW - timedelta(hours=1),
    )


def sample_decay(significant: bool) -> DecayResult:
    recent = Performance(
        n=20_000,
        positives=150,
        pr_auc=0.61,
        pr_auc_low=0.55,
        pr_auc_high=0.67,
        pr_auc_se=0.03,
        recall=0.52,
        recall_low=0.44,
        recall_high=0.6,
        true_positives=78,
        false_positives=90,
        fpr=0.0045,
        threshold=0.42,
    )
    return DecayResult(
        baseline=recent,
        recent=recent,
        pr_auc_drop=0.0,
        pr_auc_p_value=0.5,
        recall_drop=0.0,
        recall_p_value=0.5,
        alpha=0.05,
        min_drop=0.0,
        min_positives=30,
        enough_labels=True,
        significant=significant,
        reasons=(),
    )


def test_every_metric_is_filled_under_its_contract_name() -> None:
    registry = CollectorRegistry()
    metrics = MonitoringMetrics(registry)
    report = sample_report()
    # one report: drift and decay on one day are enough here (the defaults want them to hold for days)
    one_day = MonitorPolicy(min_drift_days=1, min_decay_days=1)
    assessment, state = assess([report], sample_decay(True), one_day, MonitorState(), model_version="7", now=NOW)
    metrics.record_drift(report, model="fraud-detector", model_version="7")
    metrics.record_decay(sample_decay(True), model="fraud-detector", model_version="7")
    metrics.record_action(assessment, state, model="fraud-detector", now=NOW)

    names = {s.name for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}
    assert names == EXPECTED_NAMES
    version = {"model": "fraud-detector", "model_version": "7"}
    value = registry.get_sample_value
    assert value("riskloop_drift_share_ratio", version) == pytest.approx(1 / 2)  # amount drifted; one not tested
    assert value("riskloop_feature_drift_p_value", {**version, "feature": "amount"}) == 1e-8
    assert math.isnan(value("riskloop_feature_drift_p_value", {**version, "feature": "card_count_1h"}) or 0.0)
    assert value("riskloop_score_drift_p_value", version) == 0.03
    assert value("riskloop_decay_pr_auc", version) == 0.61
    assert value("riskloop_decay_recall_ratio", version) == 0.52
    assert value("riskloop_decay_significant", version) == 1.0
    assert assessment.action == "retrain"
    for action, expected in (("retrain", 1.0), ("watch", 0.0), ("ok", 0.0)):
        assert value("riskloop_monitor_action", {"model": "fraud-detector", "action": action}) == expected
    assert value("riskloop_retrain_triggered_total", {"model": "fraud-detector"}) == 1.0
    assert value("riskloop_monitor_last_run_timestamp_seconds", {"model": "fraud-detector"}) == NOW.timestamp()


def test_the_retrain_counter_continues_from_the_persisted_state() -> None:
    registry = CollectorRegistry()
    metrics = MonitoringMetrics(registry)
    assessment, state = assess(
        [sample_report()],
        None,
        MonitorPolicy(retrain_drift_share=0.9, min_drift_days=1),
        MonitorState(retrains_total=4),
        model_version="7",
        now=NOW,
    )
    assert assessment.action == "watch"
    metrics.record_action(assessment, state, model="fraud-detector", now=NOW)
    metrics.record_action(assessment, state, model="fraud-detector", now=NOW)  # idempotent
    assert registry.get_sample_value("riskloop_retrain_triggered_total", {"model": "fraud-detector"}) == 4.0
    assert registry.get_sample_value("riskloop_monitor_action", {"model": "fraud-detector", "action": "watch"}) == 1


def test_bad_labels_and_unreachable_pushgateway_are_clear_errors() -> None:
    metrics = MonitoringMetrics(CollectorRegistry())
    with pytest.raises(ConfigError, match="model_version"):
        metrics.record_drift(sample_report(), model="fraud-detector", model_version="")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceUnavailable, match="Pushgateway"):
        push_monitoring_metrics(CollectorRegistry(), f"http://127.0.0.1:{port}", timeout_seconds=2)
