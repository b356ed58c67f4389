"""One holder at a time on one machine (file lock); the PostgreSQL flavour is in tests/integration."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from riskloop.locks import LockTimeout, exclusive, lock_key
from riskloop.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RISKLOOP_STATE_DIR", str(tmp_path))
    return Settings()


def test_a_held_lock_makes_the_next_holder_wait_then_fail_with_a_fix(settings: Settings) -> None:
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with exclusive(settings, "monitor-state:fraud-detector"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        with (
            pytest.raises(LockTimeout, match="held the lock 'monitor-state:fraud-detector'") as err,
            exclusive(settings, "monitor-state:fraud-detector", timeout_seconds=0.3),
        ):
            pytest.fail("two holders at once")
        assert err.value.fix and "wait for it" in err.value.fix
        with exclusive(settings, "monitor-state:other-model", timeout_seconds=0.3):
            pass  # another name is another lock
    finally:
        release.set()
        t.join(30)
    with exclusive(settings, "monitor-state:fraud-detector", timeout_seconds=5):
        pass  # released with the holder's block


def test_lock_keys_are_stable_signed_64_bit_and_distinct() -> None:
    assert lock_key("a") == lock_key("a") != lock_key("b")
    assert all(-(2**63) <= lock_key(n) < 2**63 for n in ("a", "b", "monitor-state:fraud-detector"))
