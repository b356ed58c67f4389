"""``riskloop run ...`` as a person reads it: a line per step, the step's own error, exit codes, no noise.

Fast on purpose: the runs here fail in their first step. The report of a whole successful training run is
checked on the local suite's trained run (tests/local/test_run_report.py).

No `from __future__ import annotations` here: KFP reads the component's real annotation objects.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from kfp import dsl

from riskloop.components import RUNTIME_IMAGE
from riskloop.orchestration.local import LocalRun, StepRun, run_pipeline
from riskloop.settings import Settings

RISKLOOP = [sys.executable, "-m", "riskloop.cli"]
ANSI = re.compile(r"\x1b\[")


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RISKLOOP_STATE_DIR": str(state), "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    return subprocess.run([*RISKLOOP, *args], capture_output=True, text=True, env=env, timeout=300)


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def refuse(attempts_file: str) -> str:
    """A step that counts its runs, then refuses its input as a riskloop step does."""
    from pathlib import Path

    from riskloop.errors import ConfigError

    counter = Path(attempts_file)
    counter.write_text(counter.read_text() + "x" if counter.exists() else "x")
    raise ConfigError("threshold=-1 is not a share", where="refuse", fix="pass a number in [0, 1]")


@dsl.pipeline(name="refusing")
def refusing(attempts_file: str) -> None:
    refuse(attempts_file=attempts_file).set_retry(num_retries=2).set_caching_options(False)


def test_a_step_that_refuses_its_input_fails_once_with_its_own_message_and_exit_2(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path / "state")
    attempts = tmp_path / "attempts"
    seen: list[StepRun] = []
    run = run_pipeline(s, refusing, {"attempts_file": str(attempts)}, name="refusing", on_step=seen.append)
    assert not run.succeeded and run.bad_input
    assert attempts.read_text() == "x", "a ConfigError was retried"
    failed = run.failed_step
    assert failed is not None and failed.name == "refuse" and seen == [failed]
    assert failed.error_type == "riskloop.errors.ConfigError"
    assert failed.error == "threshold=-1 is not a share\n  where: refuse\n  how to fix: pass a number in [0, 1]"
    assert run.error is not None and "threshold=-1 is not a share" in run.error and "RuntimeError" not in run.error
    # kfp.local's output is in the run's log, not on the terminal
    assert run.log is not None and "Executing task 'refuse'" in run.log.read_text()
    assert not ANSI.search(run.log.read_text())
    from riskloop.cli.pipelines import EXIT_BAD_INPUT, _exit_for

    with pytest.raises(typer.Exit) as exited:
        _exit_for(run)
    assert exited.value.exit_code == EXIT_BAD_INPUT == 2
    assert not LocalRun("x", False, 0.0, steps=(StepRun("s", "failed", error_type="builtins.ValueError"),)).bad_input


def test_run_training_shows_each_step_and_the_failing_steps_error_without_kfp_noise(tmp_path: Path) -> None:
    state = tmp_path / "state"
    generated = cli(
        "data", "generate", "--days", "2", "--cards", "20", "--merchants", "10", "--start", "2026-01-01", state=state
    )
    assert generated.returncode == 0, generated.stderr
    # a window before the landed days: the ingest step finds nothing and says so itself
    r = cli("run", "training", "--end", "2025-12-01", "--days", "2", state=state)
    shown = r.stdout + r.stderr
    assert r.returncode == 1, shown
    assert re.search(
        r"FAIL  ingest +\d+\.\ds  no landing data for synthetic-fraud between 2025-11-30 and "
        r"2025-12-01",
        r.stderr,
    ), r.stderr
    assert "failed step" in r.stdout and "ingest" in r.stdout
    assert "Pipeline 'riskloop-training' finished with status FAILURE" not in shown  # kfp's generic error
    assert "Executing task" not in shown and "Traceback" not in shown  # kfp.local's log stays in the log file
    assert not ANSI.search(shown), "colour codes on a stream that is not a terminal"
    log = Path(re.search(r"log\s+│?\s*(\S+\.log)", r.stdout)[1])  # type: ignore[index]
    assert log.parent == state.resolve() / "logs" and "Executing task 'ingest'" in log.read_text()
    # with --verbose kfp.local's log is on the terminal too
    verbose = cli("run", "training", "--end", "2025-12-01", "--days", "2", "--verbose", state=state)
    assert verbose.returncode == 1 and "Executing task 'ingest'" in verbose.stdout


def test_run_help_shows_its_placeholders(tmp_path: Path) -> None:
    r = cli("run", "training", "--help", state=tmp_path)
    assert r.returncode == 0 and "YYYY-MM-DD" in r.stdout and not ANSI.search(r.stdout)
    r = cli("card", "--help", state=tmp_path)
    assert "<model>-v<version>" in r.stdout
