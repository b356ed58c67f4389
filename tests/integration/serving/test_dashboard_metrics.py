"""The Grafana dashboard and the alert rules ask only for metrics that exist, in PromQL that Prometheus accepts.

Every PromQL expression of ``helm/riskloop/files/monitoring/riskloop-dashboard.json``
(panel targets and template variables, Grafana variables filled in) and of
``riskloop-alerts.rules.yaml`` is split into tokens; each metric name must be
exposed by the live model server's ``/metrics`` after real requests, or be one of
the gauges :class:`riskloop.monitoring.metrics.MonitoringMetrics` registers. The
test Prometheus then parses every expression and returns data for every panel:
serving panels from the live server it scrapes, monitoring panels from gauges
pushed to the test Pushgateway with the monitoring job's own push function.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Metric, delete_from_gateway
from prometheus_client.parser import text_string_to_metric_families

from riskloop.monitoring.assessment import ACTIONS
from riskloop.monitoring.metrics import DEFAULT_JOB, MonitoringMetrics, push_monitoring_metrics
from tests.integration.serving.conftest import MODEL, Server, Trained, instance
from tests.services import REPO_ROOT

MONITORING_DIR = REPO_ROOT / "helm" / "riskloop" / "files" / "monitoring"
DASHBOARD = MONITORING_DIR / "riskloop-dashboard.json"
RULES = MONITORING_DIR / "riskloop-alerts.rules.yaml"

# Metrics without the model/model_version/role label set (process-wide).
UNLABELLED = frozenset({"riskloop_prediction_log_rows_total"})
# What the dashboard is for, by the metrics it must read.
REQUIRED_METRICS = frozenset(
    {
        "riskloop_requests_total",
        "riskloop_request_duration_seconds_bucket",
        "riskloop_score_ratio_bucket",
        "riskloop_instances_total",
        "riskloop_unknown_entities_total",
        "riskloop_drift_share_ratio",
        "riskloop_feature_drift_p_value",
        "riskloop_decay_pr_auc",
        "riskloop_decay_recall_ratio",
        "riskloop_monitor_action",
    }
)
RATE_WINDOW = "1m"  # for $__rate_interval: the test Prometheus scrapes every second
GRAFANA_VARIABLES = {"__rate_interval": RATE_WINDOW, "__interval": "15s", "__range": "5m", "model": MODEL, "role": ".*"}
GRID_COLUMNS = 24

# --- a small PromQL tokenizer: enough to find metric names, selectors and label lists -------------------------

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<comment>\#[^\n]*)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
               (?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
  | (?P<space>\s+)
  | (?P<op>==|!=|=~|!~|<=|>=|[-+*/%^<>=,@])
""",
    re.VERBOSE,
)
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_PAIRS = {"(": ")", "{": "}", "[": "]"}


@dataclass(frozen=True)
class Selector:
    """One vector selector: the metric name, where it sits in the expression, and its ``{...}`` matchers."""

    metric: str
    start: int
    end: int  # end of the name, or of its matchers when it has some
    matchers: str | None  # the text between the braces


def _tokens(expr: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize PromQL at {pos}: {expr[pos : pos + 30]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            out.append((kind, m.group(), m.start()))
        pos = m.end()
    return out


def _closing(tokens: list[tuple[str, str, int]], i: int) -> int:
    """Index of the token that closes the bracket opened at ``tokens[i]``."""
    stack = []
    for j in range(i, len(tokens)):
        kind, text, _ = tokens[j]
        if kind == "open":
            stack.append(_PAIRS[text])
        elif kind == "close":
            if not stack or stack.pop() != text:
                raise ValueError(f"unbalanced {text!r}")
            if not stack:
                return j
    raise ValueError("unclosed bracket")


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr`` with a metric name; a selector without one (``{__name__=...}``) is an error.

    Function and aggregation names (followed by ``(`` or ``by``/``without``), keywords,
    label names inside ``{...}`` and label lists after ``by``, ``on``, ``group_left`` ...,
    and durations inside ``[...]`` are not metric names.
    """
    tokens = _tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text, start = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "", -1)
        if kind == "open" and text == "[":
            i = _closing(tokens, i) + 1
            continue
        if kind == "open" and text == "{":
            raise ValueError(f"a selector without a metric name at {start} in {expr!r}")
        if kind == "name":
            lowered = text.lower()
            if lowered in _LABEL_LIST_KEYWORDS and nxt[1] == "(":
                i = _closing(tokens, i + 1) + 1
                continue
            if lowered in _KEYWORDS or nxt[1] == "(" or (text in _AGGREGATIONS and nxt[1] in ("by", "without")):
                i += 1
                continue
            if nxt[1] == "{":
                close = _closing(tokens, i + 1)
                end = tokens[close][2] + 1
                found.append(Selector(text, start, end, expr[nxt[2] + 1 : end - 1]))
                i = close + 1
                continue
            found.append(Selector(text, start, start + len(text), None))
        i += 1
    return found


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr)}


def with_matcher(expr: str, matcher: str) -> str:
    """``expr`` with ``matcher`` (e.g. ``instance="127.0.0.1:8080"``) added to every selector."""
    out, last = [], 0
    for s in selectors(expr):
        inner = f"{matcher}, {s.matchers}" if s.matchers and s.matchers.strip() else matcher
        out += [expr[last : s.start], f"{s.metric}{{{inner}}}"]
        last = s.end
    return "".join([*out, expr[last:]])


# --- the expressions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    where: str  # "rule RiskloopX", "panel 'Title' A", "variable model"
    promql: str
    panel: str | None = None  # the panel title, for dashboard targets


def fill_grafana_variables(text: str, model: str = MODEL) -> str:
    values = {**GRAFANA_VARIABLES, "model": model}

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {text!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, text)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def dashboard_expressions(model: str = MODEL) -> list[Expression]:
    """Every PromQL expression of the dashboard, with ``$model`` set to ``model``."""
    d = dashboard()
    out = []
    for p in _panels(d["panels"]):
        for t in p.get("targets", []):
            out.append(
                Expression(f"panel {p['title']!r} {t['refId']}", fill_grafana_variables(t["expr"], model), p["title"])
            )
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {v['name']}: expected label_values(<selector>, <label>), got {query!r}"
        out.append(Expression(f"variable {v['name']}", fill_grafana_variables(m.group(1), model)))
    return out


def rule_expressions() -> list[Expression]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [Expression(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for g in groups for r in g["rules"]]


def all_expressions() -> list[Expression]:
    return [*dashboard_expressions(), *rule_expressions()]


def exposable_names(families: Iterable[Metric]) -> set[str]:
    """The sample names metric families can expose (a labelled counter has none until first incremented)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum"),
        "gauge": ("",),
        "info": ("_info",),
        "untyped": ("",),
    }
    names = set()
    for f in families:
        names |= {f.name + s for s in suffixes.get(f.type, ("",))}
        names |= {s.name for s in f.samples}
    return names


@functools.cache
def monitoring_gauges() -> frozenset[str]:
    """The sample names of the monitoring job's metrics (counters with ``_total``)."""
    registry = CollectorRegistry()
    MonitoringMetrics(registry)
    return frozenset(exposable_names(registry.collect()))


# --- the dashboard on its own --------------------------------------------------------------------------------------


def test_dashboard_is_grafana_json_with_a_datasource_and_a_model_variable() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 39 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["type"] == "query"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, v["name"]
    ids = [p["id"] for p in _panels(d["panels"])]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), ids
    for p in _panels(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_dashboard_panels_have_a_place_and_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for p in _panels(dashboard()["panels"]):
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= GRID_COLUMNS, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{p['title']!r} overlaps {taken[(x, y)]!r} at x={x} y={y}"
                taken[(x, y)] = p["title"]


def test_every_dashboard_selector_is_filtered_by_the_model_variable() -> None:
    for e in dashboard_expressions():
        for s in selectors(e.promql):
            if e.panel is not None and s.metric not in UNLABELLED:
                assert f'model="{MODEL}"' in (s.matchers or ""), f"{e.where}: {s.metric} is not filtered by $model"


def test_dashboard_shows_what_was_asked_for() -> None:
    used = set().union(*(metric_names(e.promql) for e in dashboard_expressions()))
    assert REQUIRED_METRICS - used == set()


def test_the_tokenizer_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'sum by (model, role) (rate(riskloop_requests_total{outcome=~"error|unavailable",x="a}b"}[5m]))\n'
        "/ on (role) group_left sum without (le) (increase(riskloop_score_ratio_bucket[5m:1m] offset 1h))\n"
        "> bool 0.05 and histogram_quantile(0.99, riskloop_request_duration_seconds_bucket) or up # a comment\n"
        "unless time() - max(riskloop_monitor_last_run_timestamp_seconds) > 26 * 3600 + Inf"
    )
    assert metric_names(expr) == {
        "riskloop_requests_total",
        "riskloop_score_ratio_bucket",
        "riskloop_request_duration_seconds_bucket",
        "up",
        "riskloop_monitor_last_run_timestamp_seconds",
    }
    assert with_matcher('rate(a{b="c"}[1m]) / d', 'i="x"') == 'rate(a{i="x", b="c"}[1m]) / d{i="x"}'
    with pytest.raises(ValueError, match="without a metric name"):
        selectors('{__name__="riskloop_requests_total"}')


# --- against the live server and the test Prometheus ---------------------------------------------------------------


@dataclass(frozen=True)
class Scraped:
    metrics_text: str  # the server's /metrics after the requests
    instance: str  # the server's `instance` label in Prometheus
    at: float  # a time at which Prometheus has scraped the server after the requests


def _last_scrape(prometheus_url: str, instance_label: str) -> float:
    promql = f'max(timestamp(riskloop_model_info{{instance="{instance_label}"}}))'
    got = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5).json()
    result = got["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def _wait_for_scrape(prometheus_url: str, instance_label: str, after: float, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at = _last_scrape(prometheus_url, instance_label)
        if at > after:
            return at
        time.sleep(0.2)
    pytest.fail(f"Prometheus did not scrape {instance_label} within {timeout} s")


@pytest.fixture(scope="module")
def scraped(server: Server, trained: Trained, prometheus_url: str, prometheus_targets_dir: Path) -> Iterator[Scraped]:
    """The live server scraped by the test Prometheus before and after a burst of real requests."""
    port = server.url.rsplit(":", 1)[1]
    instance_label = f"127.0.0.1:{port}"
    target = prometheus_targets_dir / f"dashboard-metrics-{os.getpid()}-{port}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [instance_label], "labels": {"job_kind": "dashboard-metrics"}}]))
    tmp.replace(target)
    try:
        _wait_for_scrape(prometheus_url, instance_label, 0.0)  # a sample before the traffic, for rate()
        rows = [instance(r) for _, r in trained.held_out.head(30).iterrows()]
        unknown = rows[0] | {"card_id": "C_DASHBOARD_UNKNOWN", "transaction_id": "TX-DASHBOARD-UNKNOWN"}
        invalid = rows[1] | {"amount": -1.0, "transaction_id": "TX-DASHBOARD-INVALID"}
        endpoint = f"{server.url}/v1/models/{MODEL}:predict"
        with httpx.Client(timeout=30) as http:
            for row in [*rows, unknown]:
                r = http.post(endpoint, json={"instances": [row]})
                assert r.status_code == 200, r.text
            assert http.post(endpoint, json={"instances": [invalid]}).status_code in (400, 422)
            # the prediction log counts rows once written (after flush_seconds) and syncs its
            # counter on the next request: ask until the written rows show up
            deadline = time.monotonic() + 20
            while "riskloop_prediction_log_rows_total" not in http.get(f"{server.url}/metrics").text:
                if time.monotonic() > deadline:
                    pytest.fail("riskloop_prediction_log_rows_total did not appear on /metrics within 20 s")
                time.sleep(0.5)
                assert http.post(endpoint, json={"instances": [rows[2]]}).status_code == 200
        # two scrapes after the last request: a series born in the burst has the two samples rate() needs
        first = _wait_for_scrape(prometheus_url, instance_label, time.time())
        at = _wait_for_scrape(prometheus_url, instance_label, first)
        yield Scraped(httpx.get(f"{server.url}/metrics", timeout=10).text, instance_label, at)
    finally:
        target.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def test_every_metric_exists_on_the_live_server_or_among_the_monitoring_gauges(scraped: Scraped) -> None:
    live = exposable_names(text_string_to_metric_families(scraped.metrics_text))
    missing = {}
    for e in all_expressions():
        unknown = metric_names(e.promql) - live - monitoring_gauges()
        if unknown:
            missing[e.where] = sorted(unknown)
    assert not missing, f"metrics neither on the live /metrics nor monitoring gauges: {missing}"
    # the split is clean: no monitoring gauge is (also) a model-server metric
    assert monitoring_gauges() & live == set()


def test_prometheus_parses_every_expression(prometheus_url: str) -> None:
    failures = {}
    with httpx.Client(timeout=10) as http:
        for e in all_expressions():
            body = http.get(f"{prometheus_url}/api/v1/query", params={"query": e.promql}).json()
            if body.get("status") != "success":
                failures[e.where] = f"{body.get('errorType')}: {body.get('error')}"
    assert not failures, failures


def _without_data(
    expressions: Iterable[Expression], prometheus_url: str, at: float, scope: str | None = None
) -> dict[str, tuple[str, list[float]]]:
    """The expressions that have no finite value at ``at`` (each selector narrowed by ``scope`` if given)."""
    empty = {}
    with httpx.Client(timeout=10) as http:
        for e in expressions:
            promql = e.promql if scope is None else with_matcher(e.promql, scope)
            body = http.get(f"{prometheus_url}/api/v1/query", params={"query": promql, "time": at}).json()
            assert body["status"] == "success", (e.where, body)
            values = [float(r["value"][1]) for r in body["data"]["result"]]
            if not any(math.isfinite(v) for v in values):
                empty[e.where] = (promql, values)
    return empty


def test_serving_panels_show_data_from_the_live_server(scraped: Scraped, prometheus_url: str) -> None:
    """Each serving panel and variable, scoped to the live server, has at least one finite value.

    Wrong label values (``outcome="errors"``), a histogram without ``le`` or a join on
    the wrong labels parse fine and return nothing; this finds them.
    """
    serving = [e for e in dashboard_expressions() if not metric_names(e.promql) & monitoring_gauges()]
    assert len(serving) >= 10, [e.where for e in serving]
    assert _without_data(serving, prometheus_url, scraped.at, f'instance="{scraped.instance}"') == {}


@dataclass(frozen=True)
class Pushed:
    model: str  # a model name of this test's own
    at: float  # a time at which Prometheus has scraped the pushed gauges twice


@pytest.fixture(scope="module")
def pushed(pushgateway_url: str, prometheus_url: str) -> Iterator[Pushed]:
    """A monitoring run of a model of its own, pushed as the monitoring job pushes and scraped by Prometheus.

    Drift above the alert's threshold and a significant decay, so the two alert
    expressions select it; the last run is now.
    """
    model = f"dashboard-test-{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    m = MonitoringMetrics(registry)
    m.drift_share.labels(model, "1").set(0.4)
    for feature, p_value in (("amount", 0.001), ("distance_from_home_km", 0.5)):
        m.feature_p_value.labels(model, "1", feature).set(p_value)
    m.score_p_value.labels(model, "1").set(0.2)
    m.pr_auc.labels(model, "1").set(0.7)
    m.recall.labels(model, "1").set(0.6)
    m.decay_significant.labels(model, "1").set(1)
    for action in ACTIONS:
        m.action.labels(model, action).set(1 if action == "retrain" else 0)
    m.retrains.labels(model).inc()
    m.last_run.labels(model).set(time.time())
    key = {"model": model}
    push_monitoring_metrics(registry, pushgateway_url, grouping_key=key)
    try:
        promql = f'count_over_time(riskloop_monitor_last_run_timestamp_seconds{{model="{model}"}}[1m])'
        deadline = time.monotonic() + 20
        while True:
            at = time.time()
            result = httpx.get(
                f"{prometheus_url}/api/v1/query", params={"query": promql, "time": at}, timeout=5
            ).json()["data"]["result"]
            if result and float(result[0]["value"][1]) >= 2:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    "Prometheus did not scrape the pushed monitoring gauges twice within 20 s "
                    "(does it scrape the Pushgateway?)"
                )
            time.sleep(0.3)
        yield Pushed(model, at)
    finally:
        delete_from_gateway(pushgateway_url, job=DEFAULT_JOB, grouping_key=key, timeout=5)


def test_monitoring_panels_show_data_pushed_through_the_pushgateway(pushed: Pushed, prometheus_url: str) -> None:
    monitoring = [e for e in dashboard_expressions(pushed.model) if metric_names(e.promql) & monitoring_gauges()]
    assert len(monitoring) >= 8, [e.where for e in monitoring]
    assert _without_data(monitoring, prometheus_url, pushed.at) == {}


def test_monitoring_alert_expressions_select_the_pushed_gauges(pushed: Pushed, prometheus_url: str) -> None:
    """The labels the Pushgateway adds (job, instance) do not get in the way of the rules' aggregations."""
    expected = {
        "rule RiskloopDriftHigh": True,
        "rule RiskloopPerformanceDecay": True,
        "rule RiskloopMonitorNotRunning": False,
    }
    got = {}
    with httpx.Client(timeout=10) as http:
        for e in rule_expressions():
            if e.where in expected:
                body = http.get(f"{prometheus_url}/api/v1/query", params={"query": e.promql, "time": pushed.at}).json()
                got[e.where] = any(r["metric"].get("model") == pushed.model for r in body["data"]["result"])
    assert got == expected
