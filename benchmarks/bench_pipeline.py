"""The training pipeline's overhead: kfp.local against bare scripts doing the same work on the same data.

One synthetic data set of about ``--rows`` transactions (30 days) is written to
a landing directory once; then three variants run one after the other (in
``--repeat`` rounds, the order rotated from round to round), each in a fresh
Python process of its own with a fresh state directory (its own MLflow
sqlite DB, Feast registry and audit log, so the model registry has **no
champion** in any variant) and the landing files hard-linked in:

``minimal``
    A bare script holding everything in memory: read the landing partitions,
    the data contract (``split_batch``), both feature tiers written as Feast's
    offline tables, ``apply_definitions``, ``historical_features``, ``assemble``,
    ``train_model`` (writes the model directory) and ``evaluate_scores`` on the
    test window. No MLflow, no audit log, no intermediate files, no plots.
``steps``
    The pipeline's own step functions (``riskloop.steps``) called in sequence
    in one process: ingest → validate → build_training_set → train → evaluate →
    gate → register → record_run_outcome, with the same artifact files,
    MLflow runs, audit events and reports as the pipeline, minus KFP.
``pipeline``
    ``riskloop.orchestration.local.run_training`` under kfp.local
    (``SubprocessRunner(use_venv=False)``): every step a subprocess.

All three get the same window and the same parameters (the pipeline's defaults,
``TrainParams`` defaults). Each variant's wall time is measured by this process
from spawning the child to its exit, so every variant pays its own interpreter
start and imports; inside the child each phase is timed too, and the kfp.local
log lines (``Executing task`` / ``finished with status``) are time-stamped as
they arrive, which gives the pipeline's per-task seconds. The headline ratios:
pipeline / steps (KFP orchestration overhead) and pipeline / minimal (the whole
platform's overhead, tracking, audit and artifact files included). The model
file's sha256 and the training set's hash are compared across the variants to
show they did the same work.

Afterwards the cold-start cost of what a pipeline step imports is measured with
fresh ``python -c`` processes (best of ``--import-repeat``), to explain where
the per-step overhead goes. Nothing here asserts a time.

Every process compiles the modules it imports unless it finds their bytecode,
and where ``PYTHONDONTWRITEBYTECODE`` is set (as on the machine these numbers
come from) it never writes any: then each of the pipeline's step processes
compiles pandas, kfp, mlflow, feast ... from source, unless the venv was
installed with compiled bytecode (``make setup`` does that since 998093a). So
the measurement runs in up to three modes (``--modes``), the venv untouched in
each: ``no-bytecode`` (``PYTHONPYCACHEPREFIX`` pointing at an empty directory
and ``PYTHONDONTWRITEBYTECODE=1``: no process finds or writes any ``.pyc``, as
in a venv or image installed without bytecode), ``as-is`` (this shell's
environment and venv) and ``bytecode-cached`` (every module's ``.pyc``,
riskloop's own included, cached under the temp dir after a warm-up pass of all
three variants on ``--warmup-rows`` rows).

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py --rows 1000000 --repeat 2 --out benchmarks/results/pipeline.json
    .venv/bin/python benchmarks/bench_pipeline.py --rows 20000 --repeat 1 --modes as-is --out /tmp/pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a file: _common sits beside it
from _common import machine_info

DAYS = 30
START = date(2026, 1, 1)
SEED = 7
N_MERCHANTS = 1_000
SPEC = "synthetic-fraud"
VARIANTS = ("minimal", "steps", "pipeline")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pipeline.json"
VERSIONED = (
    "kfp",
    "mlflow",
    "feast",
    "duckdb",
    "xgboost",
    "pandas",
    "pyarrow",
    "pandera",
    "scikit-learn",
    "matplotlib",
    "sqlalchemy",
)
# the pipeline's own defaults (pipelines/training.py), passed explicitly so every variant reads one dict
RUN_DEFAULTS: dict[str, Any] = {
    "maturity_days": 7.0,
    "validation_days": 3.0,
    "test_days": 4.0,
    "max_bad_fraction": -1.0,
    "target_fpr": 0.01,
    "seed": 0,
    "train_params": {},
    "gate_params": {},
}
# every variant runs with the same environment; telemetry off as `make run` has it
CHILD_ENV = {"DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "FEAST_USAGE": "False"}
PROGRESS = "[bench]"

# What a pipeline step imports before it does any work, as fresh processes: the KFP
# executor every lightweight component starts with, riskloop.steps (every component body
# imports it), and the modules each step function imports inside its body (steps.py).
_EXECUTOR = "import kfp.dsl.executor_main, riskloop.settings, riskloop.steps"
STEP_IMPORTS: dict[str, str] = {
    "ingest": _EXECUTOR,
    "validate": _EXECUTOR,
    "build_training_set": f"{_EXECUTOR}, feast, riskloop.features.store, riskloop.training.dataset",
    "train": f"{_EXECUTOR}, mlflow, riskloop.registry.mlflow_registry, riskloop.training.train",
    "evaluate": f"{_EXECUTOR}, mlflow, riskloop.registry.mlflow_registry, riskloop.training.evaluate, "
    "riskloop.training.train",
    "gate": f"{_EXECUTOR}, mlflow, riskloop.registry.mlflow_registry, riskloop.training.gate",
    "register": f"{_EXECUTOR}, mlflow, riskloop.registry.mlflow_registry, riskloop.training.gate, "
    "riskloop.training.train",
    "record_run_outcome": _EXECUTOR,
}
SINGLE_IMPORTS: dict[str, str] = {
    "interpreter (python -c pass)": "pass",
    "pandas": "import pandas",
    "kfp.dsl.executor_main": "import kfp.dsl.executor_main",
    "riskloop.steps": "import riskloop.steps",
    "pandera": "import pandera.pandas",
    "feast": "import feast",
    "mlflow": "import mlflow",
    "xgboost": "import xgboost",
    "riskloop.training.evaluate (sklearn, matplotlib)": "import riskloop.training.evaluate",
}


def progress(message: str) -> None:
    print(f"{PROGRESS} [{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Phases:
    """Wall and CPU seconds of named phases, in the order they ran."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.seconds: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        progress(f"{self.variant}: {name}")
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = {"wall": round(time.perf_counter() - w0, 3), "cpu": round(time.process_time() - c0, 3)}


# ------------------------------------------------------------------ the variants (children)
def run_minimal(state: Path, p: dict[str, Any], phases: Phases) -> dict[str, Any]:
    """The bare script: the same data work, in memory, without MLflow, audit or artifact files."""
    with phases("imports"):
        import feast  # noqa: F401  (open_store imports it lazily; here its cost lands in this phase)
        import pandas as pd

        from riskloop.data.io import read_partitions
        from riskloop.data.spec import load_spec
        from riskloop.data.validate import split_batch
        from riskloop.features.store import (
            StoreConfig,
            apply_definitions,
            historical_features,
            open_store,
            write_feature_tables,
        )
        from riskloop.model import LABEL, SPLIT, feature_spec
        from riskloop.training.dataset import WindowParams, assemble
        from riskloop.training.evaluate import evaluate_scores
        from riskloop.training.train import TrainParams, train_model
    spec = load_spec(p["spec"])
    with phases("read"):
        raw = read_partitions(
            spec.source_path(state), date.fromisoformat(p["start_date"]), date.fromisoformat(p["end_date"])
        )
    with phases("validate"):
        checked = split_batch(raw, spec.contract, where="landing")
        valid = checked.valid
        for name, cats in spec.categories.items():  # as the steps do after their parquet round trip
            valid[name] = pd.Categorical(valid[name].astype(str), categories=list(cats))
    cfg = StoreConfig.local(state / "feast")
    with phases("feature_tables"):
        write_feature_tables(valid, cfg.offline_dir)
    with phases("feast_apply"):
        store = open_store(cfg)
        apply_definitions(store, cfg.offline_dir)
    with phases("historical_features"):
        assert spec.features.service is not None
        features = historical_features(store, valid, spec.features.service)
    with phases("assemble"):
        cutoff = datetime.combine(date.fromisoformat(p["cutoff_date"]), datetime.min.time(), tzinfo=UTC)
        frame = assemble(
            valid,
            features,
            spec,
            WindowParams(
                cutoff=cutoff,
                maturity_days=p["maturity_days"],
                validation_days=p["validation_days"],
                test_days=p["test_days"],
                seed=p["seed"],
            ),
        )
    with phases("train"):
        bundle = train_model(
            frame,
            feature_spec(spec),
            TrainParams.model_validate(p["train_params"]),
            state / "model",
            meta={"dataset_spec": spec.name},
        )
    with phases("evaluate"):
        test = frame[frame[SPLIT] == "test"]
        ev = evaluate_scores(
            test[LABEL].to_numpy(), bundle.predict_frame(test), threshold=bundle.threshold, target_fpr=p["target_fpr"]
        )
    from riskloop.hashing import frame_sha256  # after the timed phases: only for the same-work check

    return {
        "rows_read": len(raw),
        "valid_rows": len(valid),
        "quarantined_rows": len(checked.quarantine),
        "training_rows": len(frame),
        "data_sha256": frame_sha256(frame),
        "model_sha256": bundle.meta["model_sha256"],
        "best_iteration": bundle.meta["best_iteration"],
        "metrics": _headline_metrics(ev.metrics()),
    }


def run_steps(state: Path, p: dict[str, Any], phases: Phases) -> dict[str, Any]:
    """The pipeline's step functions in sequence, in this process, with the pipeline's artifact files."""
    with phases("imports"):
        from riskloop import steps
        from riskloop.settings import Settings
    s = Settings()
    s.ensure_dirs()  # as run_training does before the pipeline starts
    work, run_id = state / "steps", "bench-steps"
    batch, valid, quarantine = work / "batch.parquet", work / "valid.parquet", work / "quarantine.parquet"
    training_set, model_dir = work / "training_set.parquet", work / "model"
    with phases("ingest"):
        steps.ingest(p["spec"], p["start_date"], p["end_date"], batch, s)
    with phases("validate"):
        steps.validate(p["spec"], batch, valid, quarantine, p["max_bad_fraction"], s, run_id)
    with phases("build_training_set"):
        info = steps.build_training_set(
            p["spec"],
            valid,
            p["cutoff_date"],
            p["maturity_days"],
            p["validation_days"],
            p["test_days"],
            p["seed"],
            training_set,
            s,
        )
    with phases("train"):
        trained = steps.train(
            p["spec"],
            training_set,
            p["train_params"],
            model_dir,
            s,
            pipeline_run_id=run_id,
            data_sha256=info.data_sha256,
            data_snapshot=str(training_set),
            cutoff_date=p["cutoff_date"],
            maturity_days=p["maturity_days"],
        )
    with phases("evaluate"):
        ev = steps.evaluate(
            p["spec"],
            training_set,
            model_dir,
            trained.mlflow_run_id,
            work / "evaluation",
            s,
            target_fpr=p["target_fpr"],
        )
        (work / "report.html").write_text(ev.html)  # the component writes the report artifact too
    with phases("gate"):
        verdict = steps.gate(
            ev.comparison,
            p["gate_params"],
            s,
            spec_name=p["spec"],
            mlflow_run_id=trained.mlflow_run_id,
            pipeline_run_id=run_id,
            gate_result_path=work / "gate.json",
        )
    if verdict.passed:
        with phases("register"):
            steps.register(
                trained.mlflow_run_id,
                model_dir,
                verdict,
                p["spec"],
                s,
                pipeline_run_id=run_id,
                data_sha256=info.data_sha256,
                data_snapshot=str(training_set),
            )
    with phases("record_run_outcome"):
        steps.record_run_outcome(run_id, steps.RUN_STATUS_OK, "", s)
    return audit_checks(s.audit_path)


def run_pipeline(state: Path, p: dict[str, Any], phases: Phases) -> dict[str, Any]:
    """``run_training`` under kfp.local; per-task seconds come from its log lines (parsed by the parent)."""
    with phases("imports"):
        from riskloop.orchestration.local import run_training
        from riskloop.settings import Settings
    s = Settings()
    with phases("run_training"):
        run = run_training(s, p)
    if not run.succeeded:
        raise RuntimeError(f"the pipeline failed: {run.error}")
    return {**audit_checks(s.audit_path), "local_run_seconds": round(run.seconds, 3)}


def _headline_metrics(m: dict[str, float]) -> dict[str, float]:
    return {k: round(float(m[k]), 6) for k in ("roc_auc", "pr_auc", "recall_at_fpr", "brier")}


def audit_checks(audit_path: Path) -> dict[str, Any]:
    """What the run recorded: events in order, rows, hashes, metrics and the registered version."""
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    by_event = {r["event"]: r for r in records}
    out: dict[str, Any] = {"audit_events": [r["event"] for r in records]}
    if "validated" in by_event:
        d = by_event["validated"]["details"]
        out.update(rows_read=d["rows"], valid_rows=d["valid"], quarantined_rows=d["quarantined"])
    if "trained" in by_event:
        d = by_event["trained"]["details"]
        out.update(
            training_rows=sum(d["rows"].values()),
            data_sha256=d["data_sha256"],
            model_sha256=d["model_sha256"],
            best_iteration=d["best_iteration"],
        )
    if "gated" in by_event:
        d = by_event["gated"]["details"]
        out.update(
            gate_passed=d["passed"], champion_version=d["champion_version"], metrics=_headline_metrics(d["candidate"])
        )
    if "registered" in by_event:
        d = by_event["registered"]
        out.update(registered_version=d["ids"]["model_version"], aliases=d["details"]["aliases"])
    return out


RUNNERS: dict[str, Callable[[Path, dict[str, Any], Phases], dict[str, Any]]] = {
    "minimal": run_minimal,
    "steps": run_steps,
    "pipeline": run_pipeline,
}


def child_main(variant: str, state: Path, params_path: Path, result_path: Path) -> int:
    p = json.loads(params_path.read_text())
    phases = Phases(variant)
    t0 = time.perf_counter()
    checks = RUNNERS[variant](state, p, phases)
    result = {
        "variant": variant,
        "inner_seconds": round(time.perf_counter() - t0, 3),
        "phases": phases.seconds,
        "checks": checks,
    }
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


# -------------------------------------------------------------------- the parent (orchestration)
@dataclass(frozen=True)
class ChildRun:
    """One variant's process: wall from spawn to exit, its CPU (descendants included), its output lines."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: int
    lines: tuple[tuple[float, str], ...]
    result: dict[str, Any]
    load_average_before: tuple[float, float, float]
    load_average_after: tuple[float, float, float]


def spawn(args: list[str], env: dict[str, str], cwd: Path, log_path: Path, echo: bool) -> ChildRun:
    """Run this script as a child; time-stamp each output line as it arrives (seconds since spawn)."""
    result_path = cwd / "result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *args, "--result", str(result_path)]
    lines: list[tuple[float, str]] = []
    before = os.getloadavg()
    t0 = time.perf_counter()
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, cwd=cwd
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.append((time.perf_counter() - t0, line))
            log.write(line)
            if echo or line.startswith(PROGRESS):
                sys.stderr.write(line)
        # wait4 rather than wait: its rusage covers the child and every descendant it waited for
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    after = os.getloadavg()
    if proc.returncode != 0:
        tail = "".join(line for _, line in lines[-40:])
        raise SystemExit(f"{' '.join(args)} exited with {proc.returncode}; log {log_path}\n{tail}")
    return ChildRun(
        wall,
        usage.ru_utime + usage.ru_stime,
        round(usage.ru_maxrss / 1024),
        tuple(lines),
        json.loads(result_path.read_text()),
        before,
        after,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_PIPELINE_START = re.compile(r"Running pipeline: '([^']+)'")
_PIPELINE_END = re.compile(r"Pipeline '([^']+)' finished with status (\w+)")


def parse_kfp_log(lines: tuple[tuple[float, str], ...], wall: float) -> dict[str, Any]:
    """Per-task seconds and the time outside tasks, from kfp.local's log lines and their arrival times."""
    starts: dict[str, float] = {}
    tasks: list[dict[str, Any]] = []
    pipeline_start = pipeline_end = None
    for t, raw in lines:
        line = _ANSI.sub("", raw)
        if (m := _TASK_START.search(line)) is not None:
            starts[m.group(1)] = t
        elif (m := _TASK_END.search(line)) is not None and m.group(1) in starts:
            begun = starts.pop(m.group(1))
            tasks.append(
                {
                    "task": m.group(1),
                    "status": m.group(2),
                    "start_seconds": round(begun, 3),
                    "seconds": round(t - begun, 3),
                }
            )
        elif _PIPELINE_START.search(line) and pipeline_start is None:
            pipeline_start = t
        elif _PIPELINE_END.search(line):
            pipeline_end = t
    if pipeline_start is None or pipeline_end is None:
        return {"tasks": tasks, "parsed": False}
    in_tasks = sum(task["seconds"] for task in tasks)
    return {
        "parsed": True,
        "tasks": tasks,
        "before_pipeline_seconds": round(pipeline_start, 3),
        "pipeline_seconds": round(pipeline_end - pipeline_start, 3),
        "in_tasks_seconds": round(in_tasks, 3),
        "between_tasks_seconds": round(pipeline_end - pipeline_start - in_tasks, 3),
        "after_pipeline_seconds": round(wall - pipeline_end, 3),
    }


def time_python(code: str, repeat: int, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Wall seconds of fresh ``python -c code`` processes (best and median of ``repeat``)."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs.append(time.perf_counter() - t0)
    return {
        "code": code,
        "best": round(min(runs), 3),
        "median": round(statistics.median(runs), 3),
        "runs": [round(r, 3) for r in runs],
    }


def generator_params(rows: int) -> Any:
    """Generator parameters whose expected row count over ``DAYS`` days is ``rows`` (as bench_data.py)."""
    from riskloop.data.synthetic import GeneratorParams

    base = GeneratorParams(days=DAYS, start=START, n_merchants=N_MERCHANTS, seed=SEED)
    per_card = DAYS * (base.tx_per_card_day + base.compromise_rate * 3.5)
    return base.model_copy(update={"n_cards": max(10, round(rows / per_card))})


def _landing(spec: Any, state: Path) -> Path:
    """The landing directory of ``spec`` in the local state dir ``state`` (the benchmark runs on one machine)."""
    path = spec.source_path(state).local_path
    assert path is not None
    return Path(path)


def link_tree(src: Path, dst: Path) -> None:
    """The landing files, hard-linked: every variant reads the very same bytes, nobody writes them."""
    shutil.copytree(src, dst, copy_function=os.link)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def mode_env(mode: str, workdir: Path) -> dict[str, str]:
    """The children's environment for a bytecode mode; the shared venv is never written to."""
    env = {**os.environ, **CHILD_ENV}
    if mode == "no-bytecode":
        # Python then looks for .pyc files only under the (empty) prefix and writes none
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "empty-pycache")
    elif mode == "bytecode-cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def bytecode_facts() -> dict[str, Any]:
    """Whether processes here can reuse compiled bytecode: the env var and the .pyc files in the venv."""
    import sysconfig

    import riskloop

    purelib = Path(sysconfig.get_paths()["purelib"])
    own = Path(riskloop.__file__).resolve().parent
    return {
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX"),
        "site_packages": str(purelib),
        "pyc_files_in_site_packages": sum(1 for _ in purelib.rglob("*.pyc")),
        "py_files_in_site_packages": sum(1 for _ in purelib.rglob("*.py")),
        "pyc_files_in_riskloop_source": sum(1 for _ in own.rglob("*.pyc")),
    }


def generate(rows_target: int, root: Path) -> tuple[Any, int, float]:
    """Landing partitions of about ``rows_target`` rows under the state dir ``root``; params, rows, seconds."""
    from riskloop.data.spec import load_spec
    from riskloop.data.synthetic import write_partitions
    from riskloop.settings import Settings

    os.environ["RISKLOOP_STATE_DIR"] = str(root)  # Settings() reads it, as every entrypoint does
    settings = Settings()
    gp = generator_params(rows_target)
    progress(f"generating {gp.days} days x {gp.n_cards:,} cards under {root}")
    counts: list[int] = []
    t0 = time.perf_counter()
    write_partitions(gp, load_spec(SPEC).source_path(settings.root), on_day=lambda _day, n: counts.append(n))
    return gp, sum(counts), time.perf_counter() - t0


def run_variants(
    landing: Path, params_path: Path, workdir: Path, env: dict[str, str], order: tuple[str, ...], echo: bool
) -> dict[str, ChildRun]:
    """The variants one after the other, each in a fresh state dir holding the same landing files."""
    from riskloop.data.spec import load_spec

    spec = load_spec(SPEC)
    children = {}
    for variant in order:
        state = workdir / variant
        link_tree(landing, _landing(spec, state))
        progress(f"variant {variant} (load average {os.getloadavg()[0]:.2f})")
        children[variant] = spawn(
            ["--variant", variant, "--state-dir", str(state), "--params", str(params_path)],
            {**env, "RISKLOOP_STATE_DIR": str(state)},
            state,
            workdir / f"{variant}.log",
            echo,
        )
        progress(f"variant {variant}: {children[variant].wall_seconds:.1f} s wall")
    return children


def import_costs(env: dict[str, str], repeat: int, workdir: Path, mlflow_db: Path) -> dict[str, Any]:
    """Fresh-process import costs; ``_KFP_RUNTIME=true`` as in every lightweight component's command."""
    env = {**env, "_KFP_RUNTIME": "true"}
    progress(f"import costs: fresh python processes, best of {repeat}")
    singles = {label: time_python(code, repeat, env, workdir) for label, code in SINGLE_IMPORTS.items()}
    by_code: dict[str, dict[str, Any]] = {}
    for code in dict.fromkeys(STEP_IMPORTS.values()):
        by_code[code] = time_python(code, repeat, env, workdir)
    mlflow_query = time_python(
        "from riskloop.registry.mlflow_registry import version_by_alias; "
        f"version_by_alias('sqlite:///{mlflow_db}', 'fraud-detector', 'champion')",
        repeat,
        env,
        workdir,
    )
    return {
        "single": singles,
        "per_step_floor": {step: by_code[code] for step, code in STEP_IMPORTS.items()},
        "mlflow_import_and_first_query": mlflow_query,
    }


def round_report(
    children: dict[str, ChildRun], order: tuple[str, ...], floors: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One round: each variant's wall, CPU and phases, the pipeline's tasks against the in-process steps."""
    variants: dict[str, Any] = {}
    for name, child in children.items():
        variants[name] = {
            "wall_seconds": round(child.wall_seconds, 3),
            "cpu_seconds": round(child.cpu_seconds, 3),
            "peak_rss_mb": child.peak_rss_mb,
            "inner_seconds": child.result["inner_seconds"],
            "phases": child.result["phases"],
            "checks": child.result["checks"],
            "load_average_before": [round(x, 2) for x in child.load_average_before],
            "load_average_after": [round(x, 2) for x in child.load_average_after],
        }
    variants["pipeline"]["kfp"] = parse_kfp_log(children["pipeline"].lines, children["pipeline"].wall_seconds)
    step_phases = variants["steps"]["phases"]
    per_step = []
    for task in variants["pipeline"]["kfp"]["tasks"]:
        step = task["task"].replace("-", "_")
        in_process = step_phases.get(step, {}).get("wall")
        per_step.append(
            {
                "step": step,
                "pipeline_task_seconds": task["seconds"],
                "steps_in_process_seconds": in_process,
                "difference_seconds": None if in_process is None else round(task["seconds"] - in_process, 3),
                "import_floor_seconds": floors.get(step, {}).get("best"),
            }
        )
    wall = {name: children[name].wall_seconds for name in VARIANTS}
    return {
        "order": list(order),
        "variants": variants,
        "per_step": per_step,
        "pipeline_over_steps": ratio(wall["pipeline"], wall["steps"]),
        "pipeline_over_minimal": ratio(wall["pipeline"], wall["minimal"]),
    }


def mode_report(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Across rounds: each variant's best and median wall and CPU, the ratios of both, the same-work check."""

    def stat(variant: str, key: str) -> dict[str, float]:
        values = [r["variants"][variant][key] for r in rounds]
        return {"best": round(min(values), 3), "median": round(statistics.median(values), 3)}

    wall = {v: stat(v, "wall_seconds") for v in VARIANTS}
    cpu = {v: stat(v, "cpu_seconds") for v in VARIANTS}
    ratios = {}
    for how in ("best", "median"):
        ratios[f"pipeline_over_steps_{how}"] = ratio(wall["pipeline"][how], wall["steps"][how])
        ratios[f"pipeline_over_minimal_{how}"] = ratio(wall["pipeline"][how], wall["minimal"][how])
        ratios[f"steps_over_minimal_{how}"] = ratio(wall["steps"][how], wall["minimal"][how])
        ratios[f"cpu_pipeline_over_steps_{how}"] = ratio(cpu["pipeline"][how], cpu["steps"][how])
        ratios[f"cpu_pipeline_over_minimal_{how}"] = ratio(cpu["pipeline"][how], cpu["minimal"][how])
    checks = [r["variants"][v]["checks"] for r in rounds for v in VARIANTS]
    same = {
        key: len({json.dumps(c.get(key)) for c in checks}) == 1
        for key in ("rows_read", "valid_rows", "training_rows", "data_sha256", "model_sha256", "metrics")
    }
    return {"wall_seconds": wall, "cpu_seconds": cpu, "ratios": ratios, "same_work": same, "rounds": rounds}


def run(
    rows_target: int, modes: list[str], repeat: int, import_repeat: int, warmup_rows: int, workdir: Path, echo: bool
) -> dict[str, Any]:
    """Generate the data once; per bytecode mode, rounds of the variants, then import costs; the report."""
    from riskloop.data.spec import load_spec
    from riskloop.orchestration.local import training_params

    spec = load_spec(SPEC)
    bytecode_at_start = bytecode_facts()
    gp, rows, gen_seconds = generate(rows_target, workdir / "generated")
    progress(f"{rows:,} rows in {gp.days} partitions ({gen_seconds:.1f} s)")
    params = training_params(START + timedelta(days=DAYS - 1), DAYS, spec=SPEC, **RUN_DEFAULTS)
    params_path = workdir / "params.json"
    params_path.write_text(json.dumps(params, indent=2))

    by_mode: dict[str, Any] = {}
    for mode in modes:
        mode_dir = workdir / mode
        env = mode_env(mode, workdir)
        warmup_seconds = None
        if mode == "bytecode-cached":
            # one pass of every variant on small data compiles every module any of them imports,
            # lazily imported ones included; its timings are discarded
            progress(f"{mode}: warm-up pass on {warmup_rows:,} rows")
            generate(warmup_rows, mode_dir / "warmup-data")
            t0 = time.perf_counter()
            run_variants(
                _landing(spec, mode_dir / "warmup-data"), params_path, mode_dir / "warmup", env, VARIANTS, echo
            )
            warmup_seconds = round(time.perf_counter() - t0, 1)
        rounds: list[tuple[tuple[str, ...], dict[str, ChildRun]]] = []
        for i in range(repeat):
            # the order rotates from round to round, so no variant always runs first or last
            order = VARIANTS[i % len(VARIANTS) :] + VARIANTS[: i % len(VARIANTS)]
            progress(f"{mode}: round {i + 1} of {repeat} on {rows:,} rows, order {', '.join(order)}")
            rounds.append(
                (
                    order,
                    run_variants(
                        _landing(spec, workdir / "generated"),
                        params_path,
                        mode_dir / f"round-{i + 1}",
                        env,
                        order,
                        echo,
                    ),
                )
            )
        imports = import_costs(env, import_repeat, workdir, mode_dir / f"round-{repeat}" / "steps" / "mlflow.db")
        by_mode[mode] = {
            "environment": {k: env.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")},
            "warmup_seconds": warmup_seconds,
            **mode_report([round_report(children, order, imports["per_step_floor"]) for order, children in rounds]),
            "import_costs": imports,
        }
        shutil.rmtree(mode_dir)  # a 1M-row round leaves GBs of artifacts behind
    return {
        "rows": rows,
        "rows_target": rows_target,
        "generator": {"params": gp.model_dump(mode="json"), "seconds": round(gen_seconds, 3)},
        "run_params": params,
        "registry_state": "a fresh state dir per variant and round: no champion, so evaluate scores no champion "
        "model and register sets champion + challenger (steps and pipeline alike)",
        "repeat": repeat,
        "bytecode": {"at_start": bytecode_at_start, "at_end": bytecode_facts()},
        "modes": by_mode,
    }


def summary(report: dict[str, Any]) -> str:
    """A short human table per mode and round."""
    r = report["results"]
    lines = [f"{r['rows']:,} rows"]
    for mode, m in r["modes"].items():
        lines += ["", f"== {mode}"]
        for i, rnd in enumerate(m["rounds"], start=1):
            v = rnd["variants"]
            lines += [
                f"round {i} ({', '.join(rnd['order'])})",
                f"{'variant':<10}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}",
            ]
            for name in VARIANTS:
                lines.append(
                    f"{name:<10}{v[name]['wall_seconds']:>9.1f}{v[name]['cpu_seconds']:>9.1f}"
                    f"{v[name]['peak_rss_mb']:>9,}"
                )
            lines.append(f"{'step':<20}{'pipeline s':>11}{'in-process s':>13}{'diff s':>9}{'import floor s':>16}")
            for row in rnd["per_step"]:
                ip, diff = row["steps_in_process_seconds"], row["difference_seconds"]
                floor = row["import_floor_seconds"]
                lines.append(
                    f"{row['step']:<20}{row['pipeline_task_seconds']:>11.2f}"
                    f"{'-' if ip is None else f'{ip:.2f}':>13}{'-' if diff is None else f'{diff:.2f}':>9}"
                    f"{'-' if floor is None else f'{floor:.2f}':>16}"
                )
        for key, value in m["ratios"].items():
            lines.append(f"{key:<36}{value:.2f}x")
        lines.append(f"same work: {m['same_work']}")
    return "\n".join(lines)


MODES = ("no-bytecode", "as-is", "bytecode-cached")
DEFAULT_MODES = ("no-bytecode", "as-is")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="target row count (default 1000000)")
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help=f"comma-separated subset of {', '.join(MODES)} (see above); default {','.join(DEFAULT_MODES)}",
    )
    parser.add_argument(
        "--warmup-rows",
        type=int,
        default=20_000,
        help="rows of the bytecode-cached mode's warm-up pass (default 20000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="rounds of the three variants per mode, order rotated each round (default 2)",
    )
    parser.add_argument(
        "--import-repeat", type=int, default=3, help="fresh processes per import measurement (default 3)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--echo", action="store_true", help="show the children's full output (kfp.local's log)")
    # the parent runs this same script as each variant's child process
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        return child_main(args.variant, args.state_dir, args.params, args.result)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes a comma-separated subset of {', '.join(MODES)}")
    if args.rows < 1_000 or args.warmup_rows < 1_000 or args.repeat < 1 or args.import_repeat < 1:
        parser.error("--rows and --warmup-rows must be >= 1000, --repeat and --import-repeat >= 1")
    os.environ.update(CHILD_ENV)

    started = datetime.now(UTC)
    machine = machine_info(VERSIONED)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="riskloop-bench-pipeline-") as tmp:
        results = run(args.rows, modes, args.repeat, args.import_repeat, args.warmup_rows, Path(tmp), args.echo)
    report = {
        "benchmark": "pipeline",
        "command": " ".join([".venv/bin/python", "benchmarks/bench_pipeline.py", *sys.argv[1:]]),
        "started_at": started.isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
