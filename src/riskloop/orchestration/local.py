"""Run the compiled-from-source pipelines on this machine with kfp.local.

``SubprocessRunner(use_venv=False)`` runs each component function in a
subprocess of this very environment, so the steps are the cluster's steps.
State goes under the settings' state dir (KFP's pipeline root included).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from riskloop.schedule import training_window
from riskloop.settings import Settings


@dataclass(frozen=True)
class LocalRun:
    pipeline: str
    succeeded: bool
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


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
                dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER, now)
        return str(original(element, *args, **kwargs))

    resolve._riskloop_times = True  # type: ignore[attr-defined]
    placeholder_utils.resolve_individual_placeholder = resolve


def _init(s: Settings) -> None:
    from kfp import local

    _fill_time_placeholders()
    s.ensure_dirs()
    os.environ["RISKLOOP_STATE_DIR"] = str(s.root)  # steps are subprocesses: hand them the same state
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(s.pipeline_root),
               raise_on_error=True)


def training_params(end: date, days: int, *, spec: str = "synthetic-fraud", **overrides: Any) -> dict[str, Any]:
    """Pipeline arguments for a window of ``days`` ending on ``end`` (cutoff = the next midnight)."""
    return {"spec": spec, **training_window(end, days), **overrides}


def _run(name: str, call: Callable[[], Any]) -> tuple[LocalRun, Any]:
    """Call a pipeline under kfp.local; a failed step is reported in the LocalRun, not raised.

    Returns the run and the pipeline's task (None when it failed).
    """
    t0 = time.perf_counter()
    try:
        task = call()
    except RuntimeError as exc:  # kfp.local: a task failed (exit handlers still ran)
        return LocalRun(name, False, time.perf_counter() - t0, error=str(exc)), None
    return LocalRun(name, True, time.perf_counter() - t0), task


def run_training(s: Settings, params: dict[str, Any]) -> LocalRun:
    """Run the training pipeline under kfp.local; a failed step is reported, not raised."""
    _init(s)
    from riskloop.pipelines.training import training_pipeline

    return _run("training", lambda: training_pipeline(**params))[0]


def run_batch_scoring(s: Settings, day: date, *, spec: str = "synthetic-fraud",
                      model_alias: str = "champion") -> LocalRun:
    """Score one day with the model an alias names (kfp.local); outputs holds the scores' path."""
    _init(s)
    from riskloop.pipelines.batch_scoring import batch_scoring_pipeline

    run, task = _run("batch_scoring", lambda: batch_scoring_pipeline(
        spec=spec, previous_day=(day - timedelta(days=1)).isoformat(), day=day.isoformat(), model_alias=model_alias))
    if task is None:
        return run
    return replace(run, outputs={"scores": task.output.path, "rows": task.output.metadata.get("rows")})


def run_delivery(s: Settings, *, server_url: str, spec: str = "synthetic-fraud", **params: Any) -> LocalRun:
    """Run the delivery pipeline under kfp.local against the model server at ``server_url``.

    Its steps write the deployment record that server follows and read its
    ``/metrics`` (``RISKLOOP_DELIVERY__SERVER_URL`` is handed to the step processes).
    """
    _init(s)
    os.environ["RISKLOOP_DELIVERY__SERVER_URL"] = server_url
    from riskloop.pipelines.delivery import delivery_pipeline

    return _run("delivery", lambda: delivery_pipeline(spec=spec, **params))[0]


def run_features(s: Settings, day: date, *, spec: str = "synthetic-fraud", **params: Any) -> LocalRun:
    """Run the feature pipeline (ingest, validate, build, materialize up to ``day``'s end) under kfp.local."""
    _init(s)
    from riskloop.pipelines.features import features_pipeline

    return _run("features", lambda: features_pipeline(spec=spec, day=day.isoformat(), **params))[0]


def run_monitoring(s: Settings, day: date, *, spec: str = "synthetic-fraud", **params: Any) -> LocalRun:
    """Run the monitoring pipeline (and its retrain branch, when taken) under kfp.local for ``day``."""
    _init(s)
    from riskloop.pipelines.monitoring import monitoring_pipeline

    return _run("monitoring", lambda: monitoring_pipeline(spec=spec, day=day.isoformat(), **params))[0]
