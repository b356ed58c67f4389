"""On kind: the chart is up, the pipelines are published, training runs, a canary is deployed, promoted, rolled back.

Needs Docker, kind, helm and kubectl (see conftest.py); `make test-e2e`. Not run where it was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from riskloop.version import image_tag
from tests.e2e.conftest import REPO, kubectl, port_forward

pytestmark = pytest.mark.usefixtures("cluster")
MODELS = "riskloop-models"
SERVICE = "fraud-detector"


def riskloop(*args: str, env: dict[str, str]) -> str:
    r = subprocess.run([sys.executable, "-m", "riskloop.cli", *args], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=900, cwd=REPO)
    assert r.returncode == 0, f"riskloop {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def isvc() -> dict[str, Any]:
    return json.loads(kubectl("get", "inferenceservice", SERVICE, "-n", MODELS, "-o", "json"))


def wait_ready(timeout_seconds: float = 600) -> dict[str, Any]:
    kubectl("wait", f"inferenceservice/{SERVICE}", "-n", MODELS, "--for=condition=Ready",
            f"--timeout={int(timeout_seconds)}s", timeout=int(timeout_seconds) + 30)
    return isvc()


def test_helm_test_passes() -> None:
    subprocess.run(["helm", "test", "riskloop", "-n", "riskloop", "--timeout", "5m"], check=True, timeout=400)


def test_publish_job_uploaded_every_pipeline_at_the_image_tag() -> None:
    from kfp import Client

    with port_forward("kubeflow", "ml-pipeline", 8888) as url:
        client = Client(host=url)
        for stem in ("training", "features", "batch_scoring", "delivery", "monitoring"):
            pid = client.get_pipeline_id(f"riskloop-{stem}")
            assert pid, stem
            versions = client.list_pipeline_versions(pid, page_size=100).pipeline_versions or []
            assert image_tag() in {v.display_name for v in versions}, stem
        experiment = client.get_experiment(experiment_name="riskloop")
        runs = client.list_recurring_runs(experiment_id=experiment.experiment_id, page_size=100).recurring_runs
        assert {"feature-materialization", "monitoring"} <= {r.display_name for r in runs or []}


def _train(client: Any, kfp_url: str, seed: int) -> None:
    """One training run of the published version (riskloop cluster run), waited for."""
    out = riskloop("cluster", "run", "--kfp-host", kfp_url, "--pipeline", "training", "--pipelines-dir",
                   str(REPO / "build/pipelines"), "--param", f"seed={seed}", env={})
    run_id = out.split("started run ", 1)[1].split()[0]
    result = client.wait_for_run_completion(run_id, timeout=3600)
    assert result.state == "SUCCEEDED", f"training run {run_id} ended {result.state}"


def test_train_then_canary_promote_and_roll_back(tmp_path: Path) -> None:
    from kfp import Client

    subprocess.run([sys.executable, "-m", "riskloop.cli", "compile", "--out", str(REPO / "build/pipelines")],
                   check=True, timeout=300, cwd=REPO)
    with port_forward("kubeflow", "ml-pipeline", 8888) as kfp_url, \
            port_forward("riskloop", "riskloop-mlflow", 5000) as mlflow_url:
        client = Client(host=kfp_url)
        _train(client, kfp_url, seed=1)  # champion (the first run of make deploy may still be going: this one is ours)
        _train(client, kfp_url, seed=2)  # a gated challenger
        env = {"RISKLOOP_DELIVERY__TARGET": "kubernetes", "RISKLOOP_DELIVERY__NAMESPACE": MODELS,
               "RISKLOOP_MLFLOW__TRACKING_URI": mlflow_url, "RISKLOOP_STATE_DIR": str(tmp_path / "state")}
        riskloop("canary", "deploy", "--alias", "challenger", "--canary-percent", "20", env=env)
        spec = wait_ready()["spec"]["predictor"]
        assert spec.get("canaryTrafficPercent") == 20
        riskloop("canary", "promote", "--reason", "e2e", env=env)
        time.sleep(5)
        assert wait_ready()["spec"]["predictor"].get("canaryTrafficPercent") in (None, 100)
        riskloop("canary", "restore", "--reason", "e2e rollback after promotion", env=env)
        status = wait_ready()
        assert status["status"]["conditions"], "the rolled-back service reports its conditions"
