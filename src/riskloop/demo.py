"""`make run`: the main job on one machine, start to finish: the whole loop, every step a pipeline under kfp.local.

1. a clean state dir (unless ``--keep``), 35 days of synthetic transactions with a
   covariate shift from day 32 on (days before it are identical to a drift-free run);
2. the training pipeline on the first 20 days: the model becomes ``champion``;
3. the same pipeline on days 1-30, gated against that champion on the same
   test window: on a pass it becomes ``challenger``;
4. delivery: the feature pipeline loads the online store for day 31; ``riskloop serve``
   follows the deployment record with the champion; day 31 (never trained on) is replayed
   through the server over HTTP as live traffic while the delivery pipeline canaries the
   challenger (refused if unapproved), steps its share from 20 % to 50 % and promotes or
   rolls back, with its reasons;
5. the loop: days 32-35: the feature pipeline for the day, the day served, then the
   monitoring pipeline (drift and decay of the champion; on ``retrain`` its branch runs
   the training pipeline on the 30 days up to that day); a passing candidate goes through
   the delivery pipeline on the next day's traffic;
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

from riskloop.settings import Settings, disable_telemetry, env_var

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
    parser = argparse.ArgumentParser(
        prog="make run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="keep the existing .riskloop/ state")
    parser.add_argument("--cards", type=int, default=3000, help="synthetic cards (default 3000)")
    args = parser.parse_args(argv)
    disable_telemetry()
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
    paths = write_partitions(
        GeneratorParams(
            days=TOTAL_DAYS,
            start=START,
            n_cards=args.cards,
            n_merchants=600,
            scenario=Scenario.covariate_shift,
            drift_day=DAYS + 1,
        ),
        spec.source_path(s.shared),
    )
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
        console.print(
            f"[red]no champion to serve: approval is required, and version "
            f"{waiting.version if waiting else '?'} waits for it as challenger. Approve it (`riskloop "
            "approve N --by NAME --note ...`), promote it (`riskloop canary promote`), then run "
            "`make run` again with --keep"
        )
        return 2
    timeline: list[tuple[str, str, str]] = []
    console.rule("[bold]4/5 delivery: the feature pipeline, then the challenger canaried on live traffic (day 31)")
    _features_for(s, spec, HELD_OUT, days_back=30)  # the online store's first load: every row of the 30 days
    with served(s, spec) as url:
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
        table.add_row(
            v.version,
            ", ".join(v.aliases) or "-",
            info["params"].get("cutoff_date", "?"),
            f"{m.get('roc_auc', float('nan')):.4f}",
            f"{m.get('pr_auc', float('nan')):.4f}",
            f"{m.get('recall_at_fpr', float('nan')):.4f}",
            f"{m.get('brier', float('nan')):.4f}",
            v.tags.get("gate_result", "?")[:60],
            v.run_id[:12],
        )
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
    env = {**os.environ, env_var("state_dir"): str(s.root)}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "riskloop.cli", "serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
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


def _features_for(s: Settings, spec: Any, day: date, *, days_back: int) -> None:
    """The feature pipeline for the day before ``day``: offline tables from its history, the online store loaded
    up to ``day``'s start (``days_back`` days of rows: all 30 the first time, then the pipeline's daily 3)."""
    from riskloop.orchestration.local import run_features

    r = run_features(s, day - timedelta(days=1), spec=spec.name, days_back=days_back)
    if not r.succeeded:
        raise RuntimeError(f"the feature pipeline for {day} failed: {r.error}")
    console.print(f"{day}: feature pipeline in {r.seconds:.0f} s")


def _canary(
    s: Settings,
    spec: Any,
    url: str,
    rows: list[dict[str, Any]],
    day: date,
    timeline: list[tuple[str, str, str]],
    *,
    cycle: bool,
) -> str:
    """Run the delivery pipeline on the ``challenger`` alias while ``rows`` are replayed as live traffic."""
    from riskloop.audit.log import open_audit_log
    from riskloop.delivery import rollout
    from riskloop.orchestration.local import run_delivery
    from riskloop.registry.mlflow_registry import version_by_alias
    from riskloop.serving.replay import Replay

    name = spec.registered_model(s.mlflow.model_name)
    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    head = log.head()
    since = head.seq if head is not None else -1
    before = rollout.current(s, name)
    challenger = version_by_alias(s.tracking_uri, name, "challenger")
    console.print(
        f"delivery pipeline: challenger v{challenger.version if challenger else '?'} canaried at "
        f"{CANARY_STEPS[0]}% then {CANARY_STEPS[1]}% while {len(rows)} transactions of {day} are replayed "
        "over HTTP"
    )
    replay = Replay(url, name, rows, connections=2, once=not cycle).start()
    try:
        run = run_delivery(
            s,
            server_url=url,
            spec=spec.name,
            challenger_alias="challenger",
            first_percent=CANARY_STEPS[0],
            second_percent=CANARY_STEPS[1],
            interval_seconds=CANARY_INTERVAL_SECONDS,
            max_intervals=CANARY_MAX_INTERVALS,
            policy={"min_requests": 100, "min_instances": 100},
        )
    finally:
        if cycle:
            replay.stop()
        else:
            replay.wait()  # the rest of the day is served too: the monitor reads the whole day
    events = [e for e in log.events() if e.seq > since]
    table = Table(title=f"canary analysis, {CANARY_INTERVAL_SECONDS:g} s intervals (pairs: champion / challenger)")
    for col in ("canary %", "verdict", "requests", "error rate", "p99 ms", "PSI", "alert rate"):
        table.add_column(col)
    last: dict[str, Any] = {}
    for e in events:
        if e.event == "canary_verdict":
            last = e.details["verdict"]
            m = last["measures"]

            def pair(key: str, fmt: str = "{:.3g}", m: dict[str, float] = m) -> str:
                nan = float("nan")
                return f"{fmt.format(m.get(key + '_champion', nan))} / {fmt.format(m.get(key + '_challenger', nan))}"

            table.add_row(
                f"{e.details['canary_percent']}%",
                last["decision"],
                pair("requests", "{:.0f}"),
                pair("error_rate"),
                f"{m.get('p99_champion_seconds', float('nan')) * 1000:.1f} / "
                f"{m.get('p99_challenger_seconds', float('nan')) * 1000:.1f}",
                f"{m.get('psi', float('nan')):.3f}",
                pair("alert_rate"),
            )
    refused = [e for e in events if e.event == "approval_refused"]
    after = rollout.current(s, name)
    champion = after.champion_version if after else "?"
    if not run.succeeded:
        what = (
            f"promotion refused: {refused[-1].details.get('required_because')}"
            if refused
            else f"delivery pipeline failed: {run.error}"
        )
        console.print(f"[red]{what}")
        timeline.append(
            (day.isoformat(), "promotion refused" if refused else "delivery failed", f"{what}; champion is v{champion}")
        )
        return f"{what}; champion is still v{champion}"
    console.print(table)
    reasons = last.get("reasons", [])
    for reason in reasons:
        console.print(f"  - {reason}")
    if after is not None and after.challenger_version is not None:
        outcome = "undecided"
    elif before is not None and after is not None and after.champion_version != before.champion_version:
        outcome = "promoted"
    else:
        outcome = "rolled back"
    why = "; ".join(r for r in reasons if "FAIL" in r or "inconclusive" in r)
    timeline.append((day.isoformat(), outcome, f"champion is v{champion}" + (f" ({why})" if why else "")))
    return f"{outcome} in {run.seconds:.0f} s; champion is now v{champion}"


def deliver(s: Settings, spec: Any, url: str, timeline: list[tuple[str, str, str]]) -> str | None:
    """Canary the challenger on day 31's traffic, promote or roll back. Returns the outcome."""
    from riskloop.registry.mlflow_registry import version_by_alias
    from riskloop.serving.replay import day_instances

    name = spec.registered_model(s.mlflow.model_name)
    champion = version_by_alias(s.tracking_uri, name, "champion")
    challenger = version_by_alias(s.tracking_uri, name, "challenger")
    if champion is None or challenger is None or challenger.version == champion.version:
        console.print("no new challenger passed the gate: nothing to canary")
        timeline.append((HELD_OUT.isoformat(), "no canary", "no new challenger passed the gate"))
        return None
    return _canary(s, spec, url, day_instances(s, spec, HELD_OUT), HELD_OUT, timeline, cycle=True)


def close_the_loop(s: Settings, spec: Any, url: str, timeline: list[tuple[str, str, str]]) -> None:
    """Serve the drifting days; the monitoring pipeline after each; canary what its retrain branch registered."""
    from riskloop.orchestration.local import run_monitoring
    from riskloop.registry.mlflow_registry import version_by_alias
    from riskloop.serving.replay import Replay, day_instances

    name = spec.registered_model(s.mlflow.model_name)
    pending_canary = False
    for offset in range(LOOP_DAYS):
        day = HELD_OUT + timedelta(days=1 + offset)
        _features_for(s, spec, day, days_back=3)
        rows = day_instances(s, spec, day)
        if pending_canary:
            _canary(s, spec, url, rows, day, timeline, cycle=False)
            pending_canary = False
        else:
            t0 = time.perf_counter()
            Replay(url, name, rows, connections=2, batch_size=16, once=True).start().wait()
            console.print(f"{day}: {len(rows)} transactions served in {time.perf_counter() - t0:.0f} s")
        before = version_by_alias(s.tracking_uri, name, "challenger")
        # a candidate is canaried on the next day's traffic, here, not inside the monitoring run with no traffic
        r = run_monitoring(s, day, spec=spec.name, training_days=DAYS, deliver=False)
        summary_path = s.reports_dir / "monitoring" / day.isoformat() / "summary.json"
        if not r.succeeded and not summary_path.is_file():
            timeline.append((day.isoformat(), "monitoring failed", str(r.error)))
            console.print(f"[red]{day}: the monitoring pipeline failed: {r.error}")
            continue
        outcome = json.loads(summary_path.read_text())
        drifted = outcome["drifted_features"]
        share = outcome["drift_share"]
        detail = (
            f"v{outcome['model_version']}: {outcome['rows']} rows, drift share "
            f"{'-' if share is None else f'{share:.2f}'}"
            + (f" ({', '.join(drifted[:4])}{', ...' if len(drifted) > 4 else ''})" if drifted else "")
            + f"; report {outcome['report_html'] or outcome['summary_path']}"
        )
        timeline.append((day.isoformat(), f"monitor: {outcome['action']}", detail))
        console.print(f"{day}: monitoring pipeline in {r.seconds:.0f} s, the monitor says [bold]{outcome['action']}[/]")
        for reason in outcome["reasons"]:
            console.print(f"  - {reason}")
        if outcome["action"] == "retrain":
            after = version_by_alias(s.tracking_uri, name, "challenger")
            new = after is not None and (before is None or after.version != before.version)
            timeline.append(
                (
                    day.isoformat(),
                    "retrained",
                    f"days {(day - timedelta(days=DAYS - 1)).isoformat()}..{day}: "
                    + (
                        "failed: " + str(r.error)
                        if not r.succeeded
                        else f"v{after.version} passed the gate"
                        if new and after
                        else "gated out"
                    ),
                )
            )
            pending_canary = r.succeeded and new and offset + 1 < LOOP_DAYS


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
