"""The champion/challenger gate: floors, tolerance, reasons, serialisation, params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from riskloop.data.spec import load_spec
from riskloop.errors import TrainingError
from riskloop.training.gate import GateParams, GateResult, decide_gate

PARAMS = GateParams()  # floors 0.80 / 0.20, allowed PR-AUC drop 0.02


def _m(roc_auc: float, pr_auc: float, **more: float) -> dict[str, float]:
    return {"roc_auc": roc_auc, "pr_auc": pr_auc, **more}


def test_defaults() -> None:
    assert (PARAMS.min_roc_auc, PARAMS.min_pr_auc, PARAMS.max_pr_auc_drop) == (
        0.80,
        0.20,
        0.02,
    )


def test_no_champion_passes_on_floors() -> None:
    result = decide_gate(_m(0.91, 0.61), None, PARAMS)
    assert result.passed
    assert result.champion is None and result.champion_version is None
    assert result.summary() == "pass"
    assert len(result.reasons) == 3
    assert result.reasons[0] == "pass: ROC-AUC 0.9100 >= floor 0.8000"
    assert result.reasons[1] == "pass: PR-AUC 0.6100 >= floor 0.2000"
    assert "no champion" in result.reasons[2]


def test_roc_floor_fails() -> None:
    result = decide_gate(_m(0.79, 0.61), None, PARAMS)
    assert not result.passed
    assert result.summary() == "fail: ROC-AUC 0.7900 < floor 0.8000"


def test_pr_floor_fails_even_when_better_than_champion() -> None:
    result = decide_gate(_m(0.90, 0.15), _m(0.85, 0.10), PARAMS, champion_version="3")
    assert not result.passed
    assert result.summary() == "fail: PR-AUC 0.1500 < floor 0.2000"
    assert result.reasons[2].startswith("pass: ")


def test_summary_reports_first_failure() -> None:
    result = decide_gate(_m(0.70, 0.10), None, PARAMS)
    assert [r.split(":")[0] for r in result.reasons] == ["fail", "fail", "pass"]
    assert result.summary() == "fail: ROC-AUC 0.7000 < floor 0.8000"


def test_floors_exactly_at_edge_pass() -> None:
    assert decide_gate(_m(0.80, 0.20), None, PARAMS).passed


def test_better_candidate_passes_and_reason_has_numbers() -> None:
    result = decide_gate(_m(0.93, 0.66), _m(0.92, 0.61), PARAMS, champion_version="4")
    assert result.passed
    assert result.reasons[2] == (
        "pass: PR-AUC 0.6600 >= champion (version 4) PR-AUC 0.6100 "
        "minus allowed drop 0.0200 = 0.5900 (difference +0.0500)"
    )


@pytest.mark.parametrize(
    ("champion_pr", "drop", "candidate_pr"),
    [
        (0.62, 0.02, 0.60),
        (0.7, 0.02, 0.68),
        (0.3, 0.1, 0.2),
        (0.61, 0.0, 0.61),
        (0.45, 0.05, 0.40),
        (0.23, 0.02, 0.21),  # 0.23 - 0.02 rounds to 0.21000000000000002
        (0.17, 0.05, 0.12),
    ],
)
def test_tolerance_edge_passes(champion_pr: float, drop: float, candidate_pr: float) -> None:
    params = GateParams(max_pr_auc_drop=drop, min_pr_auc=0.0)
    result = decide_gate(_m(0.9, candidate_pr), _m(0.9, champion_pr), params)
    assert result.passed, result.reasons


def test_just_beyond_tolerance_fails() -> None:
    result = decide_gate(_m(0.9, 0.5899), _m(0.9, 0.61), PARAMS, champion_version="4")
    assert not result.passed
    assert result.summary() == (
        "fail: PR-AUC 0.5899 < champion (version 4) PR-AUC 0.6100 "
        "minus allowed drop 0.0200 = 0.5900 (difference -0.0201)"
    )


def test_nan_metric_fails_not_passes() -> None:
    result = decide_gate(_m(float("nan"), 0.5), None, PARAMS)
    assert not result.passed
    assert "nan" in result.summary()


def test_champion_roc_auc_is_not_compared() -> None:
    # The comparison is on PR-AUC only; a lower ROC-AUC than the champion is fine.
    assert decide_gate(_m(0.85, 0.60), _m(0.99, 0.60), PARAMS).passed


def test_different_test_windows_are_rejected() -> None:
    with pytest.raises(TrainingError, match="different data") as info:
        decide_gate(_m(0.9, 0.6, n=1000.0), _m(0.9, 0.6, n=999.0), PARAMS)
    assert info.value.fix and "same" not in info.value.what


@pytest.mark.parametrize(
    ("candidate", "champion", "message"),
    [
        ({"roc_auc": 0.9}, None, "candidate metrics lack pr_auc"),
        (_m(0.9, 0.6), {"pr_auc": 0.6}, "champion metrics lack roc_auc"),
        ({"roc_auc": 0.9, "pr_auc": "high"}, None, "not a number"),
        (_m(0.9, 61.0), None, "out of range"),
        ([0.9, 0.6], None, "mapping"),
    ],
)
def test_unusable_metrics_raise(candidate: Any, champion: Any, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        decide_gate(candidate, champion, PARAMS)


def test_champion_version_without_champion_is_rejected() -> None:
    with pytest.raises(TrainingError, match="without champion metrics"):
        decide_gate(_m(0.9, 0.6), None, PARAMS, champion_version="2")


def test_result_keeps_all_metrics_as_floats() -> None:
    result = decide_gate(_m(0.9, 0.6, n=100, positives=10), _m(1, 0.6), PARAMS)
    assert result.candidate == {
        "roc_auc": 0.9,
        "pr_auc": 0.6,
        "n": 100.0,
        "positives": 10.0,
    }
    assert result.champion is not None and type(result.champion["roc_auc"]) is float


@pytest.mark.parametrize("champion", [None, _m(0.9, 0.7)])
def test_round_trip_through_json(champion: dict[str, float] | None) -> None:
    version = None if champion is None else "12"
    result = decide_gate(_m(0.88, 0.64, n=5000.0), champion, PARAMS, champion_version=version)
    back = GateResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result
    assert back.summary() == result.summary()


def test_decision_artifact_carries_the_policy_and_reads_back(tmp_path: Path) -> None:
    """The gate step writes its decision once; register and the model card read this, not a new decision."""
    strict = GateParams(max_pr_auc_drop=0.0)
    result = decide_gate(_m(0.9, 0.6), _m(0.9, 0.61), strict, champion_version="2")
    assert result.policy == strict and not result.passed
    path = tmp_path / "gate" / "decision"
    result.write(path)
    assert GateResult.read(path) == result
    assert json.loads(path.read_text())["policy"]["max_pr_auc_drop"] == 0.0


def test_a_gated_event_recorded_before_the_policy_reads_back_without_one() -> None:
    """The CLI's card command rebuilds the decision from the audit log's ``gated`` event, old ones included."""
    old = {
        "passed": True,
        "reasons": ["pass: x"],
        "candidate": _m(0.9, 0.6),
        "champion": None,
        "champion_version": None,
        "params": {},
    }
    assert GateResult.from_dict(old).policy is None


def test_an_unreadable_decision_is_a_training_error(tmp_path: Path) -> None:
    (tmp_path / "decision").write_text("{not json")
    with pytest.raises(TrainingError, match="gate decision is unreadable"):
        GateResult.read(tmp_path / "decision")
    with pytest.raises(TrainingError, match="unreadable"):
        GateResult.read(tmp_path / "missing")


def test_from_dict_rejects_incomplete_record() -> None:
    with pytest.raises(TrainingError, match="lacks candidate"):
        GateResult.from_dict({"passed": True, "reasons": [], "champion": None})
    with pytest.raises(TrainingError, match="must be a bool"):
        GateResult.from_dict({"passed": "yes", "reasons": [], "candidate": {}, "champion": None})


def test_params_reject_unknown_keys() -> None:
    with pytest.raises(pydantic.ValidationError, match="extra"):
        GateParams.model_validate({"min_roc_auc": 0.8, "min_pr_auc_typo": 0.3})


@pytest.mark.parametrize("field", ["min_roc_auc", "min_pr_auc", "max_pr_auc_drop"])
@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan")])
def test_params_reject_out_of_range(field: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError):
        GateParams.model_validate({field: value})


def test_params_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        setattr(PARAMS, "min_roc_auc", 0.5)  # noqa: B010 -- the assignment itself is under test


def test_the_floors_come_from_the_spec_policy_a_credit_model_is_not_held_to_the_fraud_floors() -> None:
    scorecard = _m(0.74, 0.52)  # a fair credit scorecard (30 % bad: a random model's PR-AUC is 0.30)
    fraud = decide_gate(scorecard, None, load_spec("synthetic-fraud").policy.gate)
    assert not fraud.passed and fraud.reasons[0] == "fail: ROC-AUC 0.7400 < floor 0.8000"
    credit = decide_gate(scorecard, None, load_spec("german-credit").policy.gate)
    assert credit.passed and credit.reasons[:2] == (
        "pass: ROC-AUC 0.7400 >= floor 0.6500",
        "pass: PR-AUC 0.5200 >= floor 0.4000",
    )
    assert credit.policy == load_spec("german-credit").policy.gate
