"""Shared trained state for the kfp.local tests: built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from riskloop.data.spec import load_spec
from riskloop.data.synthetic import GeneratorParams, write_partitions
from riskloop.orchestration.local import LocalRun, run_training, training_params
from riskloop.settings import Settings

SMALL = GeneratorParams(days=16, n_cards=800, n_merchants=150, seed=3)
FAST_TRAIN = {"n_estimators": 60, "early_stopping_rounds": 10}


@pytest.fixture(scope="session")
def local_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("riskloop-local")
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKLOOP_STATE_DIR", str(root))
    s = Settings()
    s.ensure_dirs()
    write_partitions(SMALL, load_spec("synthetic-fraud").source_path(s.root))
    yield s
    mp.undo()


def params(end_day: int, days: int, **kw: object) -> dict[str, object]:
    kw.setdefault("train_params", FAST_TRAIN)
    return training_params(date(2026, 1, end_day), days, maturity_days=3.0, validation_days=2.0, test_days=3.0, **kw)


@pytest.fixture(scope="session")
def first_run(local_state: Settings) -> LocalRun:
    """The first training run on the small data: it becomes champion."""
    return run_training(local_state, params(16, 16))


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every pipeline compiled once (pipeline name -> IR YAML): the IR test and the schedules contract share it."""
    from riskloop.orchestration.compile import compile_all

    return {p.stem: p for p in compile_all(tmp_path_factory.mktemp("compiled"))}


def audit_events(s: Settings) -> list[str]:
    import json

    path: Path = s.audit_path
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []
