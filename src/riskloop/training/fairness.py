"""Group fairness of a risk model's decisions for protected attributes (e.g. age band, sex).

A risk model flags a row when its score reaches the threshold (fraud, bad
credit risk); the *favourable* outcome for the person is not being flagged
(the payment goes through, the credit is granted). Per group of a protected
attribute:

- ``selection_rate``: share of the group given the favourable outcome;
- ``true_favourable_rate``: among the group's rows whose label is 0 (who
  deserve the favourable outcome), the share that got it — equal opportunity
  compares these.

Across groups (groups smaller than ``min_group_size`` are reported but left out
of the differences: their rates are noise):

- ``demographic_parity_difference``: max - min selection rate;
- ``equal_opportunity_difference``: max - min true favourable rate.

0 means parity; the gate (``training.gate``) can fail a model whose largest
difference over the protected attributes exceeds a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from riskloop.errors import TrainingError

MIN_GROUP_SIZE = 20


@dataclass(frozen=True)
class GroupMetrics:
    group: str
    n: int
    positives: int  # label 1 (bad risk / fraud)
    selection_rate: float  # favourable outcome (not flagged)
    true_favourable_rate: float | None  # among label 0; None without such rows
    compared: bool  # large enough to enter the differences


@dataclass(frozen=True)
class FairnessReport:
    attribute: str
    groups: tuple[GroupMetrics, ...]
    demographic_parity_difference: float
    equal_opportunity_difference: float
    min_group_size: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "groups": [asdict(g) for g in self.groups]}


def fairness_report(
    groups: pd.Series, y_true: np.ndarray, flagged: np.ndarray, *, attribute: str, min_group_size: int = MIN_GROUP_SIZE
) -> FairnessReport:
    """Group metrics of decisions ``flagged`` (bool per row) against labels ``y_true`` (0/1) by ``groups``."""
    if not (len(groups) == len(y_true) == len(flagged)):
        raise TrainingError(
            f"fairness inputs differ in length: {len(groups)}, {len(y_true)}, {len(flagged)}",
            where=f"fairness_report({attribute})",
            fix="pass one value per scored row",
        )
    g = groups.astype("string").fillna("<missing>").to_numpy()
    y = np.asarray(y_true).astype(int)
    fav = ~np.asarray(flagged).astype(bool)
    out = []
    for name in sorted(set(g)):
        m = g == name
        deserving = m & (y == 0)
        out.append(
            GroupMetrics(
                group=str(name),
                n=int(m.sum()),
                positives=int(y[m].sum()),
                selection_rate=float(fav[m].mean()),
                true_favourable_rate=float(fav[deserving].mean()) if deserving.any() else None,
                compared=bool(m.sum() >= min_group_size),
            )
        )
    compared = [x for x in out if x.compared]
    sel = [x.selection_rate for x in compared]
    tfr = [x.true_favourable_rate for x in compared if x.true_favourable_rate is not None]
    return FairnessReport(
        attribute=attribute,
        groups=tuple(out),
        demographic_parity_difference=float(max(sel) - min(sel)) if len(sel) > 1 else 0.0,
        equal_opportunity_difference=float(max(tfr) - min(tfr)) if len(tfr) > 1 else 0.0,
        min_group_size=min_group_size,
    )


def fairness_reports(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    flagged: np.ndarray,
    attributes: Sequence[str],
    *,
    min_group_size: int = MIN_GROUP_SIZE,
) -> list[FairnessReport]:
    """One report per protected attribute present in ``frame``; a missing attribute is an error."""
    missing = [a for a in attributes if a not in frame.columns]
    if missing:
        raise TrainingError(
            f"protected attributes {missing} are not in the scored frame",
            fix="keep them as columns of the training set (they need not be model features)",
        )
    return [fairness_report(frame[a], y_true, flagged, attribute=a, min_group_size=min_group_size) for a in attributes]


def fairness_metrics(reports: Sequence[FairnessReport]) -> dict[str, float]:
    """Flat metrics for the gate and MLflow: the largest differences over the attributes, and each one."""
    if not reports:
        return {}
    out = {
        "demographic_parity_difference": max(r.demographic_parity_difference for r in reports),
        "equal_opportunity_difference": max(r.equal_opportunity_difference for r in reports),
    }
    for r in reports:
        out[f"demographic_parity_difference_{r.attribute}"] = r.demographic_parity_difference
        out[f"equal_opportunity_difference_{r.attribute}"] = r.equal_opportunity_difference
    return out


__all__ = [
    "MIN_GROUP_SIZE",
    "FairnessReport",
    "GroupMetrics",
    "fairness_metrics",
    "fairness_report",
    "fairness_reports",
]
