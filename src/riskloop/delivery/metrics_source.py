"""Where canary analysis gets its numbers: the model server's counters, and the labels that arrived.

A :class:`MetricsSource` takes a :class:`Snapshot` of the server's cumulative
``riskloop_*`` counters for one model (label ``model``) at one instant;
:func:`window` turns two snapshots into the :class:`RoleWindow` that
:func:`riskloop.delivery.analysis.analyze` judges. Two sources give the same
snapshot:

- :class:`ScrapeSource` reads ``<base_url>/metrics`` of a running server, now
  (a local deployment, a test, or a port-forwarded pod);
- :class:`PrometheusSource` asks Prometheus (``/api/v1/query``) for the values
  at any instant it holds, all four queries at the same ``time=``.

Counters are kept per scrape target as well as summed per (role,
model_version): :func:`window` subtracts target by target, so a pod that
restarts (its counters drop) counts from zero, and a pod that scales away
inside the window does not make the sum drop and fake a restart of all the
others. The increase of a pod between the window's start and its
disappearance is lost, as in PromQL's ``increase()``.

:func:`labeled_counts` joins the prediction log with arrived labels into the
confusion counts of one role (pure, over DataFrames).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import httpx
import pandas as pd
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text

from riskloop.delivery.analysis import Buckets, LabeledCounts, RoleWindow
from riskloop.errors import ConfigError, DataContractError, DeploymentError, ServiceUnavailable
from riskloop.serving.metrics import DECISIONS

ANSWERED_OUTCOMES: Final = ("ok", "error", "unavailable")
FAILED_OUTCOMES: Final = ("error", "unavailable")
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_TARGET_LABEL: Final = "instance"

# sample name -> (what it feeds, the label that splits it)
_SAMPLES: Final = {
    "riskloop_requests_total": ("requests", "outcome"),
    "riskloop_request_duration_seconds_bucket": ("latency", "le"),
    "riskloop_score_ratio_bucket": ("scores", "le"),
    "riskloop_instances_total": ("instances", "decision"),
}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

SeriesKey = tuple[str, str]
"""``(role, model_version)``."""
TargetKey = tuple[str, str, str]
"""``(role, model_version, target)``: the target is a scrape target (Prometheus's ``instance``) or a server URL."""


@dataclass(frozen=True)
class RoleCounters:
    """Cumulative counter values of one (role, model_version) at one instant.

    ``requests`` by outcome and ``instances`` by decision; ``latency_buckets``
    and ``score_buckets`` are the cumulative histograms
    (:data:`riskloop.delivery.analysis.Buckets`; empty when absent).
    """

    requests: Mapping[str, float]
    latency_buckets: Buckets
    score_buckets: Buckets
    instances: Mapping[str, float]


@dataclass(frozen=True)
class Snapshot:
    """The cumulative values of the server's ``riskloop_*`` series at one instant, per (role, model_version).

    ``series`` sums every target (pods, servers) of a role and version;
    ``targets`` holds the same counters per target, which is what
    :func:`window` subtracts when both snapshots have them. Build one from
    per-target counters with :meth:`from_targets`.
    """

    at: datetime
    series: Mapping[SeriesKey, RoleCounters]
    targets: Mapping[TargetKey, RoleCounters] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ConfigError(
                f"snapshot time {self.at.isoformat()} has no timezone",
                where="Snapshot",
                fix="pass a tz-aware datetime, e.g. datetime.now(UTC)",
            )

    @classmethod
    def from_targets(cls, at: datetime, targets: Mapping[TargetKey, RoleCounters]) -> Snapshot:
        """A snapshot whose ``series`` are the sums of ``targets`` by (role, model_version)."""
        summed: dict[SeriesKey, RoleCounters] = {}
        for (role, version, target), counters in sorted(targets.items()):
            key = (role, version)
            summed[key] = counters if key not in summed else _add(summed[key], counters, f"{role} {version} {target}")
        return cls(at=at, series=summed, targets=dict(targets))


class MetricsSource(Protocol):
    """Anything that can take a :class:`Snapshot` of one model's serving counters."""

    def snapshot(self, at: datetime | None = None) -> Snapshot:
        """The counters at ``at`` (tz-aware), or now when ``at`` is None."""
        ...


def window(start: Snapshot, end: Snapshot, role: str, model_version: str | None = None) -> RoleWindow:
    """The increase of ``role``'s counters from ``start`` to ``end``, as a :class:`RoleWindow`.

    ``model_version`` may be left out when ``end`` holds exactly one version of
    the role. Counters are subtracted per target when both snapshots carry
    targets, else per (role, version); a target whose counters went down (a
    restarted process) or that is new in ``end`` counts from zero. Raises
    ``DeploymentError`` when ``end`` has no series of the role and version.
    """
    if end.at < start.at:
        raise ConfigError(
            f"window end {end.at.isoformat()} is before its start {start.at.isoformat()}",
            where="window",
            fix="pass the earlier snapshot first",
        )
    versions = sorted(v for r, v in end.series if r == role)
    where = f"snapshot at {end.at.isoformat()}"
    if model_version is None:
        if not versions:
            raise DeploymentError(
                f"no series of the {role}",
                where=where,
                fix="check the model name, that the server serves the role, and that Prometheus scrapes it",
            )
        if len(versions) > 1:
            raise DeploymentError(
                f"cannot tell which {role} to analyse: versions {', '.join(versions)}",
                where=where,
                fix="pass model_version",
            )
        model_version = versions[0]
    elif model_version not in versions:
        raise DeploymentError(
            f"no series of {role} model_version {model_version!r}",
            where=where,
            fix=f"check the version (the {role} has: {', '.join(versions) or 'none'}), the model "
            "name, and that Prometheus scrapes the server",
        )

    if start.targets and end.targets:
        parts = [
            _increase(start.targets.get(key), counters)
            for key, counters in end.targets.items()
            if key[:2] == (role, model_version)
        ]
    else:
        parts = [_increase(start.series.get((role, model_version)), end.series[(role, model_version)])]
    total = parts[0]
    for part in parts[1:]:
        total = _add(total, part, f"{role} {model_version}")
    return RoleWindow(
        role=role,
        model_version=model_version,
        requests=sum(total.requests.get(o, 0.0) for o in ANSWERED_OUTCOMES),
        errors=sum(total.requests.get(o, 0.0) for o in FAILED_OUTCOMES),
        latency_buckets=total.latency_buckets,
        score_buckets=total.score_buckets,
        instances=sum(total.instances.values()),
        flagged=total.instances.get("flagged", 0.0),
    )


class ScrapeSource:
    """Scrape ``<base_url>/metrics`` of a running model server, now.

    ``client``: an ``httpx.Client`` to reuse (the caller closes it); by default
    one is opened per snapshot with ``timeout_seconds``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        client: httpx.Client | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        metrics_path: str = "/metrics",
    ) -> None:
        _check_model(model, "ScrapeSource")
        self.url = base_url.rstrip("/") + "/" + metrics_path.lstrip("/")
        self.model = model
        self._client = client
        self._timeout_seconds = timeout_seconds

    def snapshot(self, at: datetime | None = None) -> Snapshot:
        """The server's counters now; ``at`` must be None (a scrape cannot read the past)."""
        if at is not None:
            raise ConfigError(
                f"ScrapeSource cannot read the counters at {at.isoformat()}",
                where=self.url,
                fix="pass at=None (now), or use PrometheusSource for past instants",
            )
        response = _get(
            self._client,
            self._timeout_seconds,
            self.url,
            {},
            "the model server",
            headers={"Accept": "text/plain;version=0.0.4"},
        )
        now = datetime.now(UTC)
        content_type = response.headers.get("content-type", "")
        parse = parse_openmetrics if content_type.startswith("application/openmetrics-text") else parse_prometheus_text
        records = []
        try:
            for family in parse(response.text):
                for sample in family.samples:
                    if sample.name in _SAMPLES and sample.labels.get("model") == self.model:
                        records.append((sample.name, sample.labels, float(sample.value)))
        except ValueError as exc:
            raise DeploymentError(
                f"cannot parse the metrics exposition: {exc}",
                where=self.url,
                fix="point base_url at a riskloop model server (its /metrics)",
            ) from exc
        return Snapshot.from_targets(now, _collect(records, lambda labels: self.url))


class PrometheusSource:
    """Read a model's counters from Prometheus at any instant it holds (instant queries at ``time=``).

    Series are summed by (role, model_version, ``target_label``): several
    workers behind one target come aggregated already; several pods stay
    apart until :func:`window` has subtracted each. ``client``: an
    ``httpx.Client`` to reuse (the caller closes it); by default one is opened
    per snapshot with ``timeout_seconds``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        client: httpx.Client | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        target_label: str = DEFAULT_TARGET_LABEL,
    ) -> None:
        _check_model(model, "PrometheusSource")
        if not _LABEL_NAME.fullmatch(target_label):
            raise ConfigError(
                f"target_label {target_label!r} is not a Prometheus label name",
                where="PrometheusSource",
                fix="pass e.g. 'instance' or 'pod'",
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.target_label = target_label
        self._client = client
        self._timeout_seconds = timeout_seconds

    def queries(self) -> dict[str, str]:
        """The PromQL of each snapshot, by sample name."""
        selector = f'{{model="{_promql_string(self.model)}"}}'
        return {
            name: f"sum by (role, model_version, {split}, {self.target_label}) ({name}{selector})"
            for name, (_, split) in _SAMPLES.items()
        }

    def snapshot(self, at: datetime | None = None) -> Snapshot:
        """The counters at ``at`` (default: now), as the last samples Prometheus scraped at or before it."""
        if at is not None and (at.tzinfo is None or at.utcoffset() is None):
            raise ConfigError(
                f"at={at.isoformat()} has no timezone",
                where="PrometheusSource.snapshot",
                fix="pass a tz-aware datetime, e.g. datetime.now(UTC)",
            )
        at = datetime.now(UTC) if at is None else at
        url = f"{self.base_url}/api/v1/query"
        records = []
        if self._client is None:
            with httpx.Client(timeout=self._timeout_seconds) as client:
                results = {name: self._query(client, url, promql, at) for name, promql in self.queries().items()}
        else:
            results = {name: self._query(self._client, url, promql, at) for name, promql in self.queries().items()}
        for name, result in results.items():
            for series in result:
                labels, value = series.get("metric", {}), series.get("value", [None, "NaN"])
                records.append((name, labels, float(value[1])))
        target = self.target_label
        return Snapshot.from_targets(at, _collect(records, lambda labels: labels.get(target, "")))

    def _query(self, client: httpx.Client, url: str, promql: str, at: datetime) -> list[dict[str, Any]]:
        response = _get(
            client, self._timeout_seconds, url, {"query": promql, "time": f"{at.timestamp():.3f}"}, "Prometheus"
        )
        try:
            body = response.json()
        except ValueError as exc:
            raise DeploymentError(
                f"Prometheus answered with no JSON: {response.text[:200]!r}",
                where=url,
                fix="check that base_url is Prometheus's, not another server",
            ) from exc
        data = body.get("data") if isinstance(body, dict) else None
        if body.get("status") != "success" or not isinstance(data, dict) or data.get("resultType") != "vector":
            raise DeploymentError(
                f"Prometheus query failed: {body.get('errorType', '')} {body.get('error', body)}",
                where=f"{url} query {promql!r}",
                fix="check the query and Prometheus's log",
            )
        result: list[dict[str, Any]] = data.get("result", [])
        return result


def labeled_counts(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    role: str,
    as_of: datetime,
    label_maturity: timedelta,
    model_version: str | None = None,
) -> LabeledCounts:
    """Confusion counts of ``role``'s decisions on the transactions whose label is known at ``as_of``.

    ``predictions``: prediction-log rows (``transaction_id``, ``role``,
    ``decision`` flagged | passed, ``time`` and, to filter by
    ``model_version``, ``model_version``); rows after ``as_of`` are left out and
    a transaction scored twice by the role counts once, with its latest
    decision. ``labels``: ``transaction_id``, ``is_fraud`` (1/0) and optionally
    ``chargeback_timestamp``, one row per transaction. A fraud is a known
    positive once its chargeback arrived (``chargeback_timestamp <= as_of``; a
    fraud without a chargeback time counts as arrived). Any other labeled
    transaction is a known negative once it is older than ``label_maturity``
    at ``as_of``: a fraud whose chargeback is still to come then counts as a
    negative, as it would in production. Transactions without a label row, or
    younger and not an arrived fraud, are left out. Naive timestamps are taken
    as UTC.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ConfigError(
            f"as_of={as_of.isoformat()} has no timezone",
            where="labeled_counts",
            fix="pass a tz-aware datetime, e.g. datetime(..., tzinfo=UTC)",
        )
    if label_maturity < timedelta(0):
        raise ConfigError(
            f"label_maturity={label_maturity} is negative",
            where="labeled_counts",
            fix="pass a timedelta >= 0, e.g. timedelta(days=7)",
        )
    needed = ["transaction_id", "role", "decision", "time", *(["model_version"] if model_version else [])]
    _require_columns(predictions, needed, "predictions")
    _require_columns(labels, ["transaction_id", "is_fraud"], "labels")
    cutoff = pd.Timestamp(as_of).tz_convert("UTC")

    rows = predictions[predictions["role"] == role]
    if model_version is not None:
        rows = rows[rows["model_version"] == model_version]
    times = _utc(rows["time"], "predictions.time")
    rows = rows.assign(time=times)[times <= cutoff]
    unknown = sorted(set(rows["decision"].dropna().unique()) - set(DECISIONS))
    if unknown or rows["decision"].isna().any():
        raise DataContractError(
            f"predictions.decision has values other than {', '.join(DECISIONS)}: {unknown or ['missing']}",
            where="labeled_counts",
            fix="pass prediction-log rows (read_prediction_log)",
        )
    rows = rows.sort_values("time", kind="stable").drop_duplicates("transaction_id", keep="last")

    if labels["transaction_id"].duplicated().any():
        dupes = labels.loc[labels["transaction_id"].duplicated(), "transaction_id"].head(5).tolist()
        raise DataContractError(
            f"labels has several rows for transactions {dupes}",
            where="labeled_counts",
            fix="pass one label row per transaction_id",
        )
    label_columns = ["transaction_id", "is_fraud"]
    if "chargeback_timestamp" in labels.columns:
        label_columns.append("chargeback_timestamp")
    joined = rows.merge(labels[label_columns], on="transaction_id", how="inner", validate="one_to_one")

    fraud = pd.to_numeric(joined["is_fraud"], errors="coerce")
    known = fraud.notna()
    is_fraud = known & (fraud == 1)
    if "chargeback_timestamp" in joined.columns:
        chargeback = _utc(joined["chargeback_timestamp"], "labels.chargeback_timestamp")
        arrived = is_fraud & (chargeback.isna() | (chargeback <= cutoff))
    else:
        arrived = is_fraud
    mature = joined["time"] <= cutoff - pd.Timedelta(label_maturity)
    positive = arrived
    negative = known & ~arrived & mature
    flagged = joined["decision"] == "flagged"
    return LabeledCounts(
        tp=float((flagged & positive).sum()),
        fp=float((flagged & negative).sum()),
        fn=float((~flagged & positive).sum()),
        tn=float((~flagged & negative).sum()),
    )


class _Parts:
    """Mutable accumulator of one target's counters while a snapshot is parsed."""

    def __init__(self) -> None:
        self.requests: dict[str, float] = {}
        self.latency: dict[float, float] = {}
        self.scores: dict[float, float] = {}
        self.instances: dict[str, float] = {}

    def add(self, kind: str, key: str, value: float) -> None:
        if kind in ("latency", "scores"):
            buckets = self.latency if kind == "latency" else self.scores
            le = float(key)  # "+Inf" parses to inf
            buckets[le] = buckets.get(le, 0.0) + value
        else:
            counts = self.requests if kind == "requests" else self.instances
            counts[key] = counts.get(key, 0.0) + value

    def freeze(self) -> RoleCounters:
        return RoleCounters(
            requests=dict(self.requests),
            latency_buckets=tuple(sorted(self.latency.items())),
            score_buckets=tuple(sorted(self.scores.items())),
            instances=dict(self.instances),
        )


def _collect(
    records: Iterable[tuple[str, Mapping[str, str], float]], target_of: Callable[[Mapping[str, str]], str]
) -> dict[TargetKey, RoleCounters]:
    parts: dict[TargetKey, _Parts] = {}
    for name, labels, value in records:
        kind, split = _SAMPLES[name]
        role, version = labels.get("role"), labels.get("model_version")
        if not role or not version or split not in labels or math.isnan(value):
            continue
        key = (role, version, target_of(labels))
        parts.setdefault(key, _Parts()).add(kind, labels[split], value)
    return {key: p.freeze() for key, p in parts.items()}


def _went_down(before: RoleCounters, after: RoleCounters) -> bool:
    """True when ``after`` cannot follow ``before`` without a restart: a counter fell or the buckets changed."""
    for old, new in ((before.requests, after.requests), (before.instances, after.instances)):
        if any(new.get(k, 0.0) < v for k, v in old.items()):
            return True
    for old_b, new_b in ((before.latency_buckets, after.latency_buckets), (before.score_buckets, after.score_buckets)):
        if old_b and (
            [le for le, _ in old_b] != [le for le, _ in new_b]
            or any(n < o for (_, o), (_, n) in zip(old_b, new_b, strict=True))
        ):
            return True
    return False


def _increase(before: RoleCounters | None, after: RoleCounters) -> RoleCounters:
    if before is None or _went_down(before, after):
        return after
    return RoleCounters(
        requests={k: v - before.requests.get(k, 0.0) for k, v in after.requests.items()},
        latency_buckets=_minus(after.latency_buckets, before.latency_buckets),
        score_buckets=_minus(after.score_buckets, before.score_buckets),
        instances={k: v - before.instances.get(k, 0.0) for k, v in after.instances.items()},
    )


def _minus(after: Buckets, before: Buckets) -> Buckets:
    if not before:
        return after
    return tuple((le, n - o) for (le, n), (_, o) in zip(after, before, strict=True))


def _add(a: RoleCounters, b: RoleCounters, what: str) -> RoleCounters:
    return RoleCounters(
        requests={k: a.requests.get(k, 0.0) + b.requests.get(k, 0.0) for k in {*a.requests, *b.requests}},
        latency_buckets=_plus(a.latency_buckets, b.latency_buckets, f"{what} latency"),
        score_buckets=_plus(a.score_buckets, b.score_buckets, f"{what} score"),
        instances={k: a.instances.get(k, 0.0) + b.instances.get(k, 0.0) for k in {*a.instances, *b.instances}},
    )


def _plus(a: Buckets, b: Buckets, what: str) -> Buckets:
    if not a or not b:
        return a or b
    if [le for le, _ in a] != [le for le, _ in b]:
        raise DataContractError(
            f"{what} histograms of one model version have different buckets",
            where=what,
            fix="serve one version with one riskloop release (one set of bucket bounds)",
        )
    return tuple((le, x + y) for (le, x), (_, y) in zip(a, b, strict=True))


def _get(
    client: httpx.Client | None,
    timeout_seconds: float,
    url: str,
    params: Mapping[str, str],
    who: str,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    try:
        if client is None:
            with httpx.Client(timeout=timeout_seconds) as own:
                response = own.get(url, params=params, headers=headers)
        else:
            response = client.get(url, params=params, headers=headers)
    except httpx.TimeoutException as exc:
        raise ServiceUnavailable(
            f"{who} did not answer within {timeout_seconds:g} s ({type(exc).__name__})",
            where=url,
            fix=f"check that {who} is up and not overloaded",
        ) from exc
    except httpx.TransportError as exc:
        raise ServiceUnavailable(
            f"{who} is not reachable: {exc}", where=url, fix=f"check the URL and that {who} is running"
        ) from exc
    if response.is_error:
        detail = response.text[:300].strip()
        raise DeploymentError(
            f"{who} answered HTTP {response.status_code}: {detail}",
            where=url,
            fix="check the URL and the query; see the server's log",
        )
    return response


def _check_model(model: str, where: str) -> None:
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model {model!r} is empty", where=where, fix="pass the served model's name (label 'model')")


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataContractError(
            f"{what} lacks columns {missing}", where="labeled_counts", fix=f"pass a frame with {', '.join(columns)}"
        )


def _utc(values: pd.Series, what: str) -> pd.Series:
    try:
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        raise DataContractError(
            f"{what} is not a timestamp column: {exc}",
            where="labeled_counts",
            fix="pass datetimes (tz-aware, or naive UTC)",
        ) from exc


__all__ = [
    "ANSWERED_OUTCOMES",
    "FAILED_OUTCOMES",
    "MetricsSource",
    "PrometheusSource",
    "RoleCounters",
    "ScrapeSource",
    "SeriesKey",
    "Snapshot",
    "TargetKey",
    "labeled_counts",
    "window",
]
