"""Group fairness metrics and the gate's fairness thresholds, with a deliberately biased model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskloop.errors import TrainingError
from riskloop.model import LABEL, SPLIT, FeatureSpec
from riskloop.training.evaluate import evaluate_scores
from riskloop.training.fairness import fairness_metrics, fairness_report, fairness_reports
from riskloop.training.gate import GateParams, decide_gate
from riskloop.training.train import TrainParams, train_model

PARAMS = TrainParams(
    n_estimators=40, max_depth=3, learning_rate=0.3, early_stopping_rounds=10, target_fpr=0.2, seed=1, nthread=1
)


def test_metrics_by_hand() -> None:
    groups = pd.Series(["a"] * 4 + ["b"] * 4)
    y = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    flagged = np.array([False, False, False, True, True, True, True, False])
    r = fairness_report(groups, y, flagged, attribute="g", min_group_size=1)
    a, b = r.groups
    assert (a.selection_rate, a.true_favourable_rate) == (0.75, 1.0)
    assert (b.selection_rate, b.true_favourable_rate) == (0.25, 0.0)
    assert r.demographic_parity_difference == 0.5 and r.equal_opportunity_difference == 1.0
    # a group below the minimum size is reported but does not enter the differences
    small = fairness_report(groups, y, flagged, attribute="g", min_group_size=5)
    assert small.demographic_parity_difference == 0.0 and not any(g.compared for g in small.groups)
    with pytest.raises(TrainingError, match="not in the scored frame"):
        fairness_reports(pd.DataFrame({"x": [1]}), y[:1], flagged[:1], ["sex"])


def applicants(n: int, seed: int, *, biased_labels: bool) -> pd.DataFrame:
    """Credit applicants whose risk depends on income only; with ``biased_labels`` the recorded labels also
    mark many of group B bad whatever their income (a biased history a model can learn)."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], size=n)
    income = rng.normal(0, 1, size=n)
    bad = rng.random(n) < 1 / (1 + np.exp(2.0 * income + 1.0))
    if biased_labels:
        bad |= (sex == "female") & (rng.random(n) < 0.5)
    split = rng.choice(["train", "validation", "test"], size=n, p=[0.6, 0.2, 0.2])
    return pd.DataFrame(
        {
            "income": income,
            "sex_code": (sex == "female").astype(float),
            "sex": sex,
            LABEL: bad.astype(int),
            SPLIT: split,
        }
    )


def gate_on(frame: pd.DataFrame, features: tuple[str, ...], tmp: Path, params: GateParams) -> tuple[bool, list[str]]:
    bundle = train_model(frame, FeatureSpec(features, {}), PARAMS, tmp, meta={})
    test = frame[frame[SPLIT] == "test"]
    scores = bundle.predict_frame(test)
    y = test[LABEL].to_numpy()
    metrics = evaluate_scores(y, scores, threshold=bundle.threshold, target_fpr=0.2).metrics()
    metrics.update(fairness_metrics(fairness_reports(test, y, scores >= bundle.threshold, ["sex"])))
    result = decide_gate(metrics, None, params)
    return result.passed, list(result.reasons)


FAIR_GATE = GateParams(
    min_roc_auc=0.6, min_pr_auc=0.2, max_demographic_parity_difference=0.1, max_equal_opportunity_difference=0.1
)


def test_a_biased_model_fails_the_fairness_gate(tmp_path: Path) -> None:
    biased = applicants(4000, 0, biased_labels=True)
    passed, reasons = gate_on(biased, ("income", "sex_code"), tmp_path / "biased", FAIR_GATE)
    assert not passed
    failing = [r for r in reasons if r.startswith("fail:")]
    assert any("demographic parity difference" in r and "(sex)" in r for r in failing), reasons
    assert any("equal opportunity difference" in r for r in failing), reasons
    # the same model passes a gate without fairness limits (off by default, as for fraud)
    passed, _ = gate_on(
        biased, ("income", "sex_code"), tmp_path / "biased2", GateParams(min_roc_auc=0.6, min_pr_auc=0.2)
    )
    assert passed


def test_a_fair_model_passes_the_fairness_gate(tmp_path: Path) -> None:
    passed, reasons = gate_on(applicants(4000, 0, biased_labels=False), ("income",), tmp_path / "fair", FAIR_GATE)
    assert passed, reasons
    assert any(r.startswith("pass: demographic parity difference") for r in reasons)


def test_a_fairness_limit_without_fairness_metrics_fails() -> None:
    result = decide_gate({"roc_auc": 0.9, "pr_auc": 0.5}, None, GateParams(max_demographic_parity_difference=0.1))
    assert not result.passed and "no protected attributes" in result.summary()


def test_run_training_rejects_bad_gate_thresholds_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from riskloop.cli import app

    env = {"RISKLOOP_STATE_DIR": str(tmp_path), "COLUMNS": "200"}
    for bad, message in (
        ('{"max_demographic_parity_difference": 2}', "less than or equal to 1"),
        ('{"max_dpd": 0.1}', "Extra inputs are not permitted"),
        ("0.1,", "Invalid JSON"),
    ):
        r = CliRunner().invoke(app, ["run", "training", "--spec", "german-credit", "--gate", bad], env=env)
        assert r.exit_code == 2 and "--gate is not valid gate thresholds" in r.output and message in r.output, r.output
