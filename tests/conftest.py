"""Root test configuration: layer markers by directory, service fixtures, isolated state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.services import (  # noqa: F401  (fixtures re-exported to every test)
    postgres_dsn,
    prometheus_targets_dir,
    prometheus_url,
    pushgateway_url,
    redis_url,
    s3_store,
)

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

_LAYERS = ("unit", "local", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in _LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture()
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state dir, also exported as RISKLOOP_STATE_DIR for CLI calls."""
    d = tmp_path / "state"
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(d))
    return d
