"""A monitoring run's metrics reach the real Pushgateway and read back from its /metrics under their contract names."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, delete_from_gateway
from prometheus_client.parser import text_string_to_metric_families

from riskloop.monitoring.assessment import MonitorPolicy, MonitorState, assess
from riskloop.monitoring.drift import detect_drift
from riskloop.monitoring.metrics import MonitoringMetrics, push_monitoring_metrics

NOW = datetime(2026, 6, 2, 0, 30, tzinfo=UTC)


@pytest.fixture()
def group(pushgateway_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A Pushgateway group of our own (unique job), deleted afterwards."""
    job = f"riskloop-monitor-test-{uuid.uuid4().hex[:12]}"
    key = {"model": "fraud-detector-it"}
    try:
        yield job, key
    finally:
        delete_from_gateway(pushgateway_url, job=job, grouping_key=key, timeout=5)


def pushed(pushgateway_url: str, job: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``job``'s group on the Pushgateway: (name, sorted labels without job) -> value."""
    response = httpx.get(f"{pushgateway_url}/metrics", timeout=5.0)
    response.raise_for_status()
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            if s.labels.get("job") == job:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))
                out[(s.name, labels)] = s.value
    return out


def test_a_monitoring_run_is_pushed_and_read_back(pushgateway_url: str, group: tuple[str, dict[str, str]]) -> None:
    job, key = group
    model, version = key["model"], "12"
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 3000),
            "channel": rng.choice(["pos", "online"], 3000),
            "score": rng.beta(1, 30, 3000),
        }
    )
    current = pd.DataFrame(
        {
            "amount": rng.lognormal(3.3, 1, 8000),
            "channel": rng.choice(["pos", "online"], 8000),
            "score": rng.beta(1, 30, 8000),
        }
    )
    report = detect_drift(
        reference,
        current,
        numeric=["amount"],
        categorical=["channel"],
        model_version=version,
        window_end=NOW - timedelta(minutes=30),
    )
    one_day = MonitorPolicy(min_drift_days=1)  # one report: drift on one day is enough here
    assessment, state = assess([report], None, one_day, MonitorState(retrains_total=2), model_version=version, now=NOW)
    assert assessment.action == "retrain"  # amount drifted: 1 of 2 features

    registry = CollectorRegistry()
    metrics = MonitoringMetrics(registry)
    metrics.record_drift(report, model=model, model_version=version)
    metrics.record_action(assessment, state, model=model, now=NOW)
    push_monitoring_metrics(registry, pushgateway_url, job=job, grouping_key=key)

    got = pushed(pushgateway_url, job)
    v = (("model", model), ("model_version", version))
    assert got[("riskloop_drift_share_ratio", v)] == 0.5
    assert got[("riskloop_feature_drift_p_value", (("feature", "amount"), *v))] == pytest.approx(
        report.p_values["amount"], rel=1e-12
    )
    assert got[("riskloop_feature_drift_p_value", (("feature", "channel"), *v))] > 0.01
    assert got[("riskloop_score_drift_p_value", v)] == pytest.approx(report.score_p_value, rel=1e-12)
    for action in ("retrain", "watch", "ok"):
        assert got[("riskloop_monitor_action", (("action", action), ("model", model)))] == float(action == "retrain")
    assert got[("riskloop_retrain_triggered_total", (("model", model),))] == 3.0
    assert got[("riskloop_monitor_last_run_timestamp_seconds", (("model", model),))] == NOW.timestamp()
    assert not any(math.isnan(value) for value in got.values())

    # the next run replaces the group: action gauges move, the counter does not go back
    assessment, state = assess([], None, one_day, state, model_version=version, now=NOW + timedelta(days=1))
    registry = CollectorRegistry()
    MonitoringMetrics(registry).record_action(assessment, state, model=model, now=NOW + timedelta(days=1))
    push_monitoring_metrics(registry, pushgateway_url, job=job, grouping_key=key)
    got = pushed(pushgateway_url, job)
    assert got[("riskloop_monitor_action", (("action", "retrain"), ("model", model)))] == 0.0
    assert got[("riskloop_retrain_triggered_total", (("model", model),))] == 3.0
    assert ("riskloop_drift_share_ratio", v) not in got
