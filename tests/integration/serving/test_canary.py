"""Progressive delivery drills: a real server following the deployment record, real traffic, real analysis.

Version 2 is version 1's model registered again (same bytes, same hash): a good
challenger by construction. Bad challengers come from the record's ``drill``
(errors, score shift, latency injected into the challenger only).
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

from riskloop.audit.log import open_audit_log
from riskloop.delivery import rollout
from riskloop.delivery.analysis import CanaryPolicy, histogram_quantile, psi
from riskloop.delivery.canary import judge, progressive_rollout
from riskloop.delivery.metrics_source import PrometheusSource, ScrapeSource, window
from riskloop.registry.deployment import Drill
from riskloop.registry.mlflow_registry import client, get_version, version_by_alias
from riskloop.serving.prediction_log import read_prediction_log
from riskloop.serving.replay import Replay, instances
from riskloop.settings import Settings
from tests.integration.serving.conftest import MODEL, Server, Trained, start_server

# small windows on a shared 2-core machine: latency is not what these drills test, so its slack is wide
POLICY = CanaryPolicy(min_requests=40, min_instances=40, p99_slack_seconds=0.05)
INTERVAL_SECONDS = 2.0


@pytest.fixture(scope="module")
def versions(trained: Trained) -> tuple[str, str]:
    s = trained.settings
    v1 = get_version(s.tracking_uri, MODEL, "1")
    mv = client(s.tracking_uri).create_model_version(
        name=MODEL, source=f"runs:/{v1.run_id}/model_dir", run_id=v1.run_id, tags=v1.tags
    )
    return "1", str(mv.version)


@pytest.fixture(scope="module")
def canary_server(trained: Trained, versions: tuple[str, str]) -> Iterator[Server]:
    s = trained.settings
    rollout.ensure_deployment(s, MODEL)
    srv = start_server(s)  # no pin: follows the deployment record
    yield srv
    srv.stop()


@pytest.fixture()
def fresh(trained: Trained, canary_server: Server, versions: tuple[str, str]) -> Iterator[Settings]:
    """Each drill starts and ends with v1 as the only model served."""
    s = trained.settings
    reset(s, versions)
    serving(canary_server, trained, versions[0])
    yield s
    reset(s, versions)


def serving(server: Server, trained: Trained, version: str, timeout: float = 15) -> None:
    """Wait until the server answers with ``version`` (it polls the record every 0.25 s, then loads)."""
    row = rows_of(trained)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [row]}, timeout=10)
        if r.status_code == 200 and r.json()["predictions"][0]["model_version"] == version:
            return
        time.sleep(0.1)
    pytest.fail(f"the server did not switch to version {version} within {timeout}s")


def reset(s: Settings, versions: tuple[str, str]) -> None:
    d = rollout.current(s, MODEL)
    assert d is not None
    if d.challenger_version is not None:
        rollout.rollback(s, MODEL, reason="test reset")
    if rollout.current(s, MODEL).champion_version != versions[0]:  # type: ignore[union-attr]
        rollout.restore_previous(s, MODEL, reason="test reset")


def traffic_to(url: str, rows: list[dict[str, object]], connections: int = 2) -> Replay:
    return Replay(url, MODEL, rows, connections=connections)


def answers(traffic: Replay) -> list[tuple[str, int, str | None]]:
    return [(a.card_id, a.status, a.model_version) for a in traffic.answers()]


def rows_of(trained: Trained) -> list[dict[str, object]]:
    return instances(trained.held_out)


def wait_for_version(traffic: Replay, version: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(v == version for _, _, v in answers(traffic)[-200:]):
            return
        time.sleep(0.1)
    pytest.fail(f"the server never answered with version {version} within {timeout}s")


def on_champion(card: str, percent: int) -> bool:
    return zlib.crc32(card.encode()) % 100 >= percent  # the router's sticky rule


def audit_events(s: Settings, *names: str) -> list[dict[str, object]]:
    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    return [{"event": e.event, "ids": e.ids, "details": e.details} for e in log.events() if e.event in names]


def test_failing_challenger_is_rolled_back_and_no_champion_request_fails(
    fresh: Settings, canary_server: Server, trained: Trained, versions: tuple[str, str]
) -> None:
    s = fresh
    # sticky, so the test knows which model each card's requests went to
    rollout.deploy_challenger(
        s, MODEL, version=versions[1], canary_percent=50, sticky=True, drill=Drill(error_rate=0.2)
    )
    verdicts: list[str] = []
    with traffic_to(canary_server.url, rows_of(trained)) as traffic:
        deadline = time.monotonic() + 20
        while not any(status == 500 for _, status, _ in answers(traffic)) and time.monotonic() < deadline:
            time.sleep(0.1)
        result = progressive_rollout(
            s,
            MODEL,
            steps=[50],
            interval_seconds=INTERVAL_SECONDS,
            max_intervals=3,
            policy=POLICY,
            source=ScrapeSource(canary_server.url, MODEL),
            on_verdict=lambda pct, v: verdicts.append(v.value),
        )
        mark = len(answers(traffic))
        time.sleep(1.5)  # the server picks up the rollback
        after = answers(traffic)[mark:]
    assert result.outcome == "rolled_back" and len(verdicts) <= 3, result.summary()
    assert any("errors FAIL" in r for r in result.verdicts[-1][1].reasons), result.verdicts[-1][1].reasons
    seen = answers(traffic)
    champion_side = [st for card, st, _ in seen if on_champion(card, 50)]
    answered_by_challenger = [st for card, st, v in seen if not on_champion(card, 50) and (st == 500 or v == "2")]
    assert champion_side and all(st == 200 for st in champion_side), [
        (card, st, v) for card, st, v in seen if on_champion(card, 50) and st != 200
    ][:10]
    assert 0.1 < answered_by_challenger.count(500) / len(answered_by_challenger) < 0.32
    assert set(st for st in (x[1] for x in seen)) <= {200, 500}
    late = after[len(after) // 2 :]
    assert late and all(st == 200 and v == versions[0] for _, st, v in late)
    d = rollout.current(s, MODEL)
    assert d is not None and d.challenger_version is None
    assert version_by_alias(s.tracking_uri, MODEL, "challenger") is None
    last = audit_events(s, "rolled_back")[-1]
    assert last["details"]["verdict"]["decision"] == "rollback"  # type: ignore[index]


def test_shifted_scores_are_rolled_back_on_distribution_shift(
    fresh: Settings, canary_server: Server, trained: Trained, versions: tuple[str, str]
) -> None:
    s = fresh
    rollout.deploy_challenger(s, MODEL, version=versions[1], canary_percent=50, drill=Drill(score_shift=0.3))
    with traffic_to(canary_server.url, rows_of(trained)) as traffic:
        wait_for_version(traffic, versions[1])
        result = progressive_rollout(
            s,
            MODEL,
            steps=[50],
            interval_seconds=INTERVAL_SECONDS,
            max_intervals=3,
            policy=POLICY,
            source=ScrapeSource(canary_server.url, MODEL),
        )
    assert result.outcome == "rolled_back", result.summary()
    reasons = result.verdicts[-1][1].reasons
    assert any(r.startswith("score_psi FAIL") for r in reasons), reasons
    assert not any(r.startswith("errors FAIL") for r in reasons)
    assert all(st == 200 for _, st, _ in answers(traffic))


def test_good_challenger_is_promoted_with_aliases_audit_and_split_consistent(
    fresh: Settings, canary_server: Server, trained: Trained, versions: tuple[str, str]
) -> None:
    s = fresh
    rollout.deploy_challenger(s, MODEL, alias=None, version=versions[1], canary_percent=10)
    with traffic_to(canary_server.url, rows_of(trained)) as traffic:
        wait_for_version(traffic, versions[1])
        # a decision needs enough traffic; on a loaded machine it arrives slower, so allow more intervals
        # (the rollout stops as soon as it has decided)
        result = progressive_rollout(
            s,
            MODEL,
            steps=[10, 50],
            interval_seconds=INTERVAL_SECONDS,
            max_intervals=8,
            policy=POLICY,
            source=ScrapeSource(canary_server.url, MODEL),
        )
        assert result.outcome == "promoted", result.summary()
        mark = len(answers(traffic))
        time.sleep(1.5)
        after = answers(traffic)[mark:]
    assert [pct for pct, _ in result.verdicts][-1] == 50
    late = after[len(after) // 2 :]
    assert late and all(st == 200 and v == versions[1] for _, st, v in late)
    assert all(st == 200 for _, st, _ in answers(traffic))
    d = rollout.current(s, MODEL)
    assert d is not None and (d.champion_version, d.challenger_version, d.canary_percent) == (versions[1], None, 0)
    assert version_by_alias(s.tracking_uri, MODEL, "champion").version == versions[1]  # type: ignore[union-attr]
    assert version_by_alias(s.tracking_uri, MODEL, "previous").version == versions[0]  # type: ignore[union-attr]
    assert version_by_alias(s.tracking_uri, MODEL, "challenger") is None
    events = audit_events(s, "canary_deployed", "canary_traffic_set", "canary_verdict", "promoted")
    assert [e["event"] for e in events][-1] == "promoted"
    promoted = events[-1]
    assert promoted["ids"]["champion_version"] == versions[1]  # type: ignore[index]
    assert promoted["details"]["previous_version"] == versions[0]  # type: ignore[index]
    assert promoted["details"]["verdict"]["decision"] == "promote"  # type: ignore[index]
    assert any(
        e["event"] == "canary_traffic_set" and e["details"]["canary_percent"] == 50  # type: ignore[index]
        for e in events
    )


def _post(url: str, row: dict[str, object], request_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/{MODEL}:predict", json={"instances": [row]}, headers={"x-request-id": request_id}, timeout=10
    )


def test_shadow_answers_byte_identical_and_logs_both_scores(
    fresh: Settings, canary_server: Server, trained: Trained, versions: tuple[str, str]
) -> None:
    s = fresh
    rows = rows_of(trained)[:40]
    alone = [_post(canary_server.url, r, f"shadow-test-{i}") for i, r in enumerate(rows)]
    # a shadow that is slow and fails half its requests must not show in the answers
    rollout.deploy_challenger(
        s, MODEL, version=versions[1], mode="shadow", drill=Drill(error_rate=0.5, added_latency_ms=300)
    )
    time.sleep(1.5)  # the server picks up the record
    t0 = time.perf_counter()
    shadowed = [_post(canary_server.url, r, f"shadow-test-{i}") for i, r in enumerate(rows)]
    elapsed = time.perf_counter() - t0
    assert [r.status_code for r in shadowed] == [200] * len(rows)
    assert [r.content for r in shadowed] == [r.content for r in alone]
    assert elapsed < len(rows) * 0.3 / 2  # the shadow's 300 ms per request are not on the request path
    rollout.deploy_challenger(s, MODEL, version=versions[1], mode="shadow")  # a healthy shadow now
    time.sleep(1.5)
    ids = [f"shadow-ok-{uuid.uuid4().hex[:8]}-{i}" for i in range(len(rows))]
    for rid, r in zip(ids, rows, strict=True):
        assert _post(canary_server.url, r, rid).status_code == 200
    deadline = time.monotonic() + 20
    while True:
        log = read_prediction_log(s.predictions)
        mine = log[log["request_id"].isin(ids)]
        if (mine["role"] == "shadow").sum() == len(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    pairs = mine.pivot_table(index="request_id", columns="role", values="score", aggfunc="first")
    assert len(pairs) == len(rows) and set(pairs.columns) == {"champion", "shadow"}
    assert (pairs["champion"] - pairs["shadow"]).abs().max() < 1e-9  # same model bytes, same features


def test_prometheus_and_direct_scrape_reach_the_same_verdict(
    fresh: Settings,
    canary_server: Server,
    trained: Trained,
    versions: tuple[str, str],
    prometheus_url: str,
    prometheus_targets_dir: Path,
) -> None:
    s = fresh
    rollout.deploy_challenger(s, MODEL, version=versions[1], canary_percent=50, drill=Drill(score_shift=0.3))
    port = canary_server.url.rsplit(":", 1)[1]
    target = prometheus_targets_dir / f"canary-drill-{port}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job_kind": "canary-drill"}}]))
    tmp.replace(target)
    try:
        scrape, prom = ScrapeSource(canary_server.url, MODEL), PrometheusSource(prometheus_url, MODEL)
        time.sleep(1.5)  # the record is picked up and the target discovered
        start_scrape, start_at = _quiet_snapshot(scrape, prometheus_url, port)
        start_prom = prom.snapshot(start_at)
        with traffic_to(canary_server.url, rows_of(trained)):
            time.sleep(6)
        end_scrape, end_at = _quiet_snapshot(scrape, prometheus_url, port)
        end_prom = prom.snapshot(end_at)
    finally:
        target.unlink(missing_ok=True)
    d = rollout.current(s, MODEL)
    assert d is not None
    v_scrape = judge(d, start_scrape, end_scrape, POLICY)
    v_prom = judge(d, start_prom, end_prom, POLICY)
    assert v_scrape.value == v_prom.value == "rollback"
    for role, version in (("champion", d.champion_version), ("challenger", d.challenger_version)):
        a, b = window(start_scrape, end_scrape, role, version), window(start_prom, end_prom, role, version)
        assert a.requests > 0 and (a.requests, a.errors) == (b.requests, b.errors)
        assert histogram_quantile(0.99, a.latency_buckets) == pytest.approx(
            histogram_quantile(0.99, b.latency_buckets), rel=1e-6
        )
    # stated tolerance: identical counts, so p99 and PSI agree to float round-off
    assert v_scrape.measures["psi"] == pytest.approx(v_prom.measures["psi"], rel=1e-6)
    assert (
        psi(
            window(start_scrape, end_scrape, "champion", d.champion_version).score_buckets,
            window(start_scrape, end_scrape, "challenger", d.challenger_version).score_buckets,
        )
        > POLICY.max_psi
    )


def _quiet_snapshot(scrape: ScrapeSource, prometheus_url: str, port: str) -> tuple[object, datetime]:
    """A scrape snapshot with no traffic, once Prometheus has scraped the server after it (same state)."""
    snap = scrape.snapshot()
    after = time.time()
    deadline = time.monotonic() + 15
    promql = f'max(timestamp(riskloop_model_info{{model="{MODEL}", instance="127.0.0.1:{port}"}}))'
    while time.monotonic() < deadline:
        got = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5).json()
        result = got["data"]["result"]
        if result and float(result[0]["value"][1]) > after + 0.05:
            return snap, datetime.now(UTC)
        time.sleep(0.2)
    pytest.fail("Prometheus did not scrape the model server within 15 s")


def test_switching_the_desired_state_under_load_fails_no_request(
    fresh: Settings, canary_server: Server, trained: Trained, versions: tuple[str, str]
) -> None:
    s = fresh
    with traffic_to(canary_server.url, rows_of(trained), connections=4) as traffic:
        time.sleep(0.5)
        rollout.deploy_challenger(s, MODEL, version=versions[1], canary_percent=50)
        time.sleep(1.0)
        rollout.set_canary_percent(s, MODEL, 100)
        time.sleep(1.0)
        rollout.promote(s, MODEL, reason="drill")
        time.sleep(1.0)
        rollout.restore_previous(s, MODEL, reason="drill")
        time.sleep(1.0)
        rollout.deploy_challenger(s, MODEL, version=versions[1], mode="shadow")
        time.sleep(1.0)
        rollout.rollback(s, MODEL, reason="drill")
        time.sleep(1.0)
    seen = answers(traffic)
    assert len(seen) > 100
    assert [st for _, st, _ in seen if st != 200] == []
    assert {v for _, _, v in seen} == set(versions)  # both models answered along the way
    frame = pd.DataFrame(seen, columns=["card", "status", "version"])
    assert frame["version"].iloc[-20:].eq(versions[0]).all()


def test_delivery_pipeline_under_kfp_local_promotes_a_good_challenger(
    fresh: Settings, canary_server: Server, trained: Trained, versions: tuple[str, str]
) -> None:
    """The pipeline's components write the record the running server follows, and read its metrics."""
    from riskloop.orchestration.local import run_delivery
    from riskloop.registry.mlflow_registry import set_alias

    s = fresh
    set_alias(s.tracking_uri, MODEL, "challenger", versions[1])
    policy = {"min_requests": 40, "min_instances": 40, "p99_slack_seconds": 0.05}
    with traffic_to(canary_server.url, rows_of(trained)) as traffic:
        r = run_delivery(
            s,
            server_url=canary_server.url,
            challenger_alias="challenger",
            first_percent=20,
            second_percent=50,
            interval_seconds=INTERVAL_SECONDS,
            max_intervals=10,  # a loaded machine serves fewer requests per 2 s interval: more intervals, same verdict
            policy=policy,
        )
        assert r.succeeded, r.error
        time.sleep(1.5)
    d = rollout.current(s, MODEL)
    assert d is not None and d.champion_version == versions[1] and d.challenger_version is None
    assert all(st == 200 for _, st, _ in answers(traffic))
    assert {v for _, _, v in answers(traffic)} == set(versions)
    events = [e["event"] for e in audit_events(s, "canary_deployed", "canary_traffic_set", "promoted")]
    assert events[-3:] == ["canary_deployed", "canary_traffic_set", "promoted"]


def test_the_delivery_step_refuses_an_unapproved_challenger_before_deploying_it(
    fresh: Settings, versions: tuple[str, str]
) -> None:
    """The pipeline's one step fails closed: refused and audited before any traffic moves to the challenger."""
    from riskloop.errors import ApprovalRefused
    from riskloop.registry.mlflow_registry import set_alias
    from riskloop.steps.delivery import deliver

    s = fresh.model_copy(update={"audit": fresh.audit.model_copy(update={"require_approval": True})})
    set_alias(s.tracking_uri, MODEL, "challenger", versions[1])
    deployed = len(audit_events(s, "canary_deployed"))
    with pytest.raises(ApprovalRefused, match="progressive rollout"):
        deliver("synthetic-fraud", "challenger", [20, 50], INTERVAL_SECONDS, 2, {}, s, pipeline_run_id="test")
    d = rollout.current(s, MODEL)
    assert d is not None and d.challenger_version is None and d.champion_version == versions[0]
    assert len(audit_events(s, "canary_deployed")) == deployed
    assert audit_events(s, "approval_refused")[-1]["details"]["action"] == "progressive rollout"  # type: ignore[index]
