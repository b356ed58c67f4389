"""The champion/challenger gate: may a freshly trained model be registered?

The candidate must clear absolute floors on ROC-AUC and PR-AUC and, when a
champion exists, must not be worse than the champion by more than a tolerance
on PR-AUC, both scored on the same test window. A failed gate is a
:class:`GateResult` with ``passed=False``, never an exception: the pipeline
records it (audit event ``gated``, tag ``gate_result``) and stops cleanly.

The thresholds (:class:`GateParams`) are the dataset spec's ``policy.gate`` (defaults by use, fraud or credit:
:mod:`riskloop.data.policy`), with the pipeline's ``gate_params`` laid over them for one run.

The gate is decided once: the gate step writes the decision (:meth:`GateResult.write`, verdict, reasons,
the metrics compared and the policy) as an artifact that register and the model card read back.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riskloop.data.policy import GateParams as GateParams  # the gate's thresholds; their home is the policy
from riskloop.errors import TrainingError

# Metrics are floats computed by different runs; a candidate exactly at an edge
# must pass even when the subtraction rounds a hair below it.
_EDGE_TOLERANCE = 1e-12
_PASS = "pass: "
_FAIL = "fail: "
_REQUIRED = ("roc_auc", "pr_auc")
# The gate of a retrain the monitor triggers (and of the scheduled retrain): a model that replaces a working
# champion must be at least as good on the same test window, not merely within the default 0.02 PR-AUC. With the
# default, one of five covariate-shift retrains promoted a model significantly worse than the stale champion on
# the days after; with no drop allowed, none of five fresh seeds did (benchmarks/README.md, monitoring_seeds).
RETRAIN_GATE_PARAMS: dict[str, float] = {"max_pr_auc_drop": 0.0}


@dataclass(frozen=True)
class GateResult:
    """The gate's decision with one human sentence per check.

    Each reason starts with ``"pass: "`` or ``"fail: "`` and states the
    numbers it compared. ``candidate`` and ``champion`` are the metrics both
    models scored on the same test window (``champion`` is None for a first
    model). ``policy`` is the thresholds it was decided under (None only in records written before the
    policy was recorded).
    """

    passed: bool
    reasons: tuple[str, ...]
    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    policy: GateParams | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (reasons as a list); inverse of :meth:`from_dict`."""
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "candidate": dict(self.candidate),
            "champion": None if self.champion is None else dict(self.champion),
            "champion_version": self.champion_version,
            "policy": None if self.policy is None else self.policy.model_dump(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a JSON tag read back)."""
        where = "GateResult.from_dict"
        missing = [k for k in ("passed", "reasons", "candidate", "champion") if k not in d]
        if missing:
            raise TrainingError(
                f"a gate result record lacks {', '.join(missing)}",
                where=where,
                fix="pass the dict written by GateResult.to_dict",
            )
        if not isinstance(d["passed"], bool):
            raise TrainingError(
                f"'passed' must be a bool, got {d['passed']!r}",
                where=where,
                fix="pass the dict written by GateResult.to_dict",
            )
        champion = d["champion"]
        version = d.get("champion_version")
        policy = d.get("policy")
        return cls(
            passed=d["passed"],
            reasons=tuple(str(r) for r in d["reasons"]),
            candidate=_as_metrics(d["candidate"], "candidate", where),
            champion=None if champion is None else _as_metrics(champion, "champion", where),
            champion_version=None if version is None else str(version),
            policy=None if policy is None else GateParams.model_validate(policy),
        )

    def write(self, path: Path) -> None:
        """The gate-decision artifact: what register and the model card read instead of deciding again."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> GateResult:
        """The decision :meth:`write` stored at ``path``."""
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise TrainingError(
                f"the gate decision is unreadable: {exc}",
                where=str(path),
                fix="pass the gate_decision artifact the gate step wrote",
            ) from exc

    def summary(self) -> str:
        """``"pass"``, or ``"fail: <first failing reason>"``."""
        if self.passed:
            return "pass"
        for reason in self.reasons:
            if reason.startswith(_FAIL):
                return reason
        return "fail"


def _as_metrics(metrics: Any, role: str, where: str) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TrainingError(
            f"{role} metrics must be a mapping of name to number, got {type(metrics).__name__}",
            where=where,
            fix="pass Evaluation.metrics() of the model scored on the test window",
        )
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TrainingError(
                f"{role} metric {name!r} is not a number: {value!r}",
                where=where,
                fix="pass Evaluation.metrics() of the model scored on the test window",
            )
        out[str(name)] = float(value)
    return out


def _require(metrics: Mapping[str, float], role: str, where: str) -> None:
    missing = [k for k in _REQUIRED if k not in metrics]
    if missing:
        raise TrainingError(
            f"{role} metrics lack {', '.join(missing)} (have: {', '.join(sorted(metrics)) or 'none'})",
            where=where,
            fix="pass Evaluation.metrics() of the model scored on the test window",
        )
    # A NaN metric is let through here and fails its check below; a value
    # outside [0, 1] is not an AUC at all.
    outside = [f"{k}={metrics[k]!r}" for k in _REQUIRED if metrics[k] < 0.0 or metrics[k] > 1.0]
    if outside:
        raise TrainingError(
            f"{role} metrics out of range [0, 1]: {', '.join(outside)}",
            where=where,
            fix="pass ROC-AUC and PR-AUC as fractions, e.g. Evaluation.metrics()",
        )


def _at_least(value: float, bound: float) -> bool:
    # NaN compares False, so a NaN metric fails its check instead of slipping through.
    return value >= bound - _EDGE_TOLERANCE


def _fairness_checks(cand: Mapping[str, float], params: GateParams) -> list[tuple[bool, str]]:
    """A fairness threshold with no fairness metric fails: the check was asked for and could not run."""
    checks: list[tuple[bool, str]] = []
    for key, bound, label in (
        ("demographic_parity_difference", params.max_demographic_parity_difference, "demographic parity"),
        ("equal_opportunity_difference", params.max_equal_opportunity_difference, "equal opportunity"),
    ):
        if bound is None:
            continue
        if key not in cand:
            checks.append(
                (
                    False,
                    f"{label} difference limit {bound:.4f} set, but the candidate has no fairness "
                    f"metrics (the dataset spec names no protected attributes)",
                )
            )
            continue
        value = cand[key]
        ok = _at_least(bound, value)
        worst = [k.removeprefix(key + "_") for k, v in cand.items() if k.startswith(key + "_") and v == value]
        at = f" ({', '.join(worst)})" if worst else ""
        checks.append((ok, f"{label} difference {value:.4f}{at} {'<=' if ok else '>'} limit {bound:.4f}"))
    return checks


def decide_gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    params: GateParams,
    *,
    champion_version: str | None = None,
) -> GateResult:
    """Decide whether ``candidate`` may be registered as challenger.

    Passes when the candidate's ``roc_auc >= min_roc_auc`` and
    ``pr_auc >= min_pr_auc`` and, if a champion is given,
    ``candidate pr_auc >= champion pr_auc - max_pr_auc_drop``. A value exactly
    at an edge passes (within 1e-12, so float rounding cannot flip it); a NaN
    metric fails. Both metric mappings come from ``Evaluation.metrics()`` on the
    *same* test window: when both carry ``n`` and ``positives`` and these
    differ, that is a caller error.

    Raises TrainingError only for unusable input (missing, non-numeric or
    out-of-range ROC-AUC / PR-AUC, different test windows, a ``champion_version`` without champion
    metrics); a model that falls short is a result with ``passed=False``.
    """
    where = "decide_gate"
    cand = _as_metrics(candidate, "candidate", where)
    _require(cand, "candidate", where)
    champ = None if champion is None else _as_metrics(champion, "champion", where)
    if champ is not None:
        _require(champ, "champion", where)
        for key in ("n", "positives"):
            if key in cand and key in champ and cand[key] != champ[key]:
                raise TrainingError(
                    f"candidate and champion were scored on different data: {key} = {cand[key]:g} vs {champ[key]:g}",
                    where=where,
                    fix="score the champion on the candidate's test window before gating",
                )
    elif champion_version is not None:
        raise TrainingError(
            f"champion_version {champion_version!r} given without champion metrics",
            where=where,
            fix="score the champion on the test window and pass its metrics, or pass neither",
        )

    checks: list[tuple[bool, str]] = []
    roc, pr = cand["roc_auc"], cand["pr_auc"]
    ok = _at_least(roc, params.min_roc_auc)
    checks.append((ok, f"ROC-AUC {roc:.4f} {'>=' if ok else '<'} floor {params.min_roc_auc:.4f}"))
    ok = _at_least(pr, params.min_pr_auc)
    checks.append((ok, f"PR-AUC {pr:.4f} {'>=' if ok else '<'} floor {params.min_pr_auc:.4f}"))
    if champ is None:
        checks.append((True, "no champion to compare with: the floors alone decide"))
    else:
        champ_pr = champ["pr_auc"]
        bound = champ_pr - params.max_pr_auc_drop
        ok = _at_least(pr, bound)
        name = "champion" if champion_version is None else f"champion (version {champion_version})"
        text = (
            f"PR-AUC {pr:.4f} {'>=' if ok else '<'} {name} PR-AUC {champ_pr:.4f} "
            f"minus allowed drop {params.max_pr_auc_drop:.4f} = {bound:.4f} "
            f"(difference {pr - champ_pr:+.4f})"
        )
        checks.append((ok, text))

    checks.extend(_fairness_checks(cand, params))
    passed = all(ok for ok, _ in checks)
    return GateResult(
        passed=passed,
        reasons=tuple((_PASS if ok else _FAIL) + text for ok, text in checks),
        candidate=cand,
        champion=champ,
        champion_version=champion_version,
        policy=params,
    )
