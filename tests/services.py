"""Where the real test services are, as pytest fixtures.

``scripts/services.sh start`` runs Redis, PostgreSQL, Prometheus, a
Pushgateway and an S3-compatible object store on loopback and writes their addresses to ``.riskloop/services/env``.
A fixture takes an address from the environment variable first, then from that
file, and checks that its port answers. A service that is missing or silent
skips the test on a developer's machine and fails it under ``CI=true``: a test
that needs a service never passes without it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = REPO_ROOT / ".riskloop" / "services" / "env"
CONNECT_TIMEOUT_SECONDS = 1.0

_DEFAULT_PORTS = {"redis": 6379, "postgresql": 5432, "postgres": 5432, "http": 80, "https": 443}


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _read_env_file(env_file: Path) -> dict[str, str]:
    """``KEY=value`` lines of the file written by ``scripts/services.sh start``."""
    if not env_file.is_file():
        return {}
    values: dict[str, str] = {}
    for line in env_file.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value
    return values


def _setting(env_var: str, env_file: Path) -> str | None:
    return os.environ.get(env_var) or _read_env_file(env_file).get(env_var) or None


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def service_url(env_var: str, name: str, *, env_file: Path | None = None) -> str:
    """The URL of service ``name`` from ``env_var`` (or the services env file).

    The URL's host and port must accept a TCP connection within one second.
    Otherwise the test fails when ``CI`` is ``"true"`` and is skipped elsewhere,
    with a message that says how to start the services.
    """
    source = ENV_FILE if env_file is None else env_file
    how = "run scripts/services.sh start"
    url = _setting(env_var, source)
    if url is None:
        _unavailable(f"{name} is not running ({env_var} is unset and not in {source}); {how}")
    parts = urlsplit(url)
    host = parts.hostname
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    if host is None or port is None:
        _unavailable(f"{name} is not running ({env_var}={url!r} has no host:port); {how}")
    if not _port_answers(host, port):
        _unavailable(f"{name} is not running (nothing answers at {host}:{port}, {env_var}); {how}")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``redis://127.0.0.1:6399/0`` of the test Redis."""
    return service_url("RISKLOOP_TEST_REDIS_URL", "redis")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """``postgresql://riskloop@127.0.0.1:55432/riskloop``: trust auth, role may create databases."""
    return service_url("RISKLOOP_TEST_POSTGRES_DSN", "postgres")


@pytest.fixture(scope="session")
def prometheus_url() -> str:
    """Base URL of the test Prometheus (1 s scrape and evaluation interval, lifecycle API on)."""
    return service_url("RISKLOOP_TEST_PROMETHEUS_URL", "prometheus")


@pytest.fixture(scope="session")
def pushgateway_url() -> str:
    """Base URL of the test Pushgateway (admin API on, no persistence)."""
    return service_url("RISKLOOP_TEST_PUSHGATEWAY_URL", "pushgateway")


@pytest.fixture(scope="session")
def prometheus_targets_dir(prometheus_url: str) -> Path:
    """The ``file_sd`` directory of the test Prometheus's ``riskloop`` job.

    Writing ``<name>.json`` there (``[{"targets": ["127.0.0.1:PORT"], "labels": {...}}]``)
    adds scrape targets within about a second; remove the file when done.
    """
    env_var = "RISKLOOP_TEST_PROMETHEUS_TARGETS_DIR"
    value = _setting(env_var, ENV_FILE)
    if value is None or not Path(value).is_dir():
        _unavailable(f"prometheus targets dir is missing ({env_var}={value!r}); run scripts/services.sh start")
    return Path(value)


@dataclass(frozen=True)
class S3Store:
    """The test object store: an S3 endpoint on loopback, a bucket that exists, and its credentials."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The variables riskloop (pyarrow), MLflow and boto3 read, as the chart's Secret sets them."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }


@pytest.fixture(scope="session")
def s3_store() -> S3Store:
    """The S3-compatible store of ``scripts/services.sh`` (moto's server), with its test bucket."""
    endpoint = service_url("RISKLOOP_TEST_S3_ENDPOINT", "s3")
    values = {name: _setting(f"RISKLOOP_TEST_S3_{name}", ENV_FILE) for name in ("BUCKET", "ACCESS_KEY", "SECRET_KEY")}
    missing = [name for name, value in values.items() if not value]
    if missing:
        _unavailable(f"s3 settings missing from {ENV_FILE}: {missing}; run scripts/services.sh start")
    return S3Store(endpoint, str(values["BUCKET"]), str(values["ACCESS_KEY"]), str(values["SECRET_KEY"]))
