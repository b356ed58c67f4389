"""Serving metrics: names, labels and buckets on a fresh registry; aggregation across processes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from riskloop.errors import ConfigError
from riskloop.serving.metrics import (
    REQUEST_SECONDS_BUCKETS,
    SCORE_BUCKETS,
    ModelLabels,
    ServingMetrics,
    render_metrics,
)

CHAMPION = ModelLabels("fraud-detector", "7", "champion")
CHALLENGER = ModelLabels("fraud-detector", "8", "challenger")
BASE = {"model": "fraud-detector", "model_version": "7", "role": "champion"}
FIXED = {"model", "model_version", "role"}

EXPECTED_FAMILIES = {
    # family name (as collected) -> label names of its samples, minus "le"
    "riskloop_requests": FIXED | {"outcome"},
    "riskloop_request_duration_seconds": FIXED,
    "riskloop_stage_duration_seconds": FIXED | {"stage"},
    "riskloop_instances": FIXED | {"decision"},
    "riskloop_score_ratio": FIXED,
    "riskloop_unknown_entities": FIXED | {"entity"},
    "riskloop_unseen_category": FIXED | {"feature"},
    "riskloop_validation_errors": FIXED | {"field"},
    "riskloop_model_info": FIXED | {"model_sha256"},
    "riskloop_prediction_log_rows": {"outcome"},
}


@pytest.fixture()
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture()
def metrics(registry: CollectorRegistry) -> ServingMetrics:
    return ServingMetrics(registry)


@pytest.fixture()
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def _buckets(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> list[float]:
    return sorted(
        float(s.labels["le"])
        for family in registry.collect()
        for s in family.samples
        if s.name == f"{name}_bucket" and s.labels["le"] != "+Inf" and labels.items() <= s.labels.items()
    )


def test_every_metric_has_its_exact_name_and_labels(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    metrics.register_model(CHAMPION, model_sha256="ab" * 32)
    metrics.observe_stage(CHAMPION, stage="features", seconds=0.001)
    metrics.count_validation_errors(CHAMPION, ["amount"])
    metrics.count_unseen_categories(CHAMPION, {"housing": 1})
    metrics.sync_prediction_log(written=1, dropped=0)

    seen: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            seen.setdefault(family.name, set()).update(set(sample.labels) - {"le"})
    assert seen == EXPECTED_FAMILIES
    assert all(name.startswith("riskloop_") for name in seen)


def test_request_counts_outcome_and_duration(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    metrics.observe_request(CHAMPION, outcome="ok", seconds=0.004)
    metrics.observe_request(CHAMPION, outcome="ok", seconds=0.006)
    metrics.observe_request(CHAMPION, outcome="invalid", seconds=0.0002)
    metrics.observe_request(CHALLENGER, outcome="error", seconds=0.3)

    get = registry.get_sample_value
    assert get("riskloop_requests_total", {**BASE, "outcome": "ok"}) == 2
    assert get("riskloop_requests_total", {**BASE, "outcome": "invalid"}) == 1
    assert get("riskloop_requests_total", {**BASE, "outcome": "error"}) == 0  # every series exists from first use
    assert get("riskloop_requests_total", {**CHALLENGER.as_dict(), "outcome": "error"}) == 1
    assert get("riskloop_request_duration_seconds_count", BASE) == 3
    assert get("riskloop_request_duration_seconds_sum", BASE) == pytest.approx(0.0102)
    assert get("riskloop_request_duration_seconds_bucket", {**BASE, "le": "0.0005"}) == 1
    assert get("riskloop_request_duration_seconds_bucket", {**BASE, "le": "0.005"}) == 2
    assert _buckets(registry, "riskloop_request_duration_seconds", BASE) == list(REQUEST_SECONDS_BUCKETS)
    assert REQUEST_SECONDS_BUCKETS[0] == 0.0005 and REQUEST_SECONDS_BUCKETS[-1] == 2.5


def test_stages_are_separate_series(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    for stage, seconds in (("features", 0.002), ("predict", 0.0003), ("push", 0.001), ("log", 0.00001)):
        metrics.observe_stage(CHAMPION, stage=stage, seconds=seconds)
    for stage in ("features", "predict", "push", "log"):
        assert registry.get_sample_value("riskloop_stage_duration_seconds_count", {**BASE, "stage": stage}) == 1
    assert registry.get_sample_value(
        "riskloop_stage_duration_seconds_sum", {**BASE, "stage": "predict"}
    ) == pytest.approx(0.0003)


def test_instances_count_decisions_and_bucket_scores(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    scores = [0.0, 0.0007, 0.003, 0.012, 0.5, 0.93, 1.0]
    decisions = ["passed"] * 5 + ["flagged"] * 2
    metrics.observe_instances(CHAMPION, scores, decisions)

    get = registry.get_sample_value
    assert get("riskloop_instances_total", {**BASE, "decision": "flagged"}) == 2
    assert get("riskloop_instances_total", {**BASE, "decision": "passed"}) == 5
    assert get("riskloop_score_ratio_count", BASE) == 7
    assert get("riskloop_score_ratio_bucket", {**BASE, "le": "0.0"}) == 1
    assert get("riskloop_score_ratio_bucket", {**BASE, "le": "0.001"}) == 2
    assert get("riskloop_score_ratio_bucket", {**BASE, "le": "0.05"}) == 4
    assert get("riskloop_score_ratio_bucket", {**BASE, "le": "0.95"}) == 6
    assert get("riskloop_score_ratio_bucket", {**BASE, "le": "1.0"}) == 7


def test_score_buckets_hold_twenty_equal_bins_and_a_fine_low_end() -> None:
    assert list(SCORE_BUCKETS) == sorted(set(SCORE_BUCKETS))
    assert SCORE_BUCKETS[0] == 0.0 and SCORE_BUCKETS[-1] == 1.0
    for i in range(1, 21):
        assert round(i * 0.05, 2) in SCORE_BUCKETS
    assert {0.001, 0.01} <= set(SCORE_BUCKETS)


def test_unknown_entities_validation_errors_and_model_info(
    metrics: ServingMetrics, registry: CollectorRegistry
) -> None:
    metrics.count_unknown_entities(CHAMPION, entity="card", count=3)
    metrics.count_unknown_entities(CHAMPION, entity="merchant")
    metrics.count_validation_errors(CHAMPION, ["amount", "amount", "country"])
    metrics.count_unseen_categories(CHAMPION, {"housing": 2, "purpose": 0})
    metrics.register_model(CHAMPION, model_sha256="f00d")

    get = registry.get_sample_value
    assert get("riskloop_unknown_entities_total", {**BASE, "entity": "card"}) == 3
    assert get("riskloop_unknown_entities_total", {**BASE, "entity": "merchant"}) == 1
    assert get("riskloop_validation_errors_total", {**BASE, "field": "amount"}) == 2
    assert get("riskloop_validation_errors_total", {**BASE, "field": "country"}) == 1
    assert get("riskloop_unseen_category_total", {**BASE, "feature": "housing"}) == 2
    assert get("riskloop_unseen_category_total", {**BASE, "feature": "purpose"}) is None
    assert get("riskloop_model_info", {**BASE, "model_sha256": "f00d"}) == 1
    metrics.retire_model(CHAMPION, model_sha256="f00d")
    assert get("riskloop_model_info", {**BASE, "model_sha256": "f00d"}) == 0


def test_register_model_creates_every_series_at_zero(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    metrics.register_model(CHALLENGER, model_sha256="beef")
    lab = CHALLENGER.as_dict()
    for outcome in ("ok", "invalid", "error", "unavailable"):
        assert registry.get_sample_value("riskloop_requests_total", {**lab, "outcome": outcome}) == 0
    for decision in ("flagged", "passed"):
        assert registry.get_sample_value("riskloop_instances_total", {**lab, "decision": decision}) == 0
    assert registry.get_sample_value("riskloop_score_ratio_count", lab) == 0


def test_prediction_log_totals_become_a_monotonic_counter(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    metrics.sync_prediction_log(written=100, dropped=0)
    metrics.sync_prediction_log(written=250, dropped=7)
    metrics.sync_prediction_log(written=250, dropped=7)
    get = registry.get_sample_value
    assert get("riskloop_prediction_log_rows_total", {"outcome": "written"}) == 250
    assert get("riskloop_prediction_log_rows_total", {"outcome": "dropped"}) == 7


def test_bad_label_values_are_refused(metrics: ServingMetrics) -> None:
    with pytest.raises(ConfigError, match="role"):
        ModelLabels("fraud-detector", "7", "canary")
    with pytest.raises(ConfigError, match="model_version"):
        ModelLabels("fraud-detector", "", "champion")
    with pytest.raises(ValueError, match="outcome"):
        metrics.observe_request(CHAMPION, outcome="timeout", seconds=0.1)
    with pytest.raises(ValueError, match="stage"):
        metrics.observe_stage(CHAMPION, stage="explain", seconds=0.1)
    with pytest.raises(ValueError, match="decision"):
        metrics.observe_instances(CHAMPION, [0.4], ["fraud"])
    with pytest.raises(ValueError, match="1 scores but 2 decisions"):
        metrics.observe_instances(CHAMPION, [0.4], ["passed", "passed"])
    with pytest.raises(ValueError, match="entity"):
        metrics.count_unknown_entities(CHAMPION, entity="device")


def test_two_instances_on_one_registry_collide(registry: CollectorRegistry) -> None:
    ServingMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ServingMetrics(registry)


@pytest.mark.usefixtures("single_process")
def test_render_metrics_single_process(metrics: ServingMetrics, registry: CollectorRegistry) -> None:
    metrics.observe_request(CHAMPION, outcome="ok", seconds=0.01)
    body, content_type = render_metrics(registry)
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    counts = {
        s.labels["outcome"]: s.value
        for s in families["riskloop_requests"].samples
        if s.name == "riskloop_requests_total" and s.labels["model_version"] == BASE["model_version"]
    }
    assert counts == {"ok": 1, "invalid": 0, "error": 0, "unavailable": 0}

    body, content_type = render_metrics(registry, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
