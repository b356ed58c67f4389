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

TESTS_DIR = Path(__file__).resolve().parent
# tests/<layer>/...: the folder says what a test may touch (markers in pyproject.toml); tests/cluster marks itself
_LAYERS = ("unit", "tools", "local", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # the folder right under tests/, not any path component: the checkout itself has a tools/ folder
        parts = Path(str(item.fspath)).resolve().relative_to(TESTS_DIR).parts
        if len(parts) > 1 and parts[0] in _LAYERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture()
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state dir, also exported as RISKLOOP_STATE_DIR for CLI calls."""
    d = tmp_path / "state"
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(d))
    return d
