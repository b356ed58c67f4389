"""The training pipeline's model card (kfp.local): a Markdown and HTML artifact, also logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from riskloop.orchestration.local import LocalRun
from riskloop.registry.mlflow_registry import list_versions, run_info
from riskloop.settings import Settings

SECTIONS = (
    "## Intended use",
    "## Out of scope",
    "## Training data",
    "## Metrics on the test split (95 % bootstrap CI)",
    "## Metrics by slice",
    "### channel",
    "### country",
    "### merchant_category",
    "## Global feature importance",
    "## Calibration",
    "## Fairness",
    "## Known limitations",
    "## Gate",
    "## Canary and promotion",
    "## Approval",
)


def test_the_pipeline_writes_a_model_card_per_registered_version(first_run: LocalRun, local_state: Settings) -> None:
    assert first_run.succeeded, first_run.error
    v = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)[0]
    folder = Path(urlparse(run_info(local_state.tracking_uri, v.run_id)["artifact_uri"]).path) / "model_card"
    card = (folder / "model_card.md").read_text()
    assert card.startswith(f"# Model card: {local_state.mlflow.model_name} version {v.version}\n")
    for section in SECTIONS:
        assert section in card, section
    assert v.tags["model_sha256"] in card and v.run_id in card
    assert "**passed**" in card and "Not deployed as a canary yet." in card and "No approval recorded." in card
    page = (folder / "model_card.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page and "Calibration</h2>" in page
    # the KFP artifacts: a Markdown and an HTML output of the model_card task under the local pipeline root
    written = sorted(p.name for p in local_state.pipeline_root.rglob("*") if p.parent.name == "model-card")
    assert {"card", "card_html"} <= set(written), written


def test_card_command_brings_the_card_up_to_date_with_approvals(first_run: LocalRun, local_state: Settings) -> None:
    from typer.testing import CliRunner

    from riskloop.audit.approval import approve
    from riskloop.cli import app

    assert first_run.succeeded, first_run.error
    v = list_versions(local_state.tracking_uri, local_state.mlflow.model_name)[0]
    approve(local_state, local_state.mlflow.model_name, v.version, by="Jane Doe", note="card reviewed")
    env = {"RISKLOOP_STATE_DIR": str(local_state.root), "COLUMNS": "200"}
    r = CliRunner().invoke(app, ["card", v.version, "--out", str(local_state.root / "card")], env=env)
    assert r.exit_code == 0, r.output
    card = (local_state.root / "card" / "model_card.md").read_text()
    assert "| approved | Jane Doe | card reviewed |" in card and "**passed**" in card
    r = CliRunner().invoke(app, ["card", "999"], env=env)
    assert r.exit_code == 2 and "version 999 not found" in r.output, r.output
