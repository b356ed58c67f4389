"""Both metric sources read one real exporter alike, and canary analysis decides the same from either.

A subprocess serves ``ServingMetrics`` (a champion and a challenger of a model
name unique to the test) with prometheus-client's ``start_http_server`` and is
registered with the test Prometheus as a ``file_sd`` target. It applies one
batch of observations per line it reads on stdin and answers ``ok <time>``.
After each batch the test waits until Prometheus has a scrape that started
after the answer, then takes a snapshot from each source.

Tolerance: every count must agree exactly. p99 and PSI are computed from those
same bucket counts, so they agree up to float round-off (relative 1e-9); both
are also checked against the observations themselves (p99 within its bucket).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import pytest

from riskloop.delivery.analysis import CanaryPolicy, RoleWindow, analyze, histogram_quantile, psi
from riskloop.delivery.metrics_source import PrometheusSource, ScrapeSource, Snapshot, window
from riskloop.errors import DeploymentError, ServiceUnavailable
from riskloop.serving.metrics import REQUEST_SECONDS_BUCKETS

SCRAPE_WAIT_SECONDS = 20.0  # the test Prometheus scrapes every 1 s and rereads file_sd every 1 s
THRESHOLD = 0.3
VERSIONS = {"champion": "7", "challenger": "8"}

EXPORTER = textwrap.dedent(
    """
    import json, sys, time
    from prometheus_client import CollectorRegistry, start_http_server
    from riskloop.serving.metrics import ModelLabels, ServingMetrics

    model, versions = sys.argv[1], json.loads(sys.argv[2])
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    roles = {role: ModelLabels(model, version, role) for role, version in versions.items()}
    for labels in roles.values():
        metrics.register_model(labels, model_sha256="ab" * 32)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_port, time.time(), flush=True)
    for line in sys.stdin:
        batch = json.loads(line)
        labels = roles[batch["role"]]
        for outcome, seconds in batch["requests"]:
            metrics.observe_request(labels, outcome=outcome, seconds=seconds)
        metrics.observe_instances(labels, batch["scores"], batch["decisions"])
        print("ok", time.time(), flush=True)
    """
)


@dataclass(frozen=True)
class Batch:
    """One role's observations: (outcome, seconds) per request, one score per answered request."""

    role: str
    requests: tuple[tuple[str, float], ...]
    scores: tuple[float, ...]

    @property
    def latencies(self) -> np.ndarray:
        return np.asarray([s for _, s in self.requests])

    def as_line(self) -> str:
        decisions = ["flagged" if s >= THRESHOLD else "passed" for s in self.scores]
        return (
            json.dumps({"role": self.role, "requests": self.requests, "scores": self.scores, "decisions": decisions})
            + "\n"
        )


def make_batch(
    role: str,
    *,
    seed: int,
    n: int = 600,
    invalid: int = 20,
    error_share: float = 0.0,
    score_shift: float = 0.0,
    latency_scale: float = 1.0,
) -> Batch:
    rng = np.random.default_rng(seed)
    latencies = rng.lognormal(math.log(0.004), 0.5, size=n + invalid) * latency_scale
    n_errors = round(n * error_share)
    outcomes = ["error"] * (n_errors // 2) + ["unavailable"] * (n_errors - n_errors // 2)
    outcomes += ["ok"] * (n - n_errors) + ["invalid"] * invalid
    scores = np.clip(rng.beta(0.5, 8, size=n - n_errors) + score_shift, 0.0, 1.0)
    return Batch(role, tuple(zip(outcomes, latencies.round(6).tolist(), strict=True)), tuple(scores.round(6).tolist()))


@dataclass(frozen=True)
class Exporter:
    process: subprocess.Popen[str]
    port: int
    model: str
    test_id: str
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def send(self, batch: Batch) -> float:
        """Apply ``batch`` in the exporter; return the exporter's clock once it is applied."""
        stdin, stdout = _pipes(self.process)
        stdin.write(batch.as_line())
        stdin.flush()
        word, at = stdout.readline().split()
        assert word == "ok"
        return float(at)


def _pipes(process: subprocess.Popen[str]) -> tuple[IO[str], IO[str]]:
    assert process.stdin is not None and process.stdout is not None
    return process.stdin, process.stdout


@pytest.fixture()
def exporter(prometheus_targets_dir: Path) -> Iterator[Exporter]:
    test_id = uuid.uuid4().hex[:12]
    model = f"canary-test-{test_id}"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-c", EXPORTER, model, json.dumps(VERSIONS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    targets = prometheus_targets_dir / f"canary-{test_id}.json"
    try:
        port, started_at = _pipes(process)[1].readline().split()
        # written under another name and renamed: file_sd must never read half a file
        partial = targets.with_suffix(".tmp")
        partial.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"canary_test": test_id}}]))
        partial.replace(targets)
        yield Exporter(process, int(port), model, test_id, float(started_at))
    finally:
        targets.unlink(missing_ok=True)
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def scraped_after(prometheus_url: str, model: str, after: float) -> bool:
    """True once Prometheus holds a sample of ``model`` from a scrape that started after ``after`` (epoch s)."""
    promql = f'max(timestamp(riskloop_model_info{{model="{model}"}}))'
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5.0)
    response.raise_for_status()
    result = response.json()["data"]["result"]
    # Prometheus may move a scrape's timestamp by up to 2 ms to align it with the schedule
    return bool(result) and float(result[0]["value"][1]) > after + 0.05


def snapshots(exporter: Exporter, prometheus_url: str, after: float) -> tuple[Snapshot, Snapshot]:
    """(scrape, prometheus) snapshots of the state the exporter reached at ``after``."""
    deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
    while not scraped_after(prometheus_url, exporter.model, after):
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus did not scrape {exporter.url} within {SCRAPE_WAIT_SECONDS:.0f} s")
        time.sleep(0.2)
    at = datetime.now(UTC)
    scraped = ScrapeSource(exporter.url, exporter.model).snapshot()
    stored = PrometheusSource(prometheus_url, exporter.model).snapshot(at)
    return scraped, stored


def assert_same_window(a: RoleWindow, b: RoleWindow) -> None:
    assert (a.role, a.model_version) == (b.role, b.model_version)
    assert (a.requests, a.errors, a.instances, a.flagged) == (b.requests, b.errors, b.instances, b.flagged)
    assert a.latency_buckets == b.latency_buckets
    assert a.score_buckets == b.score_buckets
    assert histogram_quantile(0.99, a.latency_buckets) == pytest.approx(
        histogram_quantile(0.99, b.latency_buckets), rel=1e-9
    )


def assert_matches_batch(w: RoleWindow, batch: Batch) -> None:
    """The window holds exactly what the batch observed; its p99 lies within the true p99's bucket."""
    answered = [o for o, _ in batch.requests if o != "invalid"]
    assert w.requests == len(answered)
    assert w.errors == sum(o in ("error", "unavailable") for o in answered)
    assert w.instances == len(batch.scores)
    assert w.flagged == sum(s >= THRESHOLD for s in batch.scores)
    assert w.latency_buckets[-1][1] == len(batch.requests)  # invalid requests are timed too
    true_p99 = float(np.quantile(batch.latencies, 0.99))
    i = int(np.searchsorted(REQUEST_SECONDS_BUCKETS, true_p99))
    lower = 0.0 if i == 0 else REQUEST_SECONDS_BUCKETS[i - 1]
    upper = REQUEST_SECONDS_BUCKETS[min(i, len(REQUEST_SECONDS_BUCKETS) - 1)]
    assert lower <= histogram_quantile(0.99, w.latency_buckets) <= upper


def test_scrape_and_prometheus_sources_agree(exporter: Exporter, prometheus_url: str) -> None:
    policy = CanaryPolicy()
    s0 = snapshots(exporter, prometheus_url, exporter.started_at)

    healthy = [make_batch("champion", seed=1), make_batch("challenger", seed=2)]
    for batch in healthy:
        applied = exporter.send(batch)
    s1 = snapshots(exporter, prometheus_url, applied)

    broken = [
        make_batch("champion", seed=3),
        make_batch("challenger", seed=4, error_share=0.2, score_shift=0.3, latency_scale=3.0),
    ]
    for batch in broken:
        applied = exporter.send(batch)
    s2 = snapshots(exporter, prometheus_url, applied)

    for (start, end), batches, expected in (((s0, s1), healthy, "promote"), ((s1, s2), broken, "rollback")):
        verdicts = []
        for source in (0, 1):  # 0: scrape, 1: prometheus
            champion = window(start[source], end[source], "champion")
            challenger = window(start[source], end[source], "challenger")
            assert_matches_batch(champion, batches[0])
            assert_matches_batch(challenger, batches[1])
            verdicts.append((analyze(champion, challenger, policy), champion, challenger))
        (by_scrape, *scrape_windows), (by_prometheus, *prometheus_windows) = verdicts
        for a, b in zip(scrape_windows, prometheus_windows, strict=True):
            assert_same_window(a, b)
        assert psi(scrape_windows[0].score_buckets, scrape_windows[1].score_buckets) == pytest.approx(
            psi(prometheus_windows[0].score_buckets, prometheus_windows[1].score_buckets), rel=1e-9
        )
        assert by_scrape.value == by_prometheus.value == expected, (by_scrape.reasons, by_prometheus.reasons)
        assert by_scrape.reasons == by_prometheus.reasons
        assert by_scrape.measures == pytest.approx(by_prometheus.measures, rel=1e-9)

    rollback = analyze(window(s1[1], s2[1], "champion"), window(s1[1], s2[1], "challenger"), policy)
    failed = {r.split(":", 1)[0] for r in rollback.reasons if " FAIL:" in r}
    assert failed == {"errors FAIL", "latency FAIL", "score_psi FAIL", "alert_rate FAIL"}
    # the windows chain: s0..s2 is the sum of both
    whole = window(s0[1], s2[1], "challenger")
    assert whole.requests == window(s0[1], s1[1], "challenger").requests + window(s1[1], s2[1], "challenger").requests


def test_prometheus_source_can_read_the_past(exporter: Exporter, prometheus_url: str) -> None:
    before, _ = snapshots(exporter, prometheus_url, exporter.started_at)
    applied = exporter.send(make_batch("challenger", seed=5))
    snapshots(exporter, prometheus_url, applied)
    source = PrometheusSource(prometheus_url, exporter.model)
    then, now = source.snapshot(before.at), source.snapshot()
    assert window(then, now, "challenger").requests == 600
    assert window(then, then, "challenger").requests == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_closed_port_fails_fast_and_clearly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="Prometheus is not reachable") as info:
        PrometheusSource(url, "fraud-detector", timeout_seconds=2.0).snapshot()
    assert time.monotonic() - started < 2.0
    assert info.value.where == f"{url}/api/v1/query"
    assert "check the URL and that Prometheus is running" in str(info.value)
    with pytest.raises(ServiceUnavailable, match="the model server is not reachable"):
        ScrapeSource(url, "fraud-detector", timeout_seconds=2.0).snapshot()


def test_wrong_prometheus_path_is_a_deployment_error(prometheus_url: str) -> None:
    with pytest.raises(DeploymentError, match="HTTP 404"):
        PrometheusSource(f"{prometheus_url}/no-such-prefix", "fraud-detector").snapshot()
