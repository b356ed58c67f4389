"""Prometheus metrics of a monitoring run, pushed to a Pushgateway (a batch job has no /metrics to scrape).

The names and labels are a contract with the alert rules and the dashboard::

    riskloop_drift_share_ratio{model, model_version}              share of features drifted in the latest report
    riskloop_feature_drift_p_value{model, model_version, feature} each feature's p-value in the latest report
    riskloop_score_drift_p_value{model, model_version}            the score's KS p-value in the latest report
    riskloop_decay_pr_auc{model, model_version}                   PR-AUC of the recent labelled window
    riskloop_decay_recall_ratio{model, model_version}             recall at the model's decision threshold
    riskloop_decay_significant{model, model_version}              1 when the decay test is significant, else 0
    riskloop_monitor_action{model, action}                        1 for today's action, 0 for the other two
    riskloop_retrain_triggered_total{model}                       retrains triggered, ever (counter)
    riskloop_monitor_last_run_timestamp_seconds{model}            Unix time of the run

``drift_share_ratio`` is ``DriftReport.drift_share``: features whose p-values,
Benjamini-Hochberg adjusted within the report, are below the report's alpha,
over the features tested. A p-value that could not be computed is NaN.

Each run builds a fresh registry, so the retrain counter is restored from the
persisted :class:`~riskloop.monitoring.assessment.MonitorState`
(``retrains_total``) and only ever grows across runs, as a counter must. Push
with ``grouping_key={"model": model}`` so monitors of different models do not
replace each other's group.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway

from riskloop.errors import ConfigError, ServiceUnavailable
from riskloop.monitoring.assessment import ACTIONS, MonitorAssessment, MonitorState
from riskloop.monitoring.decay import DecayResult
from riskloop.monitoring.drift import DriftReport

DEFAULT_JOB: Final = "riskloop-monitor"


class MonitoringMetrics:
    """The monitoring metrics, registered on ``registry`` (use a fresh one per run)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        version = ("model", "model_version")
        self.drift_share = Gauge(
            "riskloop_drift_share_ratio",
            "Share of features drifted in the latest report (BH-adjusted p-value below alpha).",
            version,
            registry=registry,
        )
        self.feature_p_value = Gauge(
            "riskloop_feature_drift_p_value",
            "Drift test p-value per feature (KS numeric, chi-square categorical).",
            (*version, "feature"),
            registry=registry,
        )
        self.score_p_value = Gauge(
            "riskloop_score_drift_p_value", "KS p-value of the score distribution.", version, registry=registry
        )
        self.pr_auc = Gauge(
            "riskloop_decay_pr_auc", "PR-AUC of the recent labelled window.", version, registry=registry
        )
        self.recall = Gauge(
            "riskloop_decay_recall_ratio",
            "Recall at the model's decision threshold, recent labelled window.",
            version,
            registry=registry,
        )
        self.decay_significant = Gauge(
            "riskloop_decay_significant", "1 when the performance drop is significant.", version, registry=registry
        )
        self.action = Gauge(
            "riskloop_monitor_action",
            "1 for the monitor's current action, 0 for the others.",
            ("model", "action"),
            registry=registry,
        )
        self.retrains = Counter(
            "riskloop_retrain_triggered_total", "Retrains triggered by the monitor.", ("model",), registry=registry
        )
        self.last_run = Gauge(
            "riskloop_monitor_last_run_timestamp_seconds",
            "Unix time of the last monitoring run.",
            ("model",),
            registry=registry,
        )

    def record_drift(
        self, report: DriftReport, *, model: str, model_version: str, drift_share: float | None = None
    ) -> None:
        """Drift share (``drift_share``, e.g. the assessment's, else the report's own), per-feature and score
        p-values."""
        _labels(model=model, model_version=model_version)
        self.drift_share.labels(model, model_version).set(report.drift_share if drift_share is None else drift_share)
        for feature in report.features:
            self.feature_p_value.labels(model, model_version, feature.feature).set(feature.p_value)
        self.score_p_value.labels(model, model_version).set(report.score_p_value)

    def record_decay(self, result: DecayResult, *, model: str, model_version: str) -> None:
        """PR-AUC and recall of the recent window, and whether the drop is significant."""
        _labels(model=model, model_version=model_version)
        self.pr_auc.labels(model, model_version).set(result.recent.pr_auc)
        self.recall.labels(model, model_version).set(result.recent.recall)
        self.decay_significant.labels(model, model_version).set(1.0 if result.significant else 0.0)

    def record_action(self, assessment: MonitorAssessment, state: MonitorState, *, model: str, now: datetime) -> None:
        """The action (one-hot), the retrain total of ``state`` (after the assessment) and the run's time."""
        _labels(model=model)
        if now.utcoffset() is None:
            raise ConfigError(
                f"now={now.isoformat()} has no timezone",
                where="MonitoringMetrics.record_action",
                fix="pass a tz-aware datetime, e.g. datetime.now(UTC)",
            )
        for action in ACTIONS:
            self.action.labels(model, action).set(1.0 if action == assessment.action else 0.0)
        counter = self.retrains.labels(model)
        so_far = self._registry.get_sample_value("riskloop_retrain_triggered_total", {"model": model}) or 0.0
        if state.retrains_total > so_far:
            counter.inc(state.retrains_total - so_far)
        self.last_run.labels(model).set(now.timestamp())


def push_monitoring_metrics(
    registry: CollectorRegistry,
    pushgateway_url: str,
    *,
    job: str = DEFAULT_JOB,
    grouping_key: Mapping[str, str] | None = None,
    timeout_seconds: float = 10.0,
) -> None:
    """Replace the group ``job`` (+ ``grouping_key``) on the Pushgateway with every metric of ``registry``.

    Raises :class:`~riskloop.errors.ServiceUnavailable` when the Pushgateway
    cannot be reached or refuses the push.
    """
    if not pushgateway_url:
        raise ConfigError(
            "no Pushgateway URL",
            where="push_monitoring_metrics",
            fix="set the Pushgateway address, e.g. http://pushgateway:9091",
        )
    try:
        push_to_gateway(
            pushgateway_url, job=job, registry=registry, grouping_key=dict(grouping_key or {}), timeout=timeout_seconds
        )
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise ServiceUnavailable(
            f"pushing the monitoring metrics failed: {exc}",
            where=f"{pushgateway_url} (job {job!r}, grouping key {dict(grouping_key or {})})",
            fix="check that the Pushgateway runs and the URL is right",
        ) from exc


def _labels(**values: str) -> None:
    for name, value in values.items():
        if not value:
            raise ConfigError(f"empty metric label {name!r}", where="MonitoringMetrics", fix=f"pass a non-empty {name}")


__all__ = ["DEFAULT_JOB", "MonitoringMetrics", "push_monitoring_metrics"]
