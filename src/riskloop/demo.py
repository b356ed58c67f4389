"""`make run`: the main job on one machine, start to finish: the whole loop.

1. a clean state dir (unless ``--keep``), 35 days of synthetic transactions with a
   covariate shift from day 32 on (days before it are identical to a drift-free run);
2. the training pipeline under kfp.local on the first 20 days: the model becomes ``champion``;
3. the same pipeline on days 1-30, gated against that champion on the same
   test window: on a pass it becomes ``challenger``;
4. delivery: ``riskloop serve`` follows the deployment record with the champion;
   the challenger is deployed as a canary; day 31 (never trained on) is replayed
   through the server over HTTP as live traffic; canary analysis steps the share
   from 20 % to 50 % and promotes or rolls back, with its reasons;
5. the loop: days 32-35 are served; after each day the monitor tests drift and
   decay of the champion; when it calls for a retrain, the training pipeline runs
   on the 30 days up to that day, and a passing candidate is canaried on the next
   day's traffic and promoted or rolled back;
6. a timeline of what happened, the versions side by side, where the reports are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from riskloop.settings import Settings

DAYS, FIRST_WINDOW, START = 30, 20, date(2026, 1, 1)
HELD_OUT = START + timedelta(days=DAYS)  # day 31: served as live traffic, never trained on
LOOP_DAYS = 4  # days 32-35, with the covariate shift (drift must hold 2 days; a retrain needs a next day to canary on)
TOTAL_DAYS = DAYS + 1 + LOOP_DAYS
CANARY_STEPS, CANARY_INTERVAL_SECONDS, CANARY_MAX_INTERVALS = (20, 50), 5.0, 4
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
    from riskloop.data.synthetic import GeneratorParams, Scenario, write_partitions
    from riskloop.orchestration.local import run_training, training_params
    from riskloop.registry.mlflow_registry import list_versions, run_info

    s = Settings()
    if not args.keep:
        _clean(s)
    s.ensure_dirs()
    t0 = time.perf_counter()
    spec = load_spec("synthetic-fraud")
    console.rule("[bold]1/5 data")
    paths = write_partitions(GeneratorParams(days=TOTAL_DAYS, start=START, n_cards=args.cards, n_merchants=600,
                                             scenario=Scenario.covariate_shift, drift_day=DAYS + 1),
                             spec.source_path(s.shared))
    console.print(f"{len(paths)} daily partitions under {spec.source_path(s.shared)}")
    runs = []
    for i, days in enumerate((FIRST_WINDOW, DAYS), start=2):
        end = START + timedelta(days=days - 1)
        console.rule(f"[bold]{i}/5 training pipeline on days 1-{days} (kfp.local)")
        r = run_training(s, training_params(end, days))
        runs.append((days, r))
        console.print(f"{'succeeded' if r.succeeded else '[red]failed'} in {r.seconds:.0f} s")
        if not r.succeeded:
            console.print(f"[red]{r.error}")
            return 1
    from riskloop.registry.mlflow_registry import version_by_alias

    name = spec.registered_model(s.mlflow.model_name)
    if version_by_alias(s.tracking_uri, name, "champion") is None:
        # approval required (RISKLOOP_AUDIT__REQUIRE_APPROVAL): the first version waits as challenger
        waiting = version_by_alias(s.tracking_uri, name, "challenger")
        console.print(f"[red]no champion to serve: approval is required, and version "
                      f"{waiting.version if waiting else '?'} waits for it as challenger. Approve it (`riskloop "
                      "approve N --by NAME --note ...`), promote it (`riskloop canary promote`), then run "
                      "`make run` again with --keep")
        return 2
    timeline: list[tuple[str, str, str]] = []
    with served(s, spec) as url:
        console.rule("[bold]4/5 delivery: canary of the challenger on live traffic (day 31)")
        canary = deliver(s, spec, url, timeline)
        console.rule(f"[bold]5/5 the loop: days {DAYS + 2}-{TOTAL_DAYS} served with a covariate shift, monitored")
        close_the_loop(s, spec, url, timeline)
    tl = Table(title="timeline")
    for col in ("day", "event", "detail"):
        tl.add_column(col)
    for row in timeline:
        tl.add_row(*row)
    console.print(tl)
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
    console.print(f"predictions    {s.predictions}")
    console.print(f"monitoring     {s.reports_dir / 'monitoring'}/<day>/ (drift.html, drift.json, summary.json)")
    console.print(f"total          {time.perf_counter() - t0:.0f} s")
    return 0 if len(versions) >= 1 else 1


@contextlib.contextmanager
def served(s: Settings, spec: Any) -> Iterator[str]:
    """``riskloop serve`` following the deployment record, on a free loopback port, for the block's duration."""
    import socket
    import subprocess

    from riskloop.delivery import rollout

    name = spec.registered_model(s.mlflow.model_name)
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
        console.print(f"serving {name} at {url} (log {log_path})")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _prepare_features(s: Settings, spec: Any, day: date) -> None:
    """The online store as of ``day``'s start: feature tables from the 30 days before it, materialized."""
    from riskloop import steps

    work = s.root / "work" / day.isoformat()
    work.mkdir(parents=True, exist_ok=True)
    steps.ingest(spec.name, (day - timedelta(days=30)).isoformat(), (day - timedelta(days=1)).isoformat(),
                 work / "batch.parquet", s)
    steps.validate(spec.name, work / "batch.parquet", work / "valid.parquet", work / "quarantine.parquet", -1, s,
                   f"make-run-{day}")
    steps.build_features(spec.name, work / "valid.parquet", s)
    steps.materialize(day.isoformat(), 30, s)


def _canary(s: Settings, name: str, url: str, rows: list[dict[str, Any]], day: date,
            timeline: list[tuple[str, str, str]], *, cycle: bool) -> str:
    """Deploy the ``challenger`` alias as a canary and let the analysis decide while ``rows`` are replayed."""
    from riskloop.delivery import rollout
    from riskloop.delivery.analysis import CanaryPolicy, Verdict
    from riskloop.delivery.canary import progressive_rollout
    from riskloop.delivery.metrics_source import ScrapeSource
    from riskloop.serving.replay import Replay

    d = rollout.deploy_challenger(s, name, alias="challenger", canary_percent=CANARY_STEPS[0],
                                  reason="make run: canary of the new challenger")
    timeline.append((day.isoformat(), "canary", f"v{d.challenger_version} at {d.canary_percent}% beside "
                                                f"champion v{d.champion_version}"))
    console.print(f"challenger v{d.challenger_version} deployed as a {d.canary_percent}% canary; "
                  f"replaying {len(rows)} transactions of {day} over HTTP")
    table = Table(title=f"canary analysis, {CANARY_INTERVAL_SECONDS:g} s intervals (pairs: champion / challenger)")
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

    from riskloop.errors import ApprovalRefused

    replay = Replay(url, name, rows, connections=2, once=not cycle).start()
    try:
        result = progressive_rollout(
            s, name, steps=CANARY_STEPS, interval_seconds=CANARY_INTERVAL_SECONDS,
            max_intervals=CANARY_MAX_INTERVALS, policy=CanaryPolicy(min_requests=100, min_instances=100),
            source=ScrapeSource(url, name), on_verdict=show)
    except ApprovalRefused as exc:
        # fail closed: the promotion was refused (and audited); the unapproved canary leaves live traffic
        console.print(f"[red]{exc}")
        final = rollout.rollback(s, name, reason=f"make run: {exc.what}")
        timeline.append((day.isoformat(), "promotion refused", f"{exc.what}; champion is v{final.champion_version}"))
        return f"promotion refused; champion is still v{final.champion_version}"
    finally:
        if cycle:
            replay.stop()
        else:
            replay.wait()  # the rest of the day is served too: the monitor reads the whole day
    console.print(table)
    last = result.verdicts[-1][1] if result.verdicts else None
    for reason in last.reasons if last else ():
        console.print(f"  - {reason}")
    why = "; ".join(r for r in (last.reasons if last else ()) if "FAIL" in r or "inconclusive" in r)
    timeline.append((day.isoformat(), result.outcome.replace("_", " "),
                     f"champion is v{result.final.champion_version}" + (f" ({why})" if why else "")))
    return f"{result.outcome}; champion is now v{result.final.champion_version}"


def deliver(s: Settings, spec: Any, url: str, timeline: list[tuple[str, str, str]]) -> str | None:
    """Canary the challenger on day 31's traffic, promote or roll back. Returns the outcome."""
    from riskloop import steps
    from riskloop.registry.mlflow_registry import version_by_alias

    name = spec.registered_model(s.mlflow.model_name)
    champion = version_by_alias(s.tracking_uri, name, "champion")
    challenger = version_by_alias(s.tracking_uri, name, "challenger")
    if champion is None or challenger is None or challenger.version == champion.version:
        console.print("no new challenger passed the gate: nothing to canary")
        timeline.append((HELD_OUT.isoformat(), "no canary", "no new challenger passed the gate"))
        return None
    from riskloop.serving.replay import day_instances

    steps.materialize(HELD_OUT.isoformat(), 30, s)  # the online store as of day 31's start
    return _canary(s, name, url, day_instances(s, spec, HELD_OUT), HELD_OUT, timeline, cycle=True)


def close_the_loop(s: Settings, spec: Any, url: str, timeline: list[tuple[str, str, str]]) -> None:
    """Serve the drifting days; monitor each; retrain, gate and canary when the monitor says so."""
    from riskloop.monitoring.daily import monitor_day
    from riskloop.monitoring.decision import MonitorPolicy
    from riskloop.orchestration.local import run_training, training_params
    from riskloop.registry.mlflow_registry import version_by_alias
    from riskloop.serving.replay import Replay, day_instances
    from riskloop.training.gate import RETRAIN_GATE_PARAMS

    name = spec.registered_model(s.mlflow.model_name)
    pending_canary = False
    for offset in range(LOOP_DAYS):
        day = HELD_OUT + timedelta(days=1 + offset)
        _prepare_features(s, spec, day)
        rows = day_instances(s, spec, day)
        if pending_canary:
            _canary(s, name, url, rows, day, timeline, cycle=False)
            pending_canary = False
        else:
            t0 = time.perf_counter()
            Replay(url, name, rows, connections=2, batch_size=16, once=True).start().wait()
            console.print(f"{day}: {len(rows)} transactions served in {time.perf_counter() - t0:.0f} s")
        outcome = monitor_day(s, spec.name, day, policy=MonitorPolicy())
        detail = (f"v{outcome.model_version}: {outcome.rows} rows, drift share "
                  f"{'-' if outcome.drift_share is None else f'{outcome.drift_share:.2f}'}"
                  + (f" ({', '.join(outcome.drifted_features[:4])}"
                     f"{', ...' if len(outcome.drifted_features) > 4 else ''})" if outcome.drifted_features else "")
                  + f"; report {outcome.report_html or outcome.summary_path}")
        timeline.append((day.isoformat(), f"monitor: {outcome.action}", detail))
        console.print(f"{day}: monitor says [bold]{outcome.action}[/]")
        for reason in outcome.reasons:
            console.print(f"  - {reason}")
        if outcome.retrain and offset + 1 < LOOP_DAYS:
            before = version_by_alias(s.tracking_uri, name, "challenger")
            r = run_training(s, training_params(day, DAYS, gate_params=RETRAIN_GATE_PARAMS))
            after = version_by_alias(s.tracking_uri, name, "challenger")
            new = after is not None and (before is None or after.version != before.version)
            timeline.append((day.isoformat(), "retrained",
                             f"days {(day - timedelta(days=DAYS - 1)).isoformat()}..{day}: "
                             + ("failed: " + str(r.error) if not r.succeeded else
                                f"v{after.version} passed the gate" if new and after else "gated out")))
            pending_canary = r.succeeded and new


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
