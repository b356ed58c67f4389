"""The decision policy of a dataset: how the threshold is chosen and what the gate requires.

A fraud model and a credit model are judged differently. Fraud is rare and every flag costs an analyst's
time, so the threshold holds the false-positive rate at 1 %. In credit scoring a quarter of the applicants may
be bad and a missed bad costs far more than a wrongly declined good, so the threshold minimises the expected cost
on validation data (a 1 % FPR there lands at a recall near 0.13). The spec says its use (``policy.use``); the use
gives the defaults, and any field given in ``policy`` replaces its default:

==========  =====================================  =====================================
use         threshold                              gate floors
==========  =====================================  =====================================
``fraud``   ``target_fpr: 0.01``                   ROC-AUC 0.80, PR-AUC 0.20
``credit``  ``cost_ratio: 5`` (a missed bad costs   ROC-AUC 0.65, PR-AUC 0.40
            as much as 5 wrongly declined goods)
==========  =====================================  =====================================

A spec without ``policy`` is a fraud spec (the shipped fraud specs and every spec written before policies).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Use = Literal["fraud", "credit"]
RuleKind = Literal["target_fpr", "flag_rate", "cost_ratio"]


class GateParams(BaseModel):
    """Thresholds of the champion/challenger gate (:mod:`riskloop.training.gate`); all are absolute values in
    ``[0, 1]``. They live with the policy because a dataset's spec sets them; the gate applies them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_roc_auc: float = Field(default=0.80, ge=0.0, le=1.0, description="ROC-AUC floor")
    min_pr_auc: float = Field(
        default=0.20,
        ge=0.0,
        le=1.0,
        description="PR-AUC floor (a random model's PR-AUC is the positive rate: set it above that)",
    )
    max_pr_auc_drop: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="how much lower than the champion's the candidate's PR-AUC may be",
    )
    max_demographic_parity_difference: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="fairness: largest allowed gap in selection rate between groups of a protected attribute "
        "(training.fairness); None = not checked (the default, e.g. for fraud)",
    )
    max_equal_opportunity_difference: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="fairness: largest allowed gap in the favourable rate of deserving rows between groups; "
        "None = not checked",
    )


class ThresholdRule(BaseModel):
    """How the decision threshold is chosen on the validation split: exactly one of the three fields.

    A row is flagged when its score reaches the threshold; the threshold chosen on validation is then used
    unchanged on the test window and in serving.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_fpr: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="flag at most this share of the negatives (false-positive rate), e.g. 0.01 for fraud",
    )
    flag_rate: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="flag at most this share of all cases, e.g. 0.05 when a review team can take 5 %",
    )
    cost_ratio: float | None = Field(
        default=None,
        gt=0.0,
        description="cost of a missed positive / cost of a wrongly flagged negative: the threshold minimises "
        "cost_ratio x missed positives + wrongly flagged negatives on validation (credit: 5)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ThresholdRule:
        given = [k for k in ("target_fpr", "flag_rate", "cost_ratio") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "policy.threshold takes exactly one of target_fpr, flag_rate, cost_ratio"
                + (f", not {' and '.join(given)}" if given else "")
            )
        return self

    @property
    def kind(self) -> RuleKind:
        """Which rule: ``target_fpr``, ``flag_rate`` or ``cost_ratio``."""
        if self.target_fpr is not None:
            return "target_fpr"
        return "flag_rate" if self.flag_rate is not None else "cost_ratio"

    @property
    def value(self) -> float:
        """The rule's number (the target FPR, the flag rate or the cost ratio)."""
        value = getattr(self, self.kind)
        assert value is not None  # _exactly_one
        return float(value)

    def describe(self) -> str:
        """One phrase for reports and the model card, e.g. ``cost ratio 5:1 (missed positive : false flag)``."""
        if self.kind == "target_fpr":
            return f"target false-positive rate {self.value:g}"
        if self.kind == "flag_rate":
            return f"target flag rate {self.value:g} (share of cases flagged)"
        return f"cost ratio {self.value:g}:1 (missed positive : wrongly flagged negative), lowest cost on validation"


_DEFAULTS: dict[str, dict[str, Any]] = {
    "fraud": {"threshold": {"target_fpr": 0.01}, "gate": {}},
    "credit": {"threshold": {"cost_ratio": 5.0}, "gate": {"min_roc_auc": 0.65, "min_pr_auc": 0.40}},
}


class Policy(BaseModel):
    """A dataset's decision policy: the threshold rule and the gate, with defaults by ``use``.

    ``use`` picks the defaults (module docstring); ``threshold`` replaces the default rule as a whole,
    ``gate`` replaces the named gate fields only (``gate: {min_roc_auc: 0.7}`` keeps the other defaults).
    The pipeline's ``target_fpr`` parameter, when given, overrides the threshold rule for one run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    use: Use = Field(
        default="fraud",
        description="fraud or credit: the defaults of threshold and gate (fraud: target_fpr 0.01, ROC-AUC >= 0.80, "
        "PR-AUC >= 0.20; credit: cost_ratio 5, ROC-AUC >= 0.65, PR-AUC >= 0.40)",
    )
    threshold: ThresholdRule = Field(
        default=ThresholdRule(target_fpr=0.01),  # the fraud default; other uses get theirs from _defaults_by_use
        description="how the decision threshold is chosen on validation: one of target_fpr, flag_rate, cost_ratio "
        "(default by use)",
    )
    gate: GateParams = Field(
        default_factory=GateParams, description="the gate's floors; fields not given keep the use's defaults"
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_use(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        use = data.get("use", "fraud")
        # an unknown use gets the fraud defaults here so that the only error is the one the Literal reports
        defaults = _DEFAULTS.get(use, _DEFAULTS["fraud"]) if isinstance(use, str) else _DEFAULTS["fraud"]
        gate = data.get("gate", {})
        return {
            **data,
            "threshold": data.get("threshold", defaults["threshold"]),
            "gate": {**defaults["gate"], **gate} if isinstance(gate, dict) else gate,
        }
