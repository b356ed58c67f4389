"""The decision policy of a spec: the threshold rule and the gate floors, with defaults by use."""

from __future__ import annotations

import pydantic
import pytest

from riskloop.data.policy import GateParams, Policy, ThresholdRule
from riskloop.data.spec import load_spec, parse_spec, read_spec_source
from riskloop.errors import ConfigError


def test_fraud_is_the_default_use_a_1_percent_fpr_and_the_fraud_floors() -> None:
    policy = Policy()
    assert policy.use == "fraud"
    assert (policy.threshold.kind, policy.threshold.value) == ("target_fpr", 0.01)
    assert policy.gate == GateParams() and (policy.gate.min_roc_auc, policy.gate.min_pr_auc) == (0.80, 0.20)


def test_credit_defaults_to_a_cost_ratio_of_5_and_the_credit_floors() -> None:
    policy = Policy(use="credit")
    assert (policy.threshold.kind, policy.threshold.value) == ("cost_ratio", 5.0)
    assert (policy.gate.min_roc_auc, policy.gate.min_pr_auc, policy.gate.max_pr_auc_drop) == (0.65, 0.40, 0.02)
    assert "cost ratio 5:1" in policy.threshold.describe()


def test_a_given_rule_replaces_the_default_and_given_gate_fields_keep_the_others() -> None:
    policy = Policy.model_validate({"use": "credit", "threshold": {"flag_rate": 0.1}, "gate": {"min_roc_auc": 0.7}})
    assert (policy.threshold.kind, policy.threshold.value) == ("flag_rate", 0.1)
    assert (policy.gate.min_roc_auc, policy.gate.min_pr_auc) == (0.7, 0.40)
    assert Policy.model_validate(policy.model_dump()) == policy  # what a recorded policy reads back as


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({}, "exactly one of target_fpr, flag_rate, cost_ratio"),
        ({"target_fpr": 0.01, "cost_ratio": 5}, "not target_fpr and cost_ratio"),
        ({"cost_ratio": 0}, "greater than 0"),
        ({"flag_rate": 1.5}, "less than 1"),
        ({"ratio": 5}, "Extra inputs"),
    ],
)
def test_a_threshold_rule_is_exactly_one_valid_rule(rule: dict[str, float], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        ThresholdRule.model_validate(rule)


def test_shipped_specs_fraud_keeps_the_1_percent_fpr_and_german_credit_gets_the_credit_policy() -> None:
    for name in ("synthetic-fraud", "ulb-creditcard"):
        assert load_spec(name).policy == Policy(), name
    credit = load_spec("german-credit").policy
    assert credit.use == "credit" and credit.threshold == ThresholdRule(cost_ratio=5)
    assert credit == Policy(use="credit")  # the shipped spec spells out the documented credit defaults


def test_a_bad_policy_in_a_spec_is_a_config_error_naming_the_field() -> None:
    text = read_spec_source("german-credit").text.replace("use: credit", "use: lending")
    with pytest.raises(ConfigError, match=r"policy\.use: Input should be 'fraud' or 'credit'"):
        parse_spec(text, where="test")
    text = read_spec_source("german-credit").text.replace("cost_ratio: 5", "cost_ratio: 5\n    target_fpr: 0.01")
    with pytest.raises(ConfigError, match=r"policy\.threshold.*exactly one"):
        parse_spec(text, where="test")
