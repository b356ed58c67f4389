"""riskloop reproduce on a version trained by the pipeline under kfp.local: the same data, the same model bytes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from riskloop.orchestration.local import LocalRun
from riskloop.registry.mlflow_registry import list_versions
from riskloop.settings import Settings


def test_reproduce_rebuilds_a_byte_identical_model(first_run: LocalRun, local_state: Settings) -> None:
    from riskloop.cli import app

    assert first_run.succeeded, first_run.error
    v = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)[0]
    env = {"RISKLOOP_STATE_DIR": str(local_state.root), "COLUMNS": "200"}
    r = CliRunner().invoke(app, ["reproduce", v.version, "--json"], env=env)
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{") :])
    assert report["data_identical"] and report["model_identical"], report
    assert report["data_sha256_rebuilt"] == v.tags["data_sha256"]
    assert report["model_sha256_rebuilt"] == v.tags["model_sha256"]
    assert report["recipe"]["spec"] == "synthetic-fraud" and report["recipe"]["source_days"] == [
        "2026-01-01",
        "2026-01-16",
    ]


def test_reproduce_says_when_it_cannot(first_run: LocalRun, local_state: Settings) -> None:
    from riskloop.cli import app

    env = {"RISKLOOP_STATE_DIR": str(local_state.root), "COLUMNS": "200"}
    r = CliRunner().invoke(app, ["reproduce", "999"], env=env)
    assert r.exit_code == 2 and "version 999 not found" in r.output, r.output
