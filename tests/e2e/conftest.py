"""The kind e2e suite: opt-in (`make test-e2e`), never collected by `make test`.

Run without Docker/kind/helm/kubectl it fails, saying what is missing, when it was asked
for (`-m e2e`, as make test-e2e does) or when CI=true; a bare `pytest` elsewhere skips it.
Written for a machine with Docker; it has not been run on the machine it was written on.

E2E_KEEP=1 keeps the kind cluster afterwards; E2E_REUSE=1 uses an already deployed one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("docker", "kind", "helm", "kubectl")
# `make deploy CLUSTER=kind` from nothing: cluster, prerequisites, image build and load, chart, landing data. The
# fixture sets this up once per session; each test's own timeout (tests/e2e/test_kind.py) leaves it out
# (func_only), or the first test would be cut by pytest's default --timeout=600 while the cluster is still coming up.
DEPLOY_TIMEOUT_SECONDS = 3600


def _missing() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if "docker" not in missing and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode:
        missing.append("a running Docker daemon")
    return missing


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """riskloop deployed to the kind cluster "riskloop" by `make deploy CLUSTER=kind`."""
    asked = "e2e" in (request.config.getoption("-m") or "") or os.environ.get("CI", "").lower() == "true"
    missing = _missing()
    if missing:
        why = f"the e2e suite needs {', '.join(missing)} (see README, 'Run on a cluster')"
        if asked:
            pytest.fail(why, pytrace=False)
        pytest.skip(f"opt-in (make test-e2e): {why}")
    env = {**os.environ, "CLUSTER": "kind"}
    if os.environ.get("E2E_REUSE") != "1":
        subprocess.run(["scripts/deploy.sh", "up"], cwd=REPO, env=env, check=True, timeout=DEPLOY_TIMEOUT_SECONDS)
    try:
        yield
    finally:
        if os.environ.get("E2E_KEEP") != "1":
            subprocess.run(["scripts/deploy.sh", "down"], cwd=REPO, env=env, timeout=600)


def kubectl(*args: str, timeout: int = 120) -> str:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=True, timeout=timeout).stdout


@contextmanager
def port_forward(namespace: str, service: str, port: int) -> Iterator[str]:
    """http://127.0.0.1:<free port> forwarded to a service port, for the duration of the block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    proc = subprocess.Popen(
        ["kubectl", "port-forward", "-n", namespace, f"svc/{service}", f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", local)) == 0:
                    break
            time.sleep(0.5)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
