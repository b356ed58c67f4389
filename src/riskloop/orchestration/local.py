"""Run the compiled-from-source pipelines on this machine with kfp.local.

``SubprocessRunner(use_venv=False)`` runs each component function in a
subprocess of this very environment, so the steps are the cluster's steps.
State goes under the settings' state dir (KFP's pipeline root included).

A run is reported as data (:class:`LocalRun`, one :class:`StepRun` per task): kfp.local's own log
records give each step's start, end and state (read by a logging filter), its task dispatch gives the
outputs and the step's own error. Everything kfp.local and the step processes print goes to a log file
under ``<state>/logs/`` (and to the terminal only when asked). kfp.local retries a failed task per its
retry policy; a step that failed on a ConfigError is not run again (bad input fails the same way twice).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from riskloop.schedule import training_window
from riskloop.settings import Settings, env_var


@dataclass(frozen=True)
class StepRun:
    """One task of a local run, as kfp.local ran it."""

    name: str  # the KFP task name, e.g. "train", "model-card"
    state: str  # succeeded | failed | skipped
    seconds: float = 0.0
    attempts: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)  # parameters by name, artifacts as dsl.Artifact
    error: str | None = None  # the step's own exception message, e.g. "end_date 2026-01-02 is before ..."
    error_type: str | None = None  # its qualified class name, e.g. "riskloop.errors.ConfigError"

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    @property
    def bad_input(self) -> bool:
        """The step refused its input or configuration (a ConfigError): a retry cannot change that."""
        return _is_config_error(self.error_type)


@dataclass(frozen=True)
class LocalRun:
    pipeline: str
    succeeded: bool
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    steps: tuple[StepRun, ...] = ()
    log: Path | None = None  # every task's own output and kfp.local's log lines

    @property
    def failed_step(self) -> StepRun | None:
        """The first step that failed (the exit handler runs after it and is not the cause)."""
        return next((st for st in self.steps if st.state == "failed"), None)

    @property
    def bad_input(self) -> bool:
        failed = self.failed_step
        return failed is not None and failed.bad_input

    def step(self, name: str) -> StepRun | None:
        """The last run of the task ``name`` (None when it never ran)."""
        return next((st for st in reversed(self.steps) if st.name == name), None)


StepCallback = Callable[[StepRun], None]


def _is_config_error(qualified: str | None) -> bool:
    from riskloop import errors

    module, _, name = (qualified or "").rpartition(".")
    cls = getattr(errors, name, None) if module == errors.__name__ else None
    return isinstance(cls, type) and issubclass(cls, errors.ConfigError)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"^Executing task '(?P<name>[^']+)'")
_FINISHED = re.compile(r"^Task '(?P<name>[^']+)' finished with status (?P<status>SUCCESS|FAILURE)")
_SKIPPED = re.compile(r"^Skipping (?:conditional )?task (?P<name>\S+?):? ")
# the last lines of a step process that raised: "<module>.<Class>: <message>" after a traceback
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*): (?P<message>.*)$")


class _Tee(io.TextIOBase):
    """Where a run's output goes: the log file always (plain text), the terminal with ``verbose``.

    kfp.local prints each step process's output through ``print`` and logs through a handler it
    points at ``sys.stdout``; both land here while the run has ``sys.stdout``.
    """

    def __init__(self, path: Path, terminal: TextIO | None) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._terminal = terminal
        self._color = terminal is not None and terminal.isatty() and not os.environ.get("NO_COLOR")
        self.task_text: list[str] = []  # what the running step printed, for its error

    def write(self, text: str) -> int:
        plain = _ANSI.sub("", text)
        self._file.write(plain)
        self.task_text.append(plain)
        if self._terminal is not None:
            self._terminal.write(text if self._color else plain)
        return len(text)

    def flush(self) -> None:
        self._file.flush()
        if self._terminal is not None:
            self._terminal.flush()

    def close(self) -> None:
        super().close()  # flushes both first
        self._file.close()


class _StepLog(logging.Filter):
    """Reads kfp.local's task records (``Executing task 'x'``, ``Task 'x' finished with status ...``,
    ``Skipping task x``) into :class:`StepRun` s, and writes every record to the run's log instead of
    the terminal.

    A filter on the root logger, not a handler: kfp.local replaces the root logger's handlers around each
    of its log calls (``logging_utils.local_logger_context``) but leaves its filters.
    """

    def __init__(self, tee: _Tee, on_step: StepCallback | None) -> None:
        super().__init__()
        self._tee = tee
        self._on_step = on_step
        self._started: dict[str, tuple[float, int]] = {}
        self.steps: list[StepRun] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", record.getMessage())
        self._tee.write(f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname} {message}\n")
        if m := _EXECUTING.match(message):
            attempts = self._started.get(m["name"], (0.0, 0))[1] + 1
            self._started[m["name"]] = (time.perf_counter(), attempts)
        elif m := _FINISHED.match(message):
            started, attempts = self._started.get(m["name"], (time.perf_counter(), 1))
            # a retried step finishes more than once: its last attempt stands
            self.steps = [st for st in self.steps if st.name != m["name"] or st.state == "skipped"]
            self.steps.append(
                StepRun(
                    m["name"],
                    "succeeded" if m["status"] == "SUCCESS" else "failed",
                    time.perf_counter() - started,
                    attempts,
                )
            )
        elif m := _SKIPPED.match(message):
            self._done(StepRun(m["name"], "skipped"))
        return False  # kfp.local's handler would print it to the terminal: the log has it

    def complete(self, name: str, outputs: dict[str, Any], error: str | None, error_type: str | None) -> None:
        """The task ``name`` just returned: add what its log line cannot say (outputs, the step's own error)."""
        for i in range(len(self.steps) - 1, -1, -1):
            if self.steps[i].name == name and self.steps[i].state != "skipped":
                self.steps[i] = replace(self.steps[i], outputs=outputs, error=error, error_type=error_type)
                self._done(self.steps[i])
                return

    def _done(self, step: StepRun) -> None:
        if step.state == "skipped":
            self.steps.append(step)
        if self._on_step is not None:
            self._on_step(step)


def _step_error(text: str) -> tuple[str | None, str | None]:
    """The exception a step process ended with: its qualified class name and its own message.

    kfp.local prints the process's lines indented by 4 spaces, its own lines not; the process prints its
    traceback last, and the message is the exception line and every line after it (a RiskloopError adds
    "where:" and "how to fix:").
    """
    lines = [line[4:] for line in text.splitlines() if line.startswith("    ")]
    tracebacks = [i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"]
    if not tracebacks:
        return None, None
    tail = lines[tracebacks[-1] + 1 :]
    for i, line in enumerate(tail):
        if line and not line.startswith(" ") and (m := _EXCEPTION.match(line)):
            rest = [r.rstrip() for r in tail[i + 1 :] if r.strip()]
            return m["type"], "\n".join([m["message"], *rest])
    return None, None


def _watch_tasks(steps: _StepLog, tee: _Tee) -> Callable[[], None]:
    """Wrap kfp.local's task dispatch for one run: keep each task's outputs and its own error, and do not
    run a step again that failed on bad input (kfp.local would retry it per its retry policy; a
    ConfigError fails the same way every time). Returns the function that undoes the wrap."""
    from kfp.local import executor_input_utils, status, task_dispatcher

    original = task_dispatcher.run_single_task_implementation
    refused: dict[int, tuple[Any, Any, str]] = {}

    def run(*args: Any, **kwargs: Any) -> Any:
        arguments = kwargs.get("arguments")
        key = id(arguments)
        if key in refused and refused[key][0] is arguments:
            tee.write(f"not retried: task {refused[key][2]} failed on its input (a ConfigError)\n")
            return {}, refused[key][1]
        tee.task_text = []
        outputs, task_status = original(*args, **kwargs)
        name = executor_input_utils.get_local_task_resource_name(kwargs["component_name"])
        error_type, error = (
            _step_error("".join(tee.task_text)) if task_status == status.Status.FAILURE else (None, None)
        )
        steps.complete(name, dict(outputs or {}), error, error_type)
        if _is_config_error(error_type):
            refused[key] = (arguments, task_status, name)
        return outputs, task_status

    task_dispatcher.run_single_task_implementation = run

    def undo() -> None:
        task_dispatcher.run_single_task_implementation = original

    return undo


def _fill_time_placeholders() -> None:
    """Teach kfp.local KFP's two run-time placeholders, as the backend fills them for a run started now.

    kfp 2.17.3's local runner resolves the job name, ids and root, but fails on
    ``{{$.pipeline_job_schedule_time_utc}}`` and ``..._create_time_utc`` (an IndexError in
    ``placeholder_utils``). The scheduled pipelines read the schedule time in their first step
    (``riskloop.components.schedule.run_day``), so the local runner fills both with the current UTC time.
    """
    from kfp import dsl
    from kfp.local import placeholder_utils

    original = placeholder_utils.resolve_individual_placeholder
    if getattr(original, "_riskloop_times", False):
        return

    def resolve(element: str, *args: Any, **kwargs: Any) -> str:
        if "{{$.pipeline_job_" in element and "_time_utc}}" in element:
            now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            element = element.replace(dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER, now).replace(
                dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER, now
            )
        return str(original(element, *args, **kwargs))

    resolve._riskloop_times = True  # type: ignore[attr-defined]
    placeholder_utils.resolve_individual_placeholder = resolve


def _init(s: Settings) -> None:
    from kfp import local

    _fill_time_placeholders()
    s.ensure_dirs()
    os.environ[env_var("state_dir")] = str(s.root)  # steps are subprocesses: hand them the same state
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(s.pipeline_root), raise_on_error=True)


def training_params(end: date, days: int, *, spec: str = "synthetic-fraud", **overrides: Any) -> dict[str, Any]:
    """Pipeline arguments for a window of ``days`` ending on ``end`` (cutoff = the next midnight)."""
    return {"spec": spec, **training_window(end, days), **overrides}


def _run(
    s: Settings, name: str, call: Callable[[], Any], *, on_step: StepCallback | None = None, verbose: bool = False
) -> tuple[LocalRun, Any]:
    """Call a pipeline under kfp.local; a failed step is reported in the LocalRun, not raised.

    Each step's output and kfp.local's log lines go to ``<state>/logs/<pipeline>-<time>.log`` (and to the
    terminal with ``verbose``); ``on_step`` hears of each step as it finishes. Returns the run and the
    pipeline's task (None when it failed).
    """
    log_path = s.root / "logs" / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tee = _Tee(log_path, sys.stdout if verbose else None)
    steps = _StepLog(tee, on_step)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # kfp.local logs skipped tasks and retries at INFO, outside its own logger setup
    root.addFilter(steps)
    undo = _watch_tasks(steps, tee)
    t0 = time.perf_counter()

    def to_log(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        tee.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with contextlib.redirect_stdout(tee), warnings.catch_warnings():
            # kfp.local warns about every cluster-only setting (resources, base image): the log keeps them
            warnings.showwarning = to_log
            task = call()
    except RuntimeError as exc:  # kfp.local: a task failed (exit handlers still ran)
        failed = next((st for st in steps.steps if st.state == "failed"), None)
        error = (
            str(exc)
            if failed is None or failed.error is None
            else f"step {failed.name} failed: {(failed.error_type or '').rpartition('.')[2]}: {failed.error}"
        )
        return LocalRun(
            name, False, time.perf_counter() - t0, error=_ANSI.sub("", error), steps=tuple(steps.steps), log=log_path
        ), None
    finally:
        undo()
        root.removeFilter(steps)
        root.setLevel(level)
        tee.close()
    return LocalRun(name, True, time.perf_counter() - t0, steps=tuple(steps.steps), log=log_path), task


def run_pipeline(
    s: Settings,
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    name: str,
    on_step: StepCallback | None = None,
    verbose: bool = False,
) -> LocalRun:
    """Run any KFP pipeline function under kfp.local with riskloop's state, step reports and log file."""
    _init(s)
    return _run(s, name, lambda: pipeline(**arguments), on_step=on_step, verbose=verbose)[0]


def run_training(
    s: Settings, params: dict[str, Any], *, on_step: StepCallback | None = None, verbose: bool = False
) -> LocalRun:
    """Run the training pipeline under kfp.local; a failed step is reported, not raised."""
    _init(s)
    from riskloop.pipelines.training import training_pipeline

    return _run(s, "training", lambda: training_pipeline(**params), on_step=on_step, verbose=verbose)[0]


def run_batch_scoring(
    s: Settings,
    day: date,
    *,
    spec: str = "synthetic-fraud",
    model_alias: str = "champion",
    on_step: StepCallback | None = None,
    verbose: bool = False,
) -> LocalRun:
    """Score one day with the model an alias names (kfp.local); outputs holds the scores' path."""
    _init(s)
    from riskloop.pipelines.batch_scoring import batch_scoring_pipeline

    run, task = _run(
        s,
        "batch_scoring",
        lambda: batch_scoring_pipeline(
            spec=spec, previous_day=(day - timedelta(days=1)).isoformat(), day=day.isoformat(), model_alias=model_alias
        ),
        on_step=on_step,
        verbose=verbose,
    )
    if task is None:
        return run
    return replace(run, outputs={"scores": task.output.path, "rows": task.output.metadata.get("rows")})


def run_delivery(
    s: Settings,
    *,
    server_url: str,
    spec: str = "synthetic-fraud",
    on_step: StepCallback | None = None,
    verbose: bool = False,
    **params: Any,
) -> LocalRun:
    """Run the delivery pipeline under kfp.local against the model server at ``server_url``.

    Its steps write the deployment record that server follows and read its
    ``/metrics`` (``RISKLOOP_DELIVERY__SERVER_URL`` is handed to the step processes).
    """
    _init(s)
    os.environ[env_var("delivery.server_url")] = server_url
    from riskloop.pipelines.delivery import delivery_pipeline

    return _run(s, "delivery", lambda: delivery_pipeline(spec=spec, **params), on_step=on_step, verbose=verbose)[0]


def run_features(
    s: Settings,
    day: date,
    *,
    spec: str = "synthetic-fraud",
    on_step: StepCallback | None = None,
    verbose: bool = False,
    **params: Any,
) -> LocalRun:
    """Run the feature pipeline (ingest, validate, build, materialize up to ``day``'s end) under kfp.local."""
    _init(s)
    from riskloop.pipelines.features import features_pipeline

    return _run(
        s,
        "features",
        lambda: features_pipeline(spec=spec, day=day.isoformat(), **params),
        on_step=on_step,
        verbose=verbose,
    )[0]


def run_monitoring(
    s: Settings,
    day: date,
    *,
    spec: str = "synthetic-fraud",
    on_step: StepCallback | None = None,
    verbose: bool = False,
    **params: Any,
) -> LocalRun:
    """Run the monitoring pipeline (and its retrain branch, when taken) under kfp.local for ``day``."""
    _init(s)
    from riskloop.pipelines.monitoring import monitoring_pipeline

    return _run(
        s,
        "monitoring",
        lambda: monitoring_pipeline(spec=spec, day=day.isoformat(), **params),
        on_step=on_step,
        verbose=verbose,
    )[0]
