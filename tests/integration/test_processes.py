"""Behaviour across processes: several writers of one prediction log, rows flushed at interpreter exit, and
the serving metrics of several worker processes summed into one /metrics (PROMETHEUS_MULTIPROC_DIR).

They start Python processes, so they live here rather than in tests/unit (pure, in-process tests).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from riskloop.serving.prediction_log import PredictionLog, read_prediction_log
from tests.unit.test_prediction_log import files_under, make_row


def _write_from_another_process(root: Path, offset: int) -> None:
    plog = PredictionLog(root, flush_rows=25, flush_seconds=0.01)
    for i in range(200):
        plog.append([make_row(offset + i)])
        if i % 50 == 49:
            plog.flush()
    plog.close()
    if (plog.written, plog.dropped) != (200, 0):
        raise SystemExit(f"written {plog.written}, dropped {plog.dropped}")


def test_processes_writing_one_root_do_not_collide(tmp_path: Path) -> None:
    root = tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_from_another_process, args=(root, offset)) for offset in (0, 10_000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    frame = read_prediction_log(root)
    assert len(frame) == 400 and frame["transaction_id"].is_unique
    names = [f.name for f in files_under(root)]
    assert len({name.split("-")[1] for name in names}) == 2 and len(names) == 8


def test_rows_queued_at_interpreter_exit_are_written(tmp_path: Path) -> None:
    code = (
        "import sys; from datetime import UTC, datetime; from pathlib import Path\n"
        "from riskloop.serving.prediction_log import PredictionLog\n"
        "log = PredictionLog(Path(sys.argv[1]), flush_seconds=3600)\n"
        "log.append([{'time': datetime(2026, 3, 14, tzinfo=UTC), 'score': 0.5}])\n"  # no close: atexit does it
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "log")], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert list(read_prediction_log(tmp_path / "log")["score"]) == [0.5]


_WORKER = textwrap.dedent(
    """
    import sys
    from riskloop.serving.metrics import ModelLabels, ServingMetrics
    metrics = ServingMetrics()
    labels = ModelLabels("fraud-detector", "7", sys.argv[2])
    for _ in range(int(sys.argv[1])):
        metrics.observe_request(labels, outcome="ok", seconds=0.002)
    metrics.register_model(labels, model_sha256="ab")
    """
)

_RENDER = textwrap.dedent(
    """
    import sys
    from prometheus_client import REGISTRY, generate_latest
    from riskloop.serving.metrics import ModelLabels, ServingMetrics, render_metrics
    ServingMetrics().observe_request(ModelLabels("fraud-detector", "7", "challenger"), outcome="ok", seconds=0.1)
    body, _ = render_metrics()
    sys.stdout.write(body.decode())
    sys.stdout.write("\\n### one process\\n")
    sys.stdout.write(generate_latest(REGISTRY).decode())  # what KServe 0.21's /metrics handler renders
    """
)


def _run(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _requests(text: str) -> dict[str, float]:
    return {
        s.labels["role"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "riskloop_requests_total" and s.labels.get("outcome") == "ok"
    }


def test_render_metrics_sums_worker_processes(tmp_path: Path) -> None:
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    # the variable must be set before prometheus_client is imported: hence fresh processes
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "RISKLOOP_METRICS_AGGREGATE": "1"}
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, n, role], env=env, stderr=subprocess.PIPE, text=True)
        for n, role in (("3", "champion"), ("5", "champion"), ("2", "shadow"))
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    assert len(list(multiproc.glob("counter_*.db"))) == 3

    aggregated, single = _run(_RENDER, env=env).split("### one process")
    assert _requests(aggregated) == {"champion": 8, "shadow": 2, "challenger": 1}
    info = [s for f in text_string_to_metric_families(aggregated) for s in f.samples if s.name == "riskloop_model_info"]
    assert len(info) == 3 and {s.value for s in info} == {1.0}  # liveall: one series per process (pid label)
    # the global registry of the rendering process knows only its own share
    assert _requests(single) == {"challenger": 1}
    # the directory alone (Feast's import sets PROMETHEUS_MULTIPROC_DIR to a temporary one of its own) is not
    # riskloop's signal to aggregate: the rendering process then shows its own values, never an empty page
    own, _ = _run(_RENDER, env={**env, "RISKLOOP_METRICS_AGGREGATE": ""}).split("### one process")
    assert _requests(own) == {"challenger": 1}
