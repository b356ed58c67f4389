"""`make run`: the main job on one machine, start to finish.

1. a clean state dir (unless ``--keep``), 30 days of synthetic transactions;
2. the training pipeline under kfp.local on the first 20 days: the model becomes ``champion``;
3. the same pipeline on all 30 days, gated against that champion on the same
   test window: on a pass it becomes ``challenger``;
4. a summary: runs, versions and aliases, metrics side by side, the gate's
   reasons, where the reports are, how to open the MLflow UI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date, timedelta

from rich.console import Console
from rich.table import Table

from riskloop.settings import Settings

DAYS, FIRST_WINDOW, START = 30, 20, date(2026, 1, 1)
console = Console(width=140)


def _clean(s: Settings) -> None:
    if not s.root.exists():
        return
    for child in s.root.iterdir():
        if child.name == "services":  # the test services' state is not ours to remove
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
    console.rule("[bold]1/3 data")
    paths = write_partitions(GeneratorParams(days=DAYS, start=START, n_cards=args.cards, n_merchants=600),
                             spec.source_path(s.root))
    console.print(f"{len(paths)} daily partitions under {spec.source_path(s.root)}")
    runs = []
    for i, days in enumerate((FIRST_WINDOW, DAYS), start=2):
        end = START + timedelta(days=days - 1)
        console.rule(f"[bold]{i}/3 training pipeline on days 1-{days} (kfp.local)")
        r = run_training(s, training_params(end, days))
        runs.append((days, r))
        console.print(f"{'succeeded' if r.succeeded else '[red]failed'} in {r.seconds:.0f} s")
        if not r.succeeded:
            console.print(f"[red]{r.error}")
            return 1
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
    reports = sorted(s.pipeline_root.rglob("report.html"))
    console.rule("[bold]where things are")
    console.print(f"state dir      {s.root}")
    console.print(f"MLflow         {s.tracking_uri}")
    console.print(f"  open the UI: .venv/bin/mlflow ui --backend-store-uri {s.tracking_uri} --host 127.0.0.1")
    console.print(f"reports        {reports[-1] if reports else '-'} (+ roc/pr/calibration PNGs beside it)")
    console.print(f"audit log      {s.audit_path}  (verify: .venv/bin/riskloop audit verify)")
    console.print(f"total          {time.perf_counter() - t0:.0f} s")
    return 0 if len(versions) >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
