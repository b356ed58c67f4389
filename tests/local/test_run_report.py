"""What `riskloop run training` shows for a whole run, checked on the suite's trained run (first_run).

The step lines and the summary are built from the LocalRun kfp.local's run produced: its steps as
kfp.local logged them, their outputs, the log file. The fast failure cases are in
tests/integration/test_cli_run.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from riskloop.cli.pipelines import step_line, training_summary
from riskloop.orchestration.local import LocalRun
from riskloop.registry.mlflow_registry import list_versions
from riskloop.settings import Settings
from tests.local.conftest import params

STEPS = (
    "ingest",
    "validate",
    "build-training-set",
    "train",
    "evaluate",
    "gate",
    "register",
    "model-card",
    "record-run-outcome",
)


def test_a_training_run_reads_as_one_line_per_step_and_a_summary(first_run: LocalRun, local_state: Settings) -> None:
    assert first_run.succeeded, first_run.error
    ran = {st.name: st for st in first_run.steps}
    assert set(STEPS) <= set(ran), list(ran)
    for name in STEPS:
        assert ran[name].succeeded and ran[name].seconds > 0 and ran[name].attempts == 1, ran[name]
        assert re.fullmatch(rf"  ok    {name} +\d+\.\ds", step_line(ran[name])), step_line(ran[name])
    assert list(ran).index("ingest") < list(ran).index("train") < list(ran).index("register")

    rows = training_summary(first_run, local_state, params(16, 16))
    version = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)[0]
    assert rows["registered"] == f"{local_state.mlflow.model_name} v{version.version}"
    assert rows["MLflow run"] == version.run_id
    assert rows["gate"].startswith("PASS: ") and "roc" in rows["gate"].lower()
    assert re.search(r"roc_auc 0\.\d{4}, pr_auc 0\.\d{4}", rows["metrics"]), rows["metrics"]
    assert Path(rows["evaluation report"]).is_file() and Path(rows["model card"]).is_file()
    assert rows["MLflow UI"].startswith(f"mlflow ui --backend-store-uri {local_state.tracking_uri} ")
    assert "error" not in rows and "failed step" not in rows
    assert first_run.log is not None and rows["log"] == str(first_run.log)
    log = first_run.log.read_text()
    assert "Executing task 'train'" in log and "[KFP Executor" in log  # kfp.local's and the steps' own output
