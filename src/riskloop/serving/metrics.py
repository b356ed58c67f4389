"""Prometheus metrics of the model server, and their exposition for ``/metrics``.

Every metric is named ``riskloop_<thing>_<unit>`` and carries the fixed label
set ``model``, ``model_version``, ``role`` (champion | challenger | shadow),
plus at most one bounded label of its own::

    riskloop_requests_total{..., outcome}              ok | invalid | error | unavailable
    riskloop_request_duration_seconds{...}             histogram, 0.5 ms .. 2.5 s
    riskloop_stage_duration_seconds{..., stage}        features | predict | push | log
    riskloop_instances_total{..., decision}            flagged | passed
    riskloop_score_ratio{...}                          histogram of scores, PSI-ready buckets
    riskloop_unknown_entities_total{..., entity}       card | merchant
    riskloop_unseen_category_total{..., feature}       category values the model never saw (scored as missing)
    riskloop_validation_errors_total{..., field}
    riskloop_shadow_dropped_total{...}                 shadow copies dropped (queue full)
    riskloop_model_info{..., model_sha256}             1 while loaded, 0 once retired
    riskloop_prediction_log_rows_total{outcome}        written | dropped (process-wide, no model labels)

Multiple worker processes: prometheus-client keeps each process's values in
memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` when that variable is set
*before* ``prometheus_client`` is first imported (the value class is chosen at
import). The directory must be emptied before the server starts, and every
process then writes there; :func:`render_metrics` sums across them, but only
when riskloop itself asked for it (``RISKLOOP_METRICS_AGGREGATE=1``, set with the
directory by ``serve --workers N``): importing Feast sets
``PROMETHEUS_MULTIPROC_DIR`` to a temporary directory of its own
(``feast.metrics``), and a server that took that variable as its signal
rendered an empty ``/metrics`` whenever prometheus-client had been imported
first (its values then live in memory, not in Feast's directory).
"""

from __future__ import annotations

import os
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from riskloop.errors import ConfigError

ROLES: Final = ("champion", "challenger", "shadow")
OUTCOMES: Final = ("ok", "invalid", "error", "unavailable")
STAGES: Final = ("features", "predict", "push", "log")
DECISIONS: Final = ("flagged", "passed")
ENTITIES: Final = ("card", "merchant")
LABEL_NAMES: Final = ("model", "model_version", "role")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
AGGREGATE_ENV: Final = "RISKLOOP_METRICS_AGGREGATE"  # "1": /metrics sums the worker processes' files

REQUEST_SECONDS_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# Fraud scores crowd near 0, so the 20 equal-width bins (what PSI is computed on)
# get finer edges below 0.05; merging the fine ones gives back the first bin.
SCORE_BUCKETS: Final = (
    0.0,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    *(round(i * 0.05, 2) for i in range(1, 21)),
)


@dataclass(frozen=True)
class ModelLabels:
    """The fixed label set of every per-model metric: which model, which version, which role."""

    model: str
    model_version: str
    role: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(
                f"unknown serving role {self.role!r}",
                where=f"ModelLabels(model={self.model!r}, model_version={self.model_version!r})",
                fix=f"use one of {', '.join(ROLES)}",
            )
        for name in ("model", "model_version"):
            if not getattr(self, name):
                raise ConfigError(f"empty metric label {name!r}", where="ModelLabels", fix=f"pass a non-empty {name}")

    def as_dict(self) -> dict[str, str]:
        """``{"model": ..., "model_version": ..., "role": ...}``, ready for ``metric.labels(**...)``."""
        return asdict(self)


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    # Label values outside the documented sets would create series no dashboard or
    # alert knows about; failing loudly here finds the caller's typo in its first test.
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(allowed)}")


class _Bound:
    """One model's metric children, resolved once: ``.labels(...)`` per observation costs a lock and a dict lookup
    of the label tuple each, several times per request."""

    def __init__(self, m: ServingMetrics, labels: ModelLabels) -> None:
        lab = labels.as_dict()
        self.requests = {o: m.requests.labels(**lab, outcome=o) for o in OUTCOMES}
        self.request_seconds = m.request_seconds.labels(**lab)
        self.stage_seconds = {s: m.stage_seconds.labels(**lab, stage=s) for s in STAGES}
        self.instances = {d: m.instances.labels(**lab, decision=d) for d in DECISIONS}
        self.scores = m.scores.labels(**lab)
        self.unknown = {e: m.unknown_entities.labels(**lab, entity=e) for e in ENTITIES}


class ServingMetrics:
    """The model server's metrics, registered on ``registry`` (default: prometheus-client's global one).

    Create one instance per process: registering the same names twice on one
    registry raises ``ValueError`` (prometheus-client's duplicate check). The
    metric objects are public so callers can use them directly; the helpers
    validate label values and keep call sites to one line.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        labels = list(LABEL_NAMES)
        self.requests = Counter(
            "riskloop_requests", "Prediction requests by outcome.", [*labels, "outcome"], registry=reg
        )
        self.request_seconds = Histogram(
            "riskloop_request_duration_seconds",
            "Wall time of a prediction request inside the model server.",
            labels,
            registry=reg,
            buckets=REQUEST_SECONDS_BUCKETS,
        )
        self.stage_seconds = Histogram(
            "riskloop_stage_duration_seconds",
            "Wall time of one stage of a prediction request.",
            [*labels, "stage"],
            registry=reg,
            buckets=REQUEST_SECONDS_BUCKETS,
        )
        self.instances = Counter(
            "riskloop_instances",
            "Scored instances by decision (the alert rate for canary analysis).",
            [*labels, "decision"],
            registry=reg,
        )
        self.scores = Histogram(
            "riskloop_score_ratio",
            "Model scores; the buckets carry the score distribution for PSI.",
            labels,
            registry=reg,
            buckets=SCORE_BUCKETS,
        )
        self.unknown_entities = Counter(
            "riskloop_unknown_entities",
            "Instances whose entity had no features in the online store.",
            [*labels, "entity"],
            registry=reg,
        )
        self.unseen_categories = Counter(
            "riskloop_unseen_category",
            "Category values outside the model's categories, scored as missing (raw-column models).",
            [*labels, "feature"],
            registry=reg,
        )
        self.validation_errors = Counter(
            "riskloop_validation_errors", "Request fields that failed validation.", [*labels, "field"], registry=reg
        )
        self.model_info = Gauge(
            "riskloop_model_info",
            "1 for each model version a process serves, with its model_sha256.",
            [*labels, "model_sha256"],
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.shadow_dropped = Counter(
            "riskloop_shadow_dropped",
            "Shadow copies of requests dropped because the shadow queue was full.",
            labels,
            registry=reg,
        )
        self.prediction_log_rows = Counter(
            "riskloop_prediction_log_rows",
            "Rows of the prediction log by outcome (written or dropped).",
            ["outcome"],
            registry=reg,
        )
        self._log_lock = threading.Lock()
        self._log_seen = {"written": 0, "dropped": 0}
        for outcome in self._log_seen:  # both series exist from the start, at 0: a rate() over them has data
            self.prediction_log_rows.labels(outcome=outcome)
        self._bound: dict[ModelLabels, _Bound] = {}

    def _children(self, labels: ModelLabels) -> _Bound:
        bound = self._bound.get(labels)
        if bound is None:
            bound = self._bound[labels] = _Bound(self, labels)
        return bound

    def register_model(self, labels: ModelLabels, *, model_sha256: str) -> None:
        """Set ``riskloop_model_info`` to 1 and create every known series of the model at 0.

        Series that exist from the start make ``rate()`` and canary ratios right
        from the first request instead of missing the first increment.
        """
        self.model_info.labels(**labels.as_dict(), model_sha256=model_sha256).set(1)
        self._children(labels)

    def retire_model(self, labels: ModelLabels, *, model_sha256: str) -> None:
        """Set ``riskloop_model_info`` of a model this process no longer serves to 0."""
        self.model_info.labels(**labels.as_dict(), model_sha256=model_sha256).set(0)

    def observe_request(self, labels: ModelLabels, *, outcome: str, seconds: float) -> None:
        """Count one request with its outcome and observe its duration."""
        _check(outcome, OUTCOMES, "outcome")
        bound = self._children(labels)
        bound.requests[outcome].inc()
        bound.request_seconds.observe(seconds)

    def observe_stage(self, labels: ModelLabels, *, stage: str, seconds: float) -> None:
        """Observe the duration of one stage of a request."""
        _check(stage, STAGES, "stage")
        self._children(labels).stage_seconds[stage].observe(seconds)

    def observe_instances(self, labels: ModelLabels, scores: Sequence[float], decisions: Sequence[str]) -> None:
        """Observe each instance's score and count the decisions (``flagged`` / ``passed``), pairwise."""
        if len(scores) != len(decisions):
            raise ValueError(f"{len(scores)} scores but {len(decisions)} decisions")
        tally = Tally(decisions)
        for decision in tally:
            _check(decision, DECISIONS, "decision")
        bound = self._children(labels)
        for score in scores:
            bound.scores.observe(float(score))
        for decision, n in tally.items():
            bound.instances[decision].inc(n)

    def count_unknown_entities(self, labels: ModelLabels, *, entity: str, count: int = 1) -> None:
        """Count instances whose ``entity`` (card | merchant) was unknown to the online store."""
        _check(entity, ENTITIES, "entity")
        if count:
            self._children(labels).unknown[entity].inc(count)

    def count_unseen_categories(self, labels: ModelLabels, per_feature: Mapping[str, int]) -> None:
        """Count category values the model never saw, per feature (bounded: the spec's categorical features)."""
        lab = labels.as_dict()
        for feature, n in per_feature.items():
            if n:
                self.unseen_categories.labels(**lab, feature=feature).inc(n)

    def count_shadow_dropped(self, labels: ModelLabels) -> None:
        """Count one request whose shadow copy was dropped (the shadow could not keep up)."""
        self.shadow_dropped.labels(**labels.as_dict()).inc()

    def count_validation_errors(self, labels: ModelLabels, fields: Iterable[str]) -> None:
        """Count one validation error per entry of ``fields`` (names from the request schema)."""
        lab = labels.as_dict()
        for field, n in Tally(fields).items():
            self.validation_errors.labels(**lab, field=field).inc(n)

    def sync_prediction_log(self, *, written: int, dropped: int) -> None:
        """Carry a prediction log's cumulative ``written`` / ``dropped`` totals into the counter.

        Call it with the totals of this process's one ``PredictionLog`` as often as
        convenient (e.g. after each append): only the increase since the last call
        is added, so the counter stays monotonic. Thread-safe.
        """
        with self._log_lock:
            for outcome, total in (("written", written), ("dropped", dropped)):
                delta = total - self._log_seen[outcome]
                if delta > 0:
                    self.prediction_log_rows.labels(outcome=outcome).inc(delta)
                    self._log_seen[outcome] = total


def render_metrics(registry: CollectorRegistry | None = None, *, accept: str | None = None) -> tuple[bytes, str]:
    """The body and content type for ``/metrics``.

    With ``RISKLOOP_METRICS_AGGREGATE=1`` and ``PROMETHEUS_MULTIPROC_DIR`` set, the values of every
    process that wrote to that directory are aggregated by ``MultiProcessCollector`` on a fresh
    registry (``registry`` is then ignored: the files hold every metric of every process);
    otherwise ``registry`` (default: the global one) is rendered. ``accept`` is the request's Accept
    header: OpenMetrics when it asks for it, Prometheus text format otherwise.
    """
    encoder, content_type = choose_encoder(accept) if accept else (generate_latest, CONTENT_TYPE_LATEST)
    if os.environ.get(AGGREGATE_ENV) == "1" and os.environ.get(MULTIPROC_ENV):
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return encoder(aggregate), content_type
    return encoder(REGISTRY if registry is None else registry), content_type


__all__ = [
    "AGGREGATE_ENV",
    "DECISIONS",
    "ENTITIES",
    "LABEL_NAMES",
    "OUTCOMES",
    "REQUEST_SECONDS_BUCKETS",
    "ROLES",
    "SCORE_BUCKETS",
    "STAGES",
    "ModelLabels",
    "ServingMetrics",
    "render_metrics",
]
