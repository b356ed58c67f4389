"""`make run`: the main job on one machine, start to finish.

1. a clean state dir (unless ``--keep``), 31 days of synthetic transactions;
2. the training pipeline under kfp.local on the first 20 days: the model becomes ``champion``;
3. the same pipeline on days 1-30, gated against that champion on the same
   test window: on a pass it becomes ``challenger``;
4. delivery: ``riskloop serve`` follows the deployment record with the champion;
   the challenger is deployed as a canary; day 31 (never trained on) is replayed
   through the server over HTTP as live traffic; canary analysis steps the share
   from 20 % to 50 % and promotes or rolls back, with its reasons;
5. a summary: versions and aliases, metrics side by side, the gate's and the
   canary's reasons, where the reports are, how to open the MLflow UI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from riskloop.settings import Settings

DAYS, FIRST_WINDOW, START = 30, 20, date(2026, 1, 1)
HELD_OUT = START + timedelta(days=DAYS)  # day 31: served as live traffic, never trained on
CANARY_STEPS, CANARY_INTERVAL_SECONDS, CANARY_MAX_INTERVALS = (20, 50), 6.0, 5
console = Console(width=140)


def _clean(s: Settings) -> None:
    if not s.root.exists():
        return
    for child in s.root.iterdir():
        if child.name in ("services", "bench"):  # the test services' state and the benchmarks' venvs
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the existing .riskloop/ state")
    parser.add_argument("--cards", type=int, default=3000, help="synthetic cards (default 3000)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from riskloop.data.spec import load_spec
    from riskloop.data.synthetic import GeneratorParams, write_partitions
    from riskloop.local_runs import run_training, training_params
    from riskloop.registry.mlflow_registry import list_versions, run_info

    s = Settings()
    if not args.keep:
        _clean(s)
    s.ensure_dirs()
    t0 = time.perf_counter()
    spec = load_spec("synthetic-fraud")
    console.rule("[bold]1/4 data")
    paths = write_partitions(GeneratorParams(days=DAYS + 1, start=START, n_cards=args.cards, n_merchants=600),
                             spec.source_path(s.root))
    console.print(f"{len(paths)} daily partitions under {spec.source_path(s.root)}")
    runs = []
    for i, days in enumerate((FIRST_WINDOW, DAYS), start=2):
        end = START + timedelta(days=days - 1)
        console.rule(f"[bold]{i}/4 training pipeline on days 1-{days} (kfp.local)")
        r = run_training(s, training_params(end, days))
        runs.append((days, r))
        console.print(f"{'succeeded' if r.succeeded else '[red]failed'} in {r.seconds:.0f} s")
        if not r.succeeded:
            console.print(f"[red]{r.error}")
            return 1
    console.rule("[bold]4/4 delivery: canary of the challenger on live traffic (day 31)")
    canary = deliver(s, spec)
    versions = list_versions(s.tracking_uri, s.mlflow.model_name)
    table = Table(title="model versions of " + s.mlflow.model_name)
    for col in ("version", "aliases", "cutoff", "ROC-AUC", "PR-AUC", "recall@1%FPR", "Brier", "gate", "MLflow run"):
        table.add_column(col)
    for v in versions:
        info = run_info(s.tracking_uri, v.run_id)
        m = info["metrics"]
        table.add_row(v.version, ", ".join(v.aliases) or "-", info["params"].get("cutoff_date", "?"),
                      f"{m.get('roc_auc', float('nan')):.4f}", f"{m.get('pr_auc', float('nan')):.4f}",
                      f"{m.get('recall_at_fpr', float('nan')):.4f}", f"{m.get('brier', float('nan')):.4f}",
                      v.tags.get("gate_result", "?")[:60], v.run_id[:12])
    console.print(table)
    gated = [json.loads(line) for line in s.audit_path.read_text().splitlines() if '"event":"gated"' in line]
    if gated:
        last = gated[-1]["details"]
        console.print(f"[bold]last gate:[/] {'PASS' if last['passed'] else 'FAIL'}")
        for reason in last["reasons"]:
            console.print(f"  - {reason}")
    if canary is not None:
        console.print(f"[bold]canary:[/] {canary}")
    reports = sorted(s.pipeline_root.rglob("report.html"))
    console.rule("[bold]where things are")
    console.print(f"state dir      {s.root}")
    console.print(f"MLflow         {s.tracking_uri}")
    console.print(f"  open the UI: .venv/bin/mlflow ui --backend-store-uri {s.tracking_uri} --host 127.0.0.1")
    console.print(f"reports        {reports[-1] if reports else '-'} (+ roc/pr/calibration PNGs beside it)")
    console.print(f"audit log      {s.audit_path}  (verify: .venv/bin/riskloop audit verify)")
    console.print(f"deployment     {s.root / 'deployments'}  (riskloop canary status; riskloop serve follows it)")
    console.print(f"predictions    {s.predictions_dir}")
    console.print(f"total          {time.perf_counter() - t0:.0f} s")
    return 0 if len(versions) >= 1 else 1


def deliver(s: Settings, spec: Any) -> str | None:
    """Serve the champion, canary the challenger on day 31's traffic, promote or roll back. Returns the outcome."""
    import socket
    import subprocess

    from riskloop import steps
    from riskloop.data.io import read_partitions
    from riskloop.data.validate import split_batch
    from riskloop.delivery import rollout
    from riskloop.delivery.analysis import CanaryPolicy, Verdict
    from riskloop.delivery.canary import progressive_rollout
    from riskloop.delivery.metrics_source import ScrapeSource
    from riskloop.registry.mlflow_registry import version_by_alias
    from riskloop.serving.replay import Replay, instances

    name = spec.registered_model(s.mlflow.model_name)
    champion = version_by_alias(s.tracking_uri, name, "champion")
    challenger = version_by_alias(s.tracking_uri, name, "challenger")
    if champion is None or challenger is None or challenger.version == champion.version:
        console.print("no new challenger passed the gate: nothing to canary")
        return None
    steps.materialize(HELD_OUT.isoformat(), 30, s)  # the online store as of day 31's start
    day = read_partitions(spec.source_path(s.root), HELD_OUT, HELD_OUT)
    rows = instances(split_batch(day, spec.contract, where=f"day {HELD_OUT}").valid.sort_values("event_timestamp"))
    rollout.ensure_deployment(s, name)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    log_path = s.root / "serving" / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RISKLOOP_STATE_DIR": str(s.root)}
    with log_path.open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "riskloop.cli", "serve", "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(url, name, server, log_path)
        console.print(f"serving champion v{champion.version} at {url} (log {log_path})")
        d = rollout.deploy_challenger(s, name, alias="challenger", canary_percent=CANARY_STEPS[0],
                                      reason="make run: canary of the new challenger")
        console.print(f"challenger v{d.challenger_version} deployed as a {d.canary_percent}% canary; "
                      f"replaying {len(rows)} transactions of {HELD_OUT} over HTTP")
        table = Table(title=f"canary analysis, {CANARY_INTERVAL_SECONDS:g} s intervals "
                            f"(pairs: champion / challenger)")
        for col in ("share", "decision", "requests", "error rate", "p99 ms", "PSI", "alert rate"):
            table.add_column(col)

        def show(pct: int, v: Verdict) -> None:
            m = v.measures

            def pair(key: str, fmt: str = "{:.3g}") -> str:
                nan = float("nan")
                return f"{fmt.format(m.get(key + '_champion', nan))} / {fmt.format(m.get(key + '_challenger', nan))}"

            table.add_row(f"{pct}%", v.decision, pair("requests", "{:.0f}"), pair("error_rate"),
                          f"{m.get('p99_champion_seconds', float('nan')) * 1000:.1f} / "
                          f"{m.get('p99_challenger_seconds', float('nan')) * 1000:.1f}",
                          f"{m.get('psi', float('nan')):.3f}", pair("alert_rate"))

        with Replay(url, name, rows, connections=2):
            result = progressive_rollout(
                s, name, steps=CANARY_STEPS, interval_seconds=CANARY_INTERVAL_SECONDS,
                max_intervals=CANARY_MAX_INTERVALS, policy=CanaryPolicy(min_requests=100, min_instances=100),
                source=ScrapeSource(url, name), on_verdict=show)
        console.print(table)
        last = result.verdicts[-1][1] if result.verdicts else None
        for reason in last.reasons if last else ():
            console.print(f"  - {reason}")
        return f"{result.outcome}; champion is now v{result.final.champion_version}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_ready(url: str, name: str, server: Any, log_path: Any, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the model server exited {server.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/v1/models/{name}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the model server was not ready within {timeout:.0f} s; see {log_path}")


if __name__ == "__main__":
    sys.exit(main())
