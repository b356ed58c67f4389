"""The daily monitoring job: drift and decay of the served champion, the action, reports, gauges, audit.

For a day ``D`` (the window ``[D 00:00, D+1 00:00)`` UTC):

1. the champion (deployment record, or the ``champion`` alias) and its version's
   reference sample and ``model.json`` (from the registry, hash-checked);
2. **drift**: the day's prediction-log rows of that version in the champion role
   against the reference (``drift.detect_drift``: KS / chi-square p-values,
   Evidently's HTML beside a JSON summary);
3. **decay**: the champion's predictions of the last ``decay_window_days`` mature
   days joined with the labels known at the end of ``D`` (chargebacks arrive
   late), against the version's own test evaluation (``decay.detect_decay``);
4. **action** (``assessment.assess``: Benjamini-Hochberg over the window's tests,
   cooldown, one retrain per episode), with the state carried in
   ``monitoring/<model>-state.json`` under the shared storage root;
5. gauges pushed to the Pushgateway when one is configured, audit events for
   drift found and retrains triggered, and the day's JSON summary.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from riskloop.audit.log import open_audit_log
from riskloop.data.spec import load_spec
from riskloop.errors import RiskloopError
from riskloop.locks import exclusive
from riskloop.monitoring.assessment import MonitorPolicy, MonitorState, assess, load_state, save_state
from riskloop.settings import Settings

log = logging.getLogger(__name__)
DECAY_WINDOW_DAYS = 7


@dataclass(frozen=True)
class MonitorOutcome:
    """What one day's monitoring found and decided (JSON via ``to_dict``)."""

    day: date
    model: str
    model_version: str
    action: str
    reasons: tuple[str, ...]
    rows: int
    drift_share: float | None
    drifted_features: tuple[str, ...]
    decay_significant: bool
    summary_path: Path
    report_html: Path | None

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            day=self.day.isoformat(),
            summary_path=str(self.summary_path),
            report_html=str(self.report_html) if self.report_html else None,
        )
        return out


def _champion_version(s: Settings, model_name: str) -> str:
    from riskloop.delivery import rollout

    d = rollout.current(s, model_name)
    if d is not None:
        return d.champion_version
    return rollout.resolve_version(s, model_name, alias="champion")


def monitor_day(
    s: Settings,
    spec_name: str,
    day: date,
    *,
    policy: MonitorPolicy | None = None,
    decay_window_days: int = DECAY_WINDOW_DAYS,
    pushgateway_url: str | None = None,
    seed: int = 0,
) -> MonitorOutcome:
    """Monitor the champion's day ``day``; see the module docstring."""
    from riskloop.data.io import read_partitions
    from riskloop.model import load_model
    from riskloop.monitoring import decay as dec
    from riskloop.monitoring.drift import detect_drift, write_report
    from riskloop.monitoring.frames import current_frame, feature_kinds, reference_frame
    from riskloop.registry.mlflow_registry import (
        MODEL_DIR_ARTIFACT,
        REFERENCE_ARTIFACT,
        download_model_dir,
        download_reference,
        get_version,
        run_info,
    )
    from riskloop.serving.prediction_log import read_prediction_log

    policy = policy or MonitorPolicy()
    spec = load_spec(spec_name)
    name = spec.registered_model(s.mlflow.model_name)
    version = _champion_version(s, name)
    info = get_version(s.tracking_uri, name, version)
    # a version's artifacts never change: fetched once per version, the model hash-checked on every load
    cache = s.root / "monitoring" / "models" / f"{name}-v{version}"
    model_dir = cache / MODEL_DIR_ARTIFACT
    if not (model_dir / "model.ubj").is_file():
        model_dir = download_model_dir(s.tracking_uri, info.run_id, cache)
    bundle = load_model(model_dir, expected_sha256=info.tags.get("model_sha256"))
    reference_path = cache / REFERENCE_ARTIFACT / "reference.parquet"
    if not reference_path.is_file():
        reference_path = download_reference(s.tracking_uri, info.run_id, cache)
    reference = pd.read_parquet(reference_path)
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    out_dir = s.reports_dir / "monitoring" / day.isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)

    served = read_prediction_log(s.predictions, start=start - timedelta(days=decay_window_days + 30), end=end)
    mine = served[(served["role"] == "champion") & (served["model_version"] == version)] if len(served) else served
    today = mine[(pd.to_datetime(mine["time"], utc=True) >= start)] if len(mine) else mine
    numeric, categorical = feature_kinds(bundle.features)

    drift = None
    html: Path | None = None
    if len(today) >= policy.min_current_rows and len(reference) >= policy.min_reference_rows:
        html = out_dir / "drift.html"
        drift = detect_drift(
            reference_frame(reference, bundle.features),
            current_frame(today, bundle.features),
            numeric=numeric,
            categorical=categorical,
            html_path=html,
            model_version=version,
            window_start=start,
            window_end=end,
            seed=seed,
        )

    decay = None
    if len(mine):
        tx = read_partitions(spec.source_path(s.shared), day - timedelta(days=decay_window_days + 30), day)
        labels = dec.known_labels(tx, spec, as_of=end)
        joined = dec.join_labels(mine, labels, id_column="transaction_id", role="champion", model_version=version)
        recent = dec.recent_mature_rows(
            joined, as_of=end, maturity_days=spec.label.maturity_days, days=decay_window_days
        )
        if len(recent) and int(recent[dec.LABEL].sum()) > 0:
            baseline = dec.baseline_from_evaluation(run_info(s.tracking_uri, info.run_id)["metrics"])
            decay = dec.detect_decay(baseline, dec.window_performance(recent, seed=seed))

    # read, assess, write back: one run at a time per model (a run started by hand beside the schedule)
    with exclusive(s, f"monitor-state:{name}"):
        state_path = s.monitor_state(name)
        state = load_state(state_path)
        assessment, new_state = assess(
            [drift] if drift is not None else [], decay, policy, state, model_version=version, now=end
        )
        save_state(new_state, state_path)
    _gauges(s, name, version, drift, decay, assessment, new_state, end, pushgateway_url)
    # the share the action is based on: BH-significant over the window and material (effect size)

    outcome = MonitorOutcome(
        day=day,
        model=name,
        model_version=version,
        action=assessment.action,
        reasons=assessment.reasons,
        rows=len(today),
        drift_share=assessment.drift_share if drift is not None else None,
        drifted_features=assessment.drifted_features,
        decay_significant=bool(decay is not None and decay.significant),
        summary_path=out_dir / "summary.json",
        report_html=html,
    )
    if drift is not None and html is not None:
        # the same story in all three: the CLI line and summary.json (the outcome), drift.json and drift.html
        story = _story(outcome, assessment, policy, drift)
        write_report(drift, out_dir / "drift.json", assessment=story)
        _open_with(html, _story_html(story))
    summary = {**outcome.to_dict(), "decay": asdict(decay) if decay is not None else None}
    outcome.summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _audit(s, outcome, assessment)
    return outcome


def _story(outcome: MonitorOutcome, assessment: Any, policy: MonitorPolicy, drift: Any) -> dict[str, Any]:
    """riskloop's action on the day, the drifted features and the rule that made them drifted."""
    import math

    tested = sum(not math.isnan(f.p_value) for f in drift.features)
    return {
        "day": outcome.day.isoformat(),
        "model": outcome.model,
        "model_version": outcome.model_version,
        "action": outcome.action,
        "reasons": list(outcome.reasons),
        "drifted_features": list(outcome.drifted_features),
        "drift_share": outcome.drift_share,
        "rule": (
            f"a feature is drifted when its test is a discovery (Benjamini-Hochberg at FDR {policy.fdr:g} over "
            f"the {policy.window_days}-day window's tests, and an effect of at least {policy.min_effect:g}) "
            f"on at least {policy.min_drift_days} day(s) of the window; retrain when the drifted share reaches "
            f"{policy.retrain_drift_share:.0%}"
        ),
        "discoveries_today": sorted(d.feature for d in assessment.discoveries if d.day == outcome.day),
        "features_tested_today": tested,
    }


def _story_html(story: dict[str, Any]) -> str:
    from html import escape

    drifted = ", ".join(story["drifted_features"]) or "none"
    share = "-" if story["drift_share"] is None else f"{story['drift_share']:.0%}"
    today = ", ".join(story["discoveries_today"]) or "none"
    reasons = "".join(f"<li>{escape(r)}</li>" for r in story["reasons"])
    return (
        '<section id="riskloop-assessment" style="font-family:sans-serif;margin:1em;padding:1em;border:2px solid #333">'
        f"<h1>riskloop monitoring: {escape(story['model'])} v{escape(story['model_version'])}, {story['day']}</h1>"
        f"<p><b>action: {escape(story['action'])}</b></p><ul>{reasons}</ul>"
        f"<p><b>drifted features</b> (share {share}): {escape(drifted)}</p>"
        f"<p><b>the rule</b>: {escape(story['rule'])}.</p>"
        f"<p>discoveries on this day alone (one day does not make drift): {escape(today)} "
        f"(of {story['features_tested_today']} features tested)</p>"
        "<p>Below: Evidently's per-column detail of this day against the model's reference. Its verdicts are its "
        "own (categorical columns by Jensen-Shannon distance); the p-values of record are in drift.json.</p>"
        "</section>"
    )


def _open_with(html_path: Path, section: str) -> None:
    """Put ``section`` first in the body of Evidently's page."""
    import re

    page = html_path.read_text(encoding="utf-8")
    body = re.search(r"<body[^>]*>", page)
    at = body.end() if body else 0
    html_path.write_text(page[:at] + section + page[at:], encoding="utf-8")


def _gauges(
    s: Settings,
    name: str,
    version: str,
    drift: Any,
    decay: Any,
    assessment: Any,
    state: MonitorState,
    now: datetime,
    pushgateway_url: str | None,
) -> None:
    from prometheus_client import CollectorRegistry

    from riskloop.monitoring.metrics import MonitoringMetrics, push_monitoring_metrics

    registry = CollectorRegistry()
    m = MonitoringMetrics(registry)
    if drift is not None:
        m.record_drift(drift, model=name, model_version=version, drift_share=assessment.drift_share)
    if decay is not None:
        m.record_decay(decay, model=name, model_version=version)
    m.record_action(assessment, state, model=name, now=now)
    if pushgateway_url:
        try:
            push_monitoring_metrics(registry, pushgateway_url, grouping_key={"model": name})
        except RiskloopError as exc:  # the action stands; the dashboard is late, and says so by its age
            log.warning("monitoring gauges not pushed: %s", exc)


def _audit(s: Settings, outcome: MonitorOutcome, assessment: Any) -> None:
    audit = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)
    ids = {"model": outcome.model, "model_version": outcome.model_version, "day": outcome.day.isoformat()}
    details = {
        "action": outcome.action,
        "reasons": list(outcome.reasons),
        "rows": outcome.rows,
        "drift_share": outcome.drift_share,
        "drifted_features": list(outcome.drifted_features),
        "decay_significant": outcome.decay_significant,
        "summary": str(outcome.summary_path),
    }
    if outcome.drifted_features or assessment.score_drift or outcome.decay_significant:
        audit.append("drift_detected", actor=s.audit.actor, ids=ids, details=details)
    if outcome.retrain:
        audit.append("retrain_triggered", actor=s.audit.actor, ids=ids, details=details)


__all__ = ["DECAY_WINDOW_DAYS", "MonitorOutcome", "monitor_day"]
