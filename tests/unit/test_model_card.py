"""The model card library on a toy model: sections, confidence intervals, slices, importance, calibration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from riskloop.audit.card import build_model_card, calibration, global_importance, metrics_with_ci
from riskloop.data.spec import load_spec
from riskloop.model import LABEL, SPLIT
from riskloop.training.train import train_model
from tests.unit.test_train import META, PARAMS, toy_features, toy_frame


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Any]:
    frame = toy_frame()
    return frame, train_model(frame, toy_features(), PARAMS, tmp_path_factory.mktemp("m"), meta=META)


def test_card_of_a_toy_model(toy: tuple[pd.DataFrame, Any]) -> None:
    frame, bundle = toy
    card = build_model_card(
        load_spec("synthetic-fraud"),
        frame,
        bundle,
        model_name="fraud-detector",
        version="3",
        run_id="r1",
        gate_result={"passed": False, "reasons": ["fail: PR-AUC 0.1 < floor 0.2"]},
        approval_required=(True, "RISKLOOP_AUDIT__REQUIRE_APPROVAL is on"),
    )
    md = card.markdown
    assert md.startswith("# Model card: fraud-detector version 3")
    assert "**failed**" in md and "fail: PR-AUC 0.1 < floor 0.2" in md
    assert "Approval before promotion: required (RISKLOOP_AUDIT__REQUIRE_APPROVAL is on)." in md
    assert "Not analysed: the dataset spec names no protected attributes." in md
    for m in card.data["metrics"]:
        assert m["ci_low"] <= m["value"] <= m["ci_high"], m
    assert {x["feature"] for x in card.data["importance"]} == set(bundle.features.names)
    assert abs(sum(x["share"] for x in card.data["importance"]) - 1) < 1e-6
    assert "<table>" in card.html and "<script" not in card.html


def test_importance_is_shap_contributions_that_sum_to_the_margin(toy: tuple[pd.DataFrame, Any]) -> None:
    import xgboost as xgb

    from riskloop.model import matrix

    frame, bundle = toy
    test = frame[frame[SPLIT] == "test"].head(50)
    dm = xgb.DMatrix(
        matrix(test, bundle.features),
        feature_names=list(bundle.features.names),
        feature_types=bundle.features.types,
        enable_categorical=True,
    )
    contribs = bundle.booster.predict(dm, pred_contribs=True)
    margin = bundle.booster.predict(dm, output_margin=True)
    assert np.allclose(contribs.sum(axis=1), margin, atol=1e-4)
    top = global_importance(bundle, test)
    assert top[0]["mean_abs_shap"] == max(x["mean_abs_shap"] for x in top)


def test_calibration_and_ci_by_hand() -> None:
    y = np.array([0, 0, 1, 1] * 25)
    s = np.array([0.05, 0.15, 0.85, 0.95] * 25)
    cal = calibration(y, s)
    assert [b["n"] for b in cal["bins"]] == [25, 25, 25, 25]
    assert abs(cal["ece"] - 0.1) < 1e-9
    metrics = {m["metric"]: m for m in metrics_with_ci(y, s, 0.5, n_boot=20)}
    assert metrics["ROC-AUC"]["value"] == 1.0 and metrics["ROC-AUC"]["ci_low"] == 1.0
    assert pd.notna(metrics["Brier"]["value"]) and LABEL == "label"
