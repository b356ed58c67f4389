"""A dataset riskloop has never seen, end to end: a CSV with text labels, missing values, mixed types and no time
axis is landed (`riskloop data land`) and trained on (`riskloop run training`) through the real pipeline under
kfp.local, as a user runs them.

Small on purpose (600 rows, a few features, a strong signal): the pipeline's own steps are the cost.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RISKLOOP = [sys.executable, "-m", "riskloop.cli"]

SPEC = """
name: byo-loans
description: A loan book brought as one CSV file (no time axis).
model_name: byo-loan-scorer
source:
  kind: csv            # landed by `riskloop data land loans.csv --spec byo-loans.yaml`
  path: data/byo-loans
id_column: row_id      # not in the file: landing numbers the rows
timestamp_column: null
label: {column: status, positive: [bad]}
features:
  source: raw
  raw_columns: [age, income, debt_ratio, housing, branch]
  categorical: [housing, branch]
split: {kind: stratified, validation_fraction: 0.2, test_fraction: 0.25}
contract:
  max_bad_fraction: 0.0
  columns:
    row_id: {type: integer, unique: true}
    age: {type: integer, nullable: true, min: 18}
    income: {type: float, nullable: true, min: 0}
    debt_ratio: {type: float, min: 0}
    housing: {type: category, allowed: [own, rent, free], nullable: true}
    branch: {type: category, allowed: ["01", "02", "10"]}
    purpose: {type: string}
    status: {type: category, allowed: [good, bad]}
"""


def loans(n: int = 600, seed: int = 11) -> pd.DataFrame:
    """Loans whose risk rises with the debt ratio and renting, falls with income; labels good/bad as text."""
    rng = np.random.default_rng(seed)
    debt = rng.uniform(0, 1, n)
    income = rng.gamma(3.0, 1000.0, n)
    housing = rng.choice(["own", "rent", "free"], n)
    logit = -1.0 + 10.0 * (debt - 0.5) - 0.001 * (income - 3000) + 2.0 * (housing == "rent")
    bad = rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 75, n).astype("float64"),
            "income": income.round(2),
            "debt_ratio": debt.round(4),
            "housing": housing.astype(object),
            "branch": rng.choice(["01", "02", "10"], n),
            "purpose": rng.choice(["car", "furniture, equipment", "education"], n),
            "status": np.where(bad, "bad", "good"),
        }
    )
    frame.loc[::6, "age"] = np.nan
    frame.loc[::8, "income"] = np.nan
    frame.loc[::11, "housing"] = None
    return frame


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RISKLOOP_STATE_DIR": str(state), "COLUMNS": "200"}
    return subprocess.run([*RISKLOOP, *args], capture_output=True, text=True, env=env, timeout=600)


def test_a_csv_without_a_time_axis_is_landed_and_trained_on_as_a_whole_snapshot(tmp_path: Path) -> None:
    state, spec = tmp_path / "state", tmp_path / "byo-loans.yaml"
    spec.write_text(SPEC)
    data = tmp_path / "loans export.csv"
    frame = loans()
    frame.to_csv(data, index=False)

    landed = cli("data", "land", str(data), "--spec", str(spec), state=state)
    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert "one snapshot (no time column)" in landed.stdout and "600" in landed.stdout

    refused = cli("run", "training", "--spec", str(spec), "--days", "7", state=state)
    assert refused.returncode == 2 and "has no time column" in refused.stderr + refused.stdout

    run = cli("run", "training", "--spec", str(spec), state=state)
    shown = run.stdout + run.stderr
    assert run.returncode == 0, shown
    assert "training byo-loans on the whole snapshot" in shown
    for step in ("ingest", "validate", "build-training-set", "train", "register"):
        assert re.search(rf"ok +{step} ", shown), shown
    assert "byo-loan-scorer v1" in shown, shown

    from riskloop.audit.log import open_audit_log
    from riskloop.registry.mlflow_registry import get_version
    from riskloop.settings import Settings

    s = Settings(state_dir=state)
    assert get_version(s.tracking_uri, "byo-loan-scorer", "1").tags["dataset_spec"] == "byo-loans"
    # the pipeline's validate step saw the whole snapshot, label as 0/1 under the landed contract: no row lost
    log = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    (validated,) = [e for e in log.events() if e.event == "validated" and e.ids.get("dataset") == "byo-loans"]
    assert validated.details["rows"] == validated.details["valid"] == len(frame)
