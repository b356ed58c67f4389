"""The test services answer for real, and a missing one fails under CI."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.services import service_url

WAIT_SECONDS = 30.0


def wait_for(check: Callable[[], bool], what: str, timeout_seconds: float = WAIT_SECONDS) -> None:
    """Polls ``check`` until it is true; fails the test after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout_seconds:.0f} s")
        time.sleep(0.25)


def prometheus_query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5.0)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def sample_values(prometheus_url: str, promql: str) -> list[str]:
    return [str(series["value"][1]) for series in prometheus_query(prometheus_url, promql)]


def test_redis_set_get(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    key = f"riskloop:test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, "42", ex=60)
        assert client.get(key) == b"42"
    finally:
        client.delete(key)
        client.close()


def test_postgres_query(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == ("riskloop", "riskloop")
        conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, score double precision)")
        conn.execute("INSERT INTO t VALUES (1, 0.25), (2, 0.75)")
        total = conn.execute("SELECT sum(score) FROM t").fetchone()
        assert total == (1.0,)


def test_prometheus_sees_pushgateway_up(prometheus_url: str, pushgateway_url: str) -> None:
    wait_for(
        lambda: sample_values(prometheus_url, 'up{job="prometheus"}') == ["1"],
        "up{job=prometheus} == 1",
    )
    wait_for(
        lambda: sample_values(prometheus_url, 'up{job="pushgateway"}') == ["1"],
        "up{job=pushgateway} == 1",
    )


def test_pushed_metric_becomes_queryable(prometheus_url: str, pushgateway_url: str) -> None:
    check_id = uuid.uuid4().hex
    group = f"{pushgateway_url}/metrics/job/riskloop_services_check/check_id/{check_id}"
    body = "# TYPE riskloop_services_check_value gauge\nriskloop_services_check_value 42\n"
    response = httpx.put(group, content=body, timeout=5.0)
    assert response.status_code == 200, response.text
    try:
        wait_for(
            lambda: sample_values(prometheus_url, f'riskloop_services_check_value{{check_id="{check_id}"}}') == ["42"],
            "the pushed metric in Prometheus",
        )
    finally:
        httpx.delete(group, timeout=5.0)


def test_file_sd_target_is_scraped(prometheus_url: str, pushgateway_url: str, prometheus_targets_dir: Path) -> None:
    check_id = uuid.uuid4().hex
    address = pushgateway_url.removeprefix("http://")
    targets = prometheus_targets_dir / f"check-{check_id}.json"
    targets.write_text(json.dumps([{"targets": [address], "labels": {"check_id": check_id}}]))
    try:
        wait_for(
            lambda: sample_values(prometheus_url, f'up{{job="riskloop", check_id="{check_id}"}}') == ["1"],
            "the file_sd target scraped",
        )
    finally:
        targets.unlink()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("RISKLOOP_TEST_BOGUS_URL", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"scripts/services\.sh start"):
        service_url("RISKLOOP_TEST_BOGUS_URL", "bogus", env_file=tmp_path / "absent")


def test_unreachable_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("RISKLOOP_TEST_BOGUS_URL", f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(pytest.fail.Exception, match="nothing answers"):
        service_url("RISKLOOP_TEST_BOGUS_URL", "bogus", env_file=tmp_path / "absent")


def test_missing_service_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("RISKLOOP_TEST_BOGUS_URL", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"scripts/services\.sh start"):
        service_url("RISKLOOP_TEST_BOGUS_URL", "bogus", env_file=tmp_path / "absent")


def test_url_read_from_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("RISKLOOP_TEST_BOGUS_URL", raising=False)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        env_file = tmp_path / "env"
        env_file.write_text(f"OTHER=x\nRISKLOOP_TEST_BOGUS_URL={url}\n")
        assert service_url("RISKLOOP_TEST_BOGUS_URL", "bogus", env_file=env_file) == url
