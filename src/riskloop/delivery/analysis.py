"""Canary analysis: compare a challenger's traffic with the champion's over one window, and give a verdict.

Pure: the inputs are two :class:`RoleWindow` values (counter increases over one
analysis window, built by :func:`riskloop.delivery.metrics_source.window` from
the model server's ``riskloop_*`` metrics) and a :class:`CanaryPolicy`; the
output is a :class:`Verdict`. Nothing here talks to a cluster or to Prometheus.

The checks, each against a threshold of the policy::

    errors      challenger error rate  <=  champion error rate + max_error_rate_increase
    latency     challenger p99         <=  champion p99 * max_p99_ratio + p99_slack_seconds
    score_psi   PSI(champion scores, challenger scores)  <=  max_psi
    alert_rate  challenger flagged share within champion's * max_alert_rate_ratio (+ alert_rate_slack),
                and champion's within challenger's * max_alert_rate_ratio (+ alert_rate_slack)
    recall      challenger recall      >=  champion recall - max_recall_drop        (labeled traffic only)
    precision   challenger precision   >=  champion precision - max_precision_drop  (labeled traffic only)

The verdict:

1. fewer than ``min_requests`` requests in either role: ``continue`` (nothing
   is judged on so little traffic);
2. any check failed: ``rollback``, with every check's reason;
3. any check inconclusive: ``continue``;
4. otherwise ``promote``.

Rates (errors, alert rate, recall, precision) are proportions of finite samples.
A rate check fails only when the observed value is beyond the threshold *and* a
one-sided z-test (Wald, unpooled variances) of "beyond the threshold" has a
p-value below ``significance``; beyond the threshold but not significant is
inconclusive, so a handful of errors in a small sample asks for more traffic
instead of rolling back. ``significance=None`` turns the test off (the threshold
alone decides). The p-value of each analysis is not corrected for repeated
looks: a controller that analyses every minute for an hour should use a smaller
``significance`` than a single analysis would.

Scored-instance checks (PSI, alert rate) need ``min_instances`` scored instances
in each role, else they are inconclusive. Precision and recall need
``min_labeled`` labeled instances in their denominators (labeled frauds for
recall, labeled flagged instances for precision); labels arrive days late, so
without enough of them these checks are skipped and do not hold the rollout.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

import numpy as np
from scipy.stats import norm

from riskloop.errors import ConfigError, DataContractError
from riskloop.serving.metrics import ROLES

Buckets = tuple[tuple[float, float], ...]
"""A Prometheus histogram: ``(upper bound le, cumulative count)``, ascending, the last bound ``+inf``."""

VerdictValue = Literal["promote", "continue", "rollback"]
"""What a :class:`Verdict` says to do with the canary (glossary: verdict)."""
VERDICT_VALUES: Final = ("promote", "continue", "rollback")

PSI_BINS: Final = 20
PSI_EPSILON: Final = 1e-4
LATENCY_QUANTILE: Final = 0.99

_Status = Literal["pass", "FAIL", "inconclusive", "skipped"]


@dataclass(frozen=True)
class LabeledCounts:
    """Confusion counts of one role's decisions on the instances whose label has arrived."""

    tp: float
    fp: float
    fn: float
    tn: float

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "fn", "tn"):
            value = getattr(self, name)
            if not _finite_number(value) or value < 0:
                raise DataContractError(
                    f"LabeledCounts.{name} = {value!r} is not a count",
                    where="LabeledCounts",
                    fix="pass finite numbers >= 0",
                )

    @property
    def positives(self) -> float:
        """Labeled frauds: the denominator of recall."""
        return self.tp + self.fn

    @property
    def flagged(self) -> float:
        """Labeled flagged instances: the denominator of precision."""
        return self.tp + self.fp

    @property
    def recall(self) -> float:
        """tp / (tp + fn); NaN without labeled frauds."""
        return self.tp / self.positives if self.positives else math.nan

    @property
    def precision(self) -> float:
        """tp / (tp + fp); NaN without labeled flagged instances."""
        return self.tp / self.flagged if self.flagged else math.nan


@dataclass(frozen=True)
class RoleWindow:
    """One model role's traffic over one analysis window: increases of the server's counters.

    ``requests`` counts the requests the server answered for the role (outcomes
    ok, error and unavailable; ``invalid`` is the client's fault and is left
    out); ``errors`` the outcomes error and unavailable. ``latency_buckets`` and
    ``score_buckets`` are the window's ``riskloop_request_duration_seconds`` and
    ``riskloop_score_ratio`` histograms (see :data:`Buckets`; empty when the
    role has none). ``instances`` counts scored instances, ``flagged`` those with
    decision ``flagged``. ``labeled`` holds the confusion counts of the
    instances whose label has arrived, when any have.
    """

    role: str
    model_version: str
    requests: float
    errors: float
    latency_buckets: Buckets
    score_buckets: Buckets
    instances: float
    flagged: float
    labeled: LabeledCounts | None = None

    def __post_init__(self) -> None:
        where = f"RoleWindow(role={self.role!r}, model_version={self.model_version!r})"
        if self.role not in ROLES:
            raise DataContractError(f"unknown role {self.role!r}", where=where, fix=f"use one of {', '.join(ROLES)}")
        for name in ("requests", "errors", "instances", "flagged"):
            value = getattr(self, name)
            if not _finite_number(value) or value < 0:
                raise DataContractError(
                    f"{name} = {value!r} is not a count",
                    where=where,
                    fix="pass finite numbers >= 0 (counter increases)",
                )
        if self.errors > self.requests:
            raise DataContractError(
                f"errors ({self.errors:g}) exceed requests ({self.requests:g})",
                where=where,
                fix="count errors among the answered requests (outcomes ok + error + unavailable)",
            )
        if self.flagged > self.instances:
            raise DataContractError(
                f"flagged ({self.flagged:g}) exceeds instances ({self.instances:g})",
                where=where,
                fix="count instances of both decisions in instances",
            )
        _check_buckets(self.latency_buckets, f"{where}.latency_buckets")
        _check_buckets(self.score_buckets, f"{where}.score_buckets")

    @property
    def error_rate(self) -> float:
        """errors / requests; NaN without requests."""
        return self.errors / self.requests if self.requests else math.nan

    @property
    def alert_rate(self) -> float:
        """flagged / instances; NaN without scored instances."""
        return self.flagged / self.instances if self.instances else math.nan

    @property
    def scored(self) -> float:
        """Observations in the score histogram (0 without one)."""
        return self.score_buckets[-1][1] if self.score_buckets else 0.0


@dataclass(frozen=True)
class CanaryPolicy:
    """The thresholds of :func:`analyze`; every one has a default and is checked on construction.

    ``min_requests``: answered requests per role below which the verdict is
    ``continue``. ``max_error_rate_increase``: absolute increase of the error
    rate (0.01 = one percentage point). ``max_p99_ratio`` and
    ``p99_slack_seconds``: the challenger's p99 may be this many times the
    champion's plus the slack (the slack keeps a 1 ms champion from failing a
    1.6 ms challenger). ``max_psi``: score distribution shift (0.1 is commonly
    read as "some", 0.25 as "major"). ``max_alert_rate_ratio`` and
    ``alert_rate_slack``: the flagged shares may differ by this factor, either
    way, plus the slack. ``min_instances``: scored instances per role that the
    PSI and alert-rate checks need. ``min_labeled``, ``max_recall_drop``,
    ``max_precision_drop``: see the module docstring. ``significance``: the
    one-sided p-value below which a rate beyond its threshold fails (``None``:
    no test).
    """

    min_requests: int = 200
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    p99_slack_seconds: float = 0.005
    max_psi: float = 0.2
    min_instances: int = 200
    max_alert_rate_ratio: float = 2.0
    alert_rate_slack: float = 0.002
    min_labeled: int = 30
    max_recall_drop: float = 0.05
    max_precision_drop: float = 0.05
    significance: float | None = 0.05

    def __post_init__(self) -> None:
        problems: list[str] = []

        def need(name: str, ok: bool, rule: str) -> None:
            if not ok:
                problems.append(f"{name}={getattr(self, name)!r} ({rule})")

        for name in ("min_requests", "min_instances", "min_labeled"):
            value = getattr(self, name)
            need(name, isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1")
        unit = ("max_error_rate_increase", "alert_rate_slack", "max_recall_drop", "max_precision_drop")
        for name in unit:
            value = getattr(self, name)
            need(name, _finite_number(value) and 0 <= value < 1, "a number in [0, 1)")
        need(
            "p99_slack_seconds",
            _finite_number(self.p99_slack_seconds) and self.p99_slack_seconds >= 0,
            "a number of seconds >= 0",
        )
        for name in ("max_p99_ratio", "max_alert_rate_ratio"):
            value = getattr(self, name)
            need(name, _finite_number(value) and value >= 1, "a number >= 1")
        need("max_psi", _finite_number(self.max_psi) and self.max_psi > 0, "a number > 0")
        need(
            "significance",
            self.significance is None or (_finite_number(self.significance) and 0 < self.significance <= 0.5),
            "None or a number in (0, 0.5]",
        )
        if problems:
            raise ConfigError(
                "invalid canary policy: " + "; ".join(problems),
                where="CanaryPolicy",
                fix="change the listed thresholds (defaults: CanaryPolicy())",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CanaryPolicy:
        """A policy from settings or run parameters; unknown keys are an error, missing ones take the default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown canary policy keys: {', '.join(unknown)}",
                where="CanaryPolicy.from_mapping",
                fix=f"use only {', '.join(sorted(known))}",
            )
        # pipeline parameters travel as protobuf Struct values, where every number is a double
        ints = {"min_requests", "min_instances", "min_labeled"}
        return cls(
            **{k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v for k, v in values.items()}
        )


@dataclass(frozen=True)
class Verdict:
    """What to do with the canary, and why.

    ``reasons`` has one line per check (in check order), each naming the check,
    its status (pass, FAIL, inconclusive, skipped) and the measured value
    against its threshold. ``measures`` holds the finite measurements by name
    (``error_rate_champion``, ``p99_challenger_seconds``, ``psi``, ...).
    """

    value: VerdictValue
    reasons: tuple[str, ...]
    measures: dict[str, float]

    def __post_init__(self) -> None:
        if self.value not in VERDICT_VALUES:
            raise ConfigError(
                f"unknown canary verdict {self.value!r}", where="Verdict", fix=f"use one of {', '.join(VERDICT_VALUES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"decision": ..., "reasons": [...], "measures": {...}}`` (for audit events).

        The value is written under the key ``decision``: audit events already in the hash-chained log carry
        that key, and new ones keep it so one reader serves both (docs/glossary.md, audit event).
        """
        return {
            "decision": self.value,
            "reasons": list(self.reasons),
            "measures": {k: float(v) for k, v in self.measures.items() if math.isfinite(v)},
        }


@dataclass(frozen=True)
class _Check:
    name: str
    status: _Status
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.name} {self.status}: {self.detail}"


def analyze(champion: RoleWindow, challenger: RoleWindow, policy: CanaryPolicy | None = None) -> Verdict:
    """Judge ``challenger`` against ``champion`` over the same window (module docstring: checks and verdict)."""
    policy = CanaryPolicy() if policy is None else policy
    measures = _measures(champion, challenger)
    short = [w for w in (champion, challenger) if w.requests < policy.min_requests]
    if short:
        reasons = tuple(
            f"requests inconclusive: {w.role} {w.model_version} answered {w.requests:g} requests "
            f"< min_requests {policy.min_requests}; wait for more traffic"
            for w in short
        )
        return Verdict("continue", reasons, measures)

    checks = (
        _check_errors(champion, challenger, policy),
        _check_latency(champion, challenger, policy),
        _check_psi(champion, challenger, policy, measures.get("psi", math.nan)),
        _check_alert_rate(champion, challenger, policy),
        *_check_labeled(champion, challenger, policy),
    )
    statuses = {c.status for c in checks}
    value: VerdictValue = "rollback" if "FAIL" in statuses else "continue" if "inconclusive" in statuses else "promote"
    return Verdict(value, tuple(c.reason for c in checks), measures)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q``-quantile of a cumulative histogram, as PromQL's ``histogram_quantile`` computes it.

    The quantile's bucket is the first whose cumulative count reaches
    ``q * total``; the result is interpolated linearly within it, the lower
    bound of the first bucket being 0 (or its upper bound, when that is <= 0).
    A quantile that falls in the ``+inf`` bucket is the largest finite bound.
    NaN when the histogram is empty, has fewer than two buckets or no ``+inf``
    bucket. Counts that decrease (a torn read) are raised to the running maximum.
    """
    if not (_finite_number(q) and 0 <= q <= 1):
        raise ConfigError(f"quantile {q!r} is outside [0, 1]", where="histogram_quantile", fix="pass 0 <= q <= 1")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    bounds = [float(le) for le, _ in buckets]
    counts: list[float] = np.maximum.accumulate(np.asarray([c for _, c in buckets], dtype=np.float64)).tolist()
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    b = bisect.bisect_left(counts, rank, 0, len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    lower = 0.0 if b == 0 else bounds[b - 1]
    below = 0.0 if b == 0 else counts[b - 1]
    inside = counts[b] - below
    if inside <= 0:
        return lower
    return lower + (bounds[b] - lower) * (rank - below) / inside


def psi(
    expected_buckets: Sequence[tuple[float, float]],
    actual_buckets: Sequence[tuple[float, float]],
    *,
    bins: int = PSI_BINS,
    epsilon: float = PSI_EPSILON,
) -> float:
    """Population stability index of two score histograms, on ``bins`` equal-width bins of [0, 1].

    Each histogram's buckets are merged into the bins ``[0, 1/bins], (1/bins,
    2/bins], ...`` (the last bin also takes anything above 1), so both need a
    bucket bound at every multiple of ``1/bins`` below 1
    (:data:`riskloop.serving.metrics.SCORE_BUCKETS` has them for 20 bins) and a
    ``+inf`` bucket. Bin shares below ``epsilon`` are raised to it, so an empty
    bin adds a large but finite term. PSI = sum over bins of
    ``(actual - expected) * ln(actual / expected)``: 0 for identical shares and
    symmetric in its arguments. NaN when either histogram has no observations.
    """
    if not (isinstance(bins, int) and bins >= 1):
        raise ConfigError(f"bins={bins!r} is not an integer >= 1", where="psi", fix="pass e.g. bins=20")
    if not (_finite_number(epsilon) and 0 < epsilon < 1):
        raise ConfigError(f"epsilon={epsilon!r} is outside (0, 1)", where="psi", fix="pass e.g. epsilon=1e-4")
    expected = _bin_counts(expected_buckets, bins, "expected_buckets")
    actual = _bin_counts(actual_buckets, bins, "actual_buckets")
    if expected.sum() <= 0 or actual.sum() <= 0:
        return math.nan
    e = np.maximum(expected / expected.sum(), epsilon)
    a = np.maximum(actual / actual.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def _bin_counts(buckets: Sequence[tuple[float, float]], bins: int, what: str) -> np.ndarray:
    if not buckets or not math.isinf(buckets[-1][0]):
        raise DataContractError(
            f"{what} has no +inf bucket",
            where="psi",
            fix="pass a complete Prometheus histogram (cumulative buckets up to le=+Inf)",
        )
    bounds = [float(le) for le, _ in buckets]
    counts = np.maximum.accumulate(np.asarray([c for _, c in buckets], dtype=np.float64))
    at_edges = []
    for k in range(1, bins):
        edge = k / bins
        i = bisect.bisect_left(bounds, edge - 1e-9)
        if i == len(bounds) or not math.isclose(bounds[i], edge, abs_tol=1e-9):
            raise DataContractError(
                f"{what} has no bucket at le={edge:g}; PSI needs one at every multiple of 1/{bins}",
                where="psi",
                fix="observe scores with riskloop.serving.metrics.SCORE_BUCKETS",
            )
        at_edges.append(counts[i])
    cumulative = np.asarray([*at_edges, counts[-1]], dtype=np.float64)
    return np.diff(cumulative, prepend=0.0)


def _measures(champion: RoleWindow, challenger: RoleWindow) -> dict[str, float]:
    # keyed by the argument's position, not w.role: a shadow judged as the challenger is measured as one
    m: dict[str, float] = {}
    for r, w in (("champion", champion), ("challenger", challenger)):
        m[f"requests_{r}"] = w.requests
        m[f"errors_{r}"] = w.errors
        m[f"error_rate_{r}"] = w.error_rate
        m[f"p99_{r}_seconds"] = histogram_quantile(LATENCY_QUANTILE, w.latency_buckets)
        m[f"instances_{r}"] = w.instances
        m[f"alert_rate_{r}"] = w.alert_rate
        if w.labeled is not None:
            m[f"labeled_positives_{r}"] = w.labeled.positives
            m[f"labeled_flagged_{r}"] = w.labeled.flagged
            m[f"recall_{r}"] = w.labeled.recall
            m[f"precision_{r}"] = w.labeled.precision
    if champion.score_buckets and challenger.score_buckets:
        m["psi"] = psi(champion.score_buckets, challenger.score_buckets)
    return {k: float(v) for k, v in m.items() if math.isfinite(v)}


def _exceedance(a: float, n_a: float, b: float, n_b: float, ratio: float, slack: float) -> tuple[float, float]:
    """How far proportion ``a`` exceeds ``ratio * b + slack``, and the one-sided p-value of "it does".

    The excess is measured on the raw proportions; its p-value comes from the
    Agresti–Caffo adjusted ones (one success and one failure added to each
    sample): the plain Wald variance is zero for a sample with no events, which
    made 0 flags in 61 challenger requests against 11 in 520 for the champion
    look significant (p = 0.001); adjusted, it is not.

    At ``ratio == 1`` this is statsmodels' ``test_proportions_2indep(method=
    "agresti-caffo", compare="diff", value=slack, alternative="larger")``
    (a unit test holds the two equal). The alert-rate check needs
    ``ratio * b + slack`` with ratio 2 by default, which statsmodels has no form
    for (its ``compare="ratio"`` is another statistic and takes no slack), so
    the linear contrast is computed here, one formula for every rate check.
    """
    excess = a - (ratio * b + slack)
    a_adj = (a * n_a + 1) / (n_a + 2)
    b_adj = (b * n_b + 1) / (n_b + 2)
    variance = a_adj * (1 - a_adj) / (n_a + 2) + ratio**2 * b_adj * (1 - b_adj) / (n_b + 2)
    z = (a_adj - (ratio * b_adj + slack)) / math.sqrt(variance)
    return excess, float(norm.sf(z))


def _judge_rate(excess: float, p_value: float, policy: CanaryPolicy) -> tuple[_Status, str]:
    if excess <= 0:
        return "pass", ""
    if policy.significance is None:
        return "FAIL", ""
    if p_value < policy.significance:
        return "FAIL", f" (p = {p_value:.2g} < {policy.significance:g})"
    return "inconclusive", f" (p = {p_value:.2g} >= {policy.significance:g}: not significant, wait for more traffic)"


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _check_errors(champion: RoleWindow, challenger: RoleWindow, policy: CanaryPolicy) -> _Check:
    a, b = challenger.error_rate, champion.error_rate
    excess, p = _exceedance(a, challenger.requests, b, champion.requests, 1.0, policy.max_error_rate_increase)
    status, note = _judge_rate(excess, p, policy)
    return _Check(
        "errors",
        status,
        f"challenger {_pct(a)} of {challenger.requests:g} vs champion {_pct(b)} of {champion.requests:g}: "
        f"{100 * (a - b):+.2f} pp, at most {100 * policy.max_error_rate_increase:+.2f} pp allowed{note}",
    )


def _check_latency(champion: RoleWindow, challenger: RoleWindow, policy: CanaryPolicy) -> _Check:
    ours = histogram_quantile(LATENCY_QUANTILE, challenger.latency_buckets)
    theirs = histogram_quantile(LATENCY_QUANTILE, champion.latency_buckets)
    if math.isnan(ours) or math.isnan(theirs):
        return _Check("latency", "inconclusive", "no latency observations in one role")
    limit = theirs * policy.max_p99_ratio + policy.p99_slack_seconds
    return _Check(
        "latency",
        "pass" if ours <= limit else "FAIL",
        f"challenger p99 {1000 * ours:.2f} ms vs champion {1000 * theirs:.2f} ms: at most "
        f"{1000 * limit:.2f} ms allowed (x{policy.max_p99_ratio:g} + {1000 * policy.p99_slack_seconds:g} ms)",
    )


def _check_psi(champion: RoleWindow, challenger: RoleWindow, policy: CanaryPolicy, value: float) -> _Check:
    few = min(champion.scored, challenger.scored)
    if few < policy.min_instances or math.isnan(value):
        return _Check(
            "score_psi", "inconclusive", f"{few:g} scored instances in one role < min_instances {policy.min_instances}"
        )
    # Two samples of one distribution still differ: PSI then averages about (bins - 1) * (1/n1 + 1/n2)
    # (it is a symmetric chi-square divergence). At 50 vs 400 scores that is ~0.4, over the usual 0.2
    # threshold by chance alone; a drill saw 0.30 for an identical model. Judge only beyond that noise.
    noise = (PSI_BINS - 1) * (1 / champion.scored + 1 / challenger.scored)
    detail = (
        f"PSI of challenger scores vs champion {value:.4f} (chance level at these sample sizes "
        f"{noise:.4f}), at most {policy.max_psi:g} allowed above it"
    )
    if value - noise > policy.max_psi:
        return _Check("score_psi", "FAIL", detail)
    if noise > policy.max_psi / 2:
        return _Check(
            "score_psi",
            "pass" if value <= policy.max_psi / 2 else "inconclusive",
            detail + "; too few scores to tell, wait for more traffic",
        )
    return _Check("score_psi", "pass", detail)


def _check_alert_rate(champion: RoleWindow, challenger: RoleWindow, policy: CanaryPolicy) -> _Check:
    few = min(champion.instances, challenger.instances)
    if few < policy.min_instances:
        return _Check(
            "alert_rate", "inconclusive", f"{few:g} scored instances in one role < min_instances {policy.min_instances}"
        )
    a, n_a, b, n_b = challenger.alert_rate, challenger.instances, champion.alert_rate, champion.instances
    r, slack = policy.max_alert_rate_ratio, policy.alert_rate_slack
    higher = _exceedance(a, n_a, b, n_b, r, slack)
    lower = _exceedance(b, n_b, a, n_a, r, slack)
    excess, p = higher if higher[0] >= lower[0] else lower
    status, note = _judge_rate(excess, p, policy)
    return _Check(
        "alert_rate",
        status,
        f"challenger flags {_pct(a)} of {n_a:g} vs champion {_pct(b)} of {n_b:g}: allowed "
        f"{_pct(max(0.0, (b - slack) / r))} .. {_pct(b * r + slack)} "
        f"(x{r:g} either way, +/- {100 * slack:.2f} pp){note}",
    )


def _check_labeled(champion: RoleWindow, challenger: RoleWindow, policy: CanaryPolicy) -> tuple[_Check, ...]:
    if champion.labeled is None or challenger.labeled is None:
        missing = " and ".join(w.role for w in (champion, challenger) if w.labeled is None)
        return (_Check("labels", "skipped", f"no labeled counts for the {missing}: precision and recall not checked"),)
    ours, theirs = challenger.labeled, champion.labeled
    checks = []
    for name, drop, mine, other, n_mine, n_other, denominator in (
        (
            "recall",
            policy.max_recall_drop,
            ours.recall,
            theirs.recall,
            ours.positives,
            theirs.positives,
            "labeled frauds",
        ),
        (
            "precision",
            policy.max_precision_drop,
            ours.precision,
            theirs.precision,
            ours.flagged,
            theirs.flagged,
            "labeled flagged instances",
        ),
    ):
        few = min(n_mine, n_other)
        if few < policy.min_labeled:
            checks.append(
                _Check(
                    name,
                    "skipped",
                    f"{few:g} {denominator} in one role < min_labeled {policy.min_labeled}: not checked yet",
                )
            )
            continue
        excess, p = _exceedance(other, n_other, mine, n_mine, 1.0, drop)
        status, note = _judge_rate(excess, p, policy)
        checks.append(
            _Check(
                name,
                status,
                f"challenger {mine:.3f} of {n_mine:g} {denominator} vs champion {other:.3f} of "
                f"{n_other:g}: a drop of {other - mine:+.3f}, at most {drop:g} allowed{note}",
            )
        )
    return tuple(checks)


def _check_buckets(buckets: Buckets, where: str) -> None:
    if not buckets:
        return
    bounds = [le for le, _ in buckets]
    counts = [c for _, c in buckets]
    if not math.isinf(bounds[-1]) or any(not b < c for b, c in itertools.pairwise(bounds)):
        raise DataContractError(
            "histogram bucket bounds are not strictly ascending up to +inf",
            where=where,
            fix="pass (le, cumulative count) pairs sorted by le, the last le = float('inf')",
        )
    if any(not _finite_number(c) or c < 0 for c in counts) or any(b > c for b, c in itertools.pairwise(counts)):
        raise DataContractError(
            "histogram bucket counts are not cumulative (finite, >= 0, non-decreasing)",
            where=where,
            fix="pass cumulative counts, as Prometheus's le buckets hold them",
        )


def _finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


__all__ = [
    "LATENCY_QUANTILE",
    "PSI_BINS",
    "PSI_EPSILON",
    "VERDICT_VALUES",
    "Buckets",
    "CanaryPolicy",
    "LabeledCounts",
    "RoleWindow",
    "Verdict",
    "VerdictValue",
    "analyze",
    "histogram_quantile",
    "psi",
]
