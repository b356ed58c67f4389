"""Canary analysis over time and the progressive rollout it drives.

One analysis interval: snapshot the metrics, wait, snapshot again, judge the
challenger's window against the champion's (``analysis.analyze``), audit the
verdict. A rollout steps the canary percent up (e.g. 10 % → 50 %) and
analyses between steps: the window of a step grows from the step's start until
the verdict is not ``continue`` ("wait for more traffic" means more samples).
It rolls back on the first ``rollback`` and promotes after the last step passes.
A step that stays inconclusive for ``max_intervals`` leaves the canary where it
is and says so (``undecided``): nobody is promoted on too little evidence, and
an alert on a stuck canary takes it from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from riskloop.audit.log import open_audit_log
from riskloop.delivery import rollout
from riskloop.delivery.analysis import CanaryPolicy, Verdict, analyze
from riskloop.delivery.metrics_source import MetricsSource, PrometheusSource, ScrapeSource, Snapshot, window
from riskloop.errors import DeploymentError
from riskloop.registry.deployment import Deployment
from riskloop.settings import Settings

Outcome = Literal["promoted", "rolled_back", "undecided"]


def metrics_source(s: Settings, model_name: str) -> MetricsSource:
    """The source ``settings.delivery.metrics_source`` names: the server's /metrics, or Prometheus."""
    if s.delivery.metrics_source == "scrape":
        return ScrapeSource(s.delivery.server_url, model_name)
    if s.delivery.metrics_source == "prometheus":
        return PrometheusSource(s.delivery.prometheus_url, model_name)
    raise DeploymentError(
        f"unknown metrics source {s.delivery.metrics_source!r}",
        where="RISKLOOP_DELIVERY__METRICS_SOURCE",
        fix="use 'scrape' or 'prometheus'",
    )


def judge(d: Deployment, start: Snapshot, end: Snapshot, policy: CanaryPolicy) -> Verdict:
    """The verdict on ``d``'s challenger (or shadow) over the window between two snapshots."""
    if d.challenger_version is None:
        raise DeploymentError(
            f"{d.model_name} has no challenger to analyse",
            fix="deploy one: `riskloop canary deploy --challenger-alias challenger`",
        )
    role = "shadow" if d.mode == "shadow" else "challenger"
    return analyze(
        window(start, end, "champion", d.champion_version), window(start, end, role, d.challenger_version), policy
    )


def analyze_interval(
    s: Settings,
    model_name: str,
    *,
    interval_seconds: float,
    policy: CanaryPolicy,
    source: MetricsSource | None = None,
    start: Snapshot | None = None,
) -> Verdict:
    """Wait one interval, judge the window from ``start`` (default: now) to its end, audit the verdict."""
    d = rollout.current(s, model_name)
    if d is None or d.challenger_version is None:
        raise DeploymentError(
            f"{model_name} has no challenger to analyse",
            fix="deploy one: `riskloop canary deploy --challenger-alias challenger`",
        )
    src = source or metrics_source(s, model_name)
    begin = start or src.snapshot()
    time.sleep(interval_seconds)
    end = src.snapshot()
    verdict = judge(d, begin, end, policy)
    from riskloop.audit.anchors import anchor_event

    appended = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).append(
        "canary_verdict",
        actor=s.audit.actor,
        ids={"model": model_name, "champion_version": d.champion_version, "challenger_version": d.challenger_version},
        details={
            "canary_percent": d.canary_percent,
            "mode": d.mode,
            "interval_seconds": interval_seconds,
            "window": [begin.at.isoformat(), end.at.isoformat()],
            "verdict": verdict.to_dict(),
        },
    )
    anchor_event(s, model_name, d.challenger_version, appended)
    return verdict


def analyze_step(
    s: Settings,
    model_name: str,
    *,
    start: Snapshot,
    interval_seconds: float,
    max_intervals: int,
    policy: CanaryPolicy,
    source: MetricsSource,
    on_verdict: Callable[[Verdict], None] | None = None,
) -> Verdict:
    """Judge the window growing from ``start`` every interval until a verdict other than ``continue``
    ("wait for more traffic" means more samples) or ``max_intervals``; returns the last verdict."""
    if max_intervals < 1:
        raise DeploymentError(f"max_intervals={max_intervals} must be at least 1", fix="e.g. 5")
    verdict = None
    for _ in range(max_intervals):
        verdict = analyze_interval(
            s, model_name, interval_seconds=interval_seconds, policy=policy, source=source, start=start
        )
        if on_verdict is not None:
            on_verdict(verdict)
        if verdict.value != "continue":
            break
    assert verdict is not None
    return verdict


@dataclass(frozen=True)
class RolloutResult:
    outcome: Outcome
    final: Deployment
    verdicts: tuple[tuple[int, Verdict], ...] = field(default=())  # (canary percent, verdict) per interval

    def summary(self) -> str:
        last = self.verdicts[-1][1] if self.verdicts else None
        why = "; ".join(r for r in last.reasons if "FAIL" in r or "inconclusive" in r) if last else ""
        return f"{self.outcome} after {len(self.verdicts)} interval(s)" + (f": {why}" if why else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the outcome, the deployment it left, and every interval's verdict with its canary percent."""
        return {
            "outcome": self.outcome,
            "summary": self.summary(),
            "final": self.final.model_dump(mode="json"),
            "verdicts": [{"canary_percent": pct, **v.to_dict()} for pct, v in self.verdicts],
        }


def progressive_rollout(
    s: Settings,
    model_name: str,
    *,
    steps: Sequence[int] = (10, 50),
    interval_seconds: float = 30.0,
    max_intervals: int = 5,
    policy: CanaryPolicy | None = None,
    source: MetricsSource | None = None,
    on_verdict: Callable[[int, Verdict], None] | None = None,
    settle_seconds: float = 60.0,
    deploy_version: str | None = None,
    given_spec: str | None = None,
    reason: str = "",
) -> RolloutResult:
    """Step the challenger's traffic through ``steps``, analyse between steps, then promote or roll back.

    ``deploy_version``: deploy that version as the challenger at the first step's canary percent first (the delivery
    pipeline's step does); otherwise the challenger already deployed is rolled out. Either way a challenger
    that may not be promoted (its approval, or its spec against ``given_spec``) is refused, audited, before
    any traffic moves, and each step's window opens only once the server answers with the challenger.
    """
    if not steps or any(not 0 < p <= 100 for p in steps) or list(steps) != sorted(steps):
        raise DeploymentError(f"canary steps {list(steps)} must rise within 1..100", fix="e.g. --steps 10,50")
    from riskloop.audit.approval import check_approved

    current = rollout.current(s, model_name)
    candidate = deploy_version or (current.challenger_version if current is not None else None)
    if candidate is not None:
        # refuse before moving any traffic: the rollout would end in a promotion the approval rule forbids
        check_approved(s, model_name, candidate, action="progressive rollout", given_spec=given_spec)
    if deploy_version is not None:
        rollout.deploy_challenger(
            s,
            model_name,
            version=deploy_version,
            canary_percent=steps[0],
            reason=reason or f"progressive rollout of v{deploy_version} at {list(steps)}%",
        )
    policy = policy or CanaryPolicy()
    src = source or metrics_source(s, model_name)
    seen: list[tuple[int, Verdict]] = []
    for pct in steps:
        d = rollout.current(s, model_name)
        if d is None or d.challenger_version is None:
            raise DeploymentError(f"{model_name} has no challenger deployed", fix="deploy one first")
        if d.mode != "canary" or d.canary_percent != pct:
            rollout.set_canary_percent(s, model_name, pct)
        # a fresh window at each canary percent, growing until a verdict; it opens once the server answers with the
        # challenger at this canary percent, so loading the model and switching routes are not judged as its latency
        step_start = _settled(src, d.challenger_version, settle_seconds)

        def seen_at(v: Verdict, pct: int = pct) -> None:
            seen.append((pct, v))
            if on_verdict is not None:
                on_verdict(pct, v)

        verdict = analyze_step(
            s,
            model_name,
            start=step_start,
            interval_seconds=interval_seconds,
            max_intervals=max_intervals,
            policy=policy,
            source=src,
            on_verdict=seen_at,
        )
        if verdict.value == "rollback":
            final = rollout.rollback(
                s, model_name, verdict=verdict.to_dict(), reason=f"canary analysis at {pct}%: rollback"
            )
            return RolloutResult("rolled_back", final, tuple(seen))
        if verdict.value == "continue":
            return RolloutResult("undecided", rollout.current(s, model_name) or d, tuple(seen))
    final = rollout.promote(
        s,
        model_name,
        verdict=seen[-1][1].to_dict(),
        reason=f"canary analysis passed at {list(steps)}%",
        given_spec=given_spec,
    )
    return RolloutResult("promoted", final, tuple(seen))


def _settled(src: MetricsSource, challenger_version: str, timeout_seconds: float) -> Snapshot:
    """The first snapshot after the challenger answered again (its request count moved), within the timeout."""
    first = src.snapshot()
    key = ("challenger", challenger_version)

    def answered(snap: Snapshot) -> float:
        counters = snap.series.get(key)
        return sum(counters.requests.values()) if counters is not None else -1.0

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        snap = src.snapshot()
        if answered(snap) > max(answered(first), 0.0):
            return snap
    raise DeploymentError(
        f"the server did not answer with challenger v{challenger_version} within {timeout_seconds:g} s",
        fix="check the server's log and that traffic is flowing",
    )


__all__ = ["RolloutResult", "analyze_interval", "analyze_step", "judge", "metrics_source", "progressive_rollout"]
