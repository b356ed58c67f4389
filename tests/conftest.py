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


# With pytest-xdist (`make test` runs `-n 2`), work goes to the workers a scope at a time: one scope per test
# module, except the modules that share one expensive session state or one directory of the checkout, which
# form one scope each, so that state is built once and its tests run in order on one worker (a champion, then
# a gated candidate). (pytest-xdist's own loadgroup marks do not reach its scheduler under pytest 9: the
# node-id suffix they rely on is lost, measured with xdist 3.8.0, so the grouping is by path, here.)
_SHARED_SCOPES = (
    ("tests/local/", "kfp-local-state"),  # the small data set and the runs on it (first_run, ...)
    ("tests/integration/test_cli_run.py", "kfp-local-state"),  # reuses first_run
    ("tests/integration/serving/", "serving-trained"),  # the trained champion and its server
    ("tests/tools/test_deploy_script.py", "deploy-dry-run"),  # both render into build/deploy/
    ("tests/tools/test_install_plan.py", "deploy-dry-run"),
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class SharedStateScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((scope for prefix, scope in _SHARED_SCOPES if path.startswith(prefix)), path)

    return SharedStateScheduling(config, log)  # type: ignore[arg-type]


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
