"""The cluster's flavour of the lock: a PostgreSQL advisory lock, held per connection, freed when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from riskloop.locks import LockTimeout, exclusive
from riskloop.settings import Settings

NAME = "monitor-state:fraud-detector"


@pytest.fixture()
def settings(postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RISKLOOP_AUDIT__BACKEND", "postgres")
    monkeypatch.setenv("RISKLOOP_AUDIT__POSTGRES_DSN", postgres_dsn)
    return Settings()


def test_a_process_holding_the_lock_blocks_others_until_it_dies(settings: Settings, postgres_dsn: str) -> None:
    # another pod: a process that takes the lock and never lets go
    script = (
        f"import time\nfrom riskloop.locks import exclusive\nfrom riskloop.settings import Settings\n"
        f"with exclusive(Settings(), {NAME!r}):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    pod = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert pod.stdout is not None and pod.stdout.readline().strip() == "held"
        with (
            pytest.raises(LockTimeout, match=r"more than 0\.5 s") as err,
            exclusive(settings, NAME, timeout_seconds=0.5),
        ):
            pytest.fail("two holders at once")
        assert "pg_locks" in str(err.value.fix)
    finally:
        pod.kill()
        pod.wait(30)
    # its connection is gone with it, and the lock with the connection
    deadline = time.monotonic() + 30
    with exclusive(settings, NAME, timeout_seconds=30):
        assert time.monotonic() < deadline


def test_the_lock_is_released_after_the_block(settings: Settings) -> None:
    with exclusive(settings, NAME, timeout_seconds=5):
        pass
    with exclusive(settings, NAME, timeout_seconds=0.5):
        pass
