"""The retrain assessment: BH over the window, minimum samples, watch vs retrain, cooldown, one retrain per episode."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from riskloop.errors import ConfigError, DataContractError
from riskloop.monitoring.assessment import (
    SCORE_TEST,
    Action,
    MonitorPolicy,
    MonitorState,
    assess,
    load_state,
    save_state,
)
from riskloop.monitoring.decay import DecayResult, Performance
from riskloop.monitoring.drift import KS, DriftReport, FeatureDrift

FEATURES = [f"f{i}" for i in range(10)]
DAY0 = datetime(2026, 4, 1, tzinfo=UTC)
# one day of drift is enough here, to test the rest of the logic day by day; persistence has its own test
POLICY = MonitorPolicy(
    fdr=0.05,
    window_days=7,
    min_current_rows=1000,
    min_reference_rows=1000,
    retrain_drift_share=0.3,
    cooldown_days=7,
    min_drift_days=1,
    min_decay_days=1,
)


def report(
    day: int,
    p: Mapping[str, float] | None = None,
    *,
    score_p: float = 0.6,
    version: str | None = "1",
    n_current: int = 50_000,
    seed: int = 0,
) -> DriftReport:
    """A report for DAY0 + day: uniform (no-drift) p-values except those given."""
    rng = np.random.default_rng(seed * 1000 + day)
    values = {name: float(rng.uniform(0.05, 1.0)) for name in FEATURES} | dict(p or {})
    features = tuple(
        FeatureDrift(name, "numeric", KS, v, None, 5000, n_current, 0.0, 0.0) for name, v in values.items()
    )
    score = FeatureDrift("score", "numeric", KS, score_p, None, 5000, n_current, 0.0, 0.0)
    start = DAY0 + timedelta(days=day)
    return DriftReport(
        features=features,
        score=score,
        alpha=0.05,
        n_reference=5000,
        n_current=n_current,
        n_current_total=n_current,
        sampled=False,
        seed=0,
        model_version=version,
        window_start=start,
        window_end=start + timedelta(days=1),
    )


def run(
    days: list[DriftReport],
    state: MonitorState | None = None,
    *,
    version: str = "1",
    decay: DecayResult | None = None,
    policy: MonitorPolicy = POLICY,
) -> tuple[list[Action], MonitorState]:
    """Feed one report per daily run; return the actions and the final state."""
    state = state or MonitorState()
    actions = []
    for r in days:
        assert r.window_end is not None
        now = r.window_end + timedelta(hours=1)
        assessment, state = assess([r], decay, policy, state, model_version=version, now=now)
        actions.append(assessment.action)
    return actions, state


def test_no_drift_is_ok() -> None:
    assessment, state = assess(
        [report(0)], None, POLICY, MonitorState(), model_version="1", now=DAY0 + timedelta(days=1)
    )
    assert assessment.action == "ok" and assessment.n_tests == 11 and not assessment.discoveries
    assert state.last_action == "ok" and len(state.history) == 1 and state.retrains_total == 0


def test_one_drifted_feature_is_watch_three_are_retrain() -> None:
    assessment, _ = assess(
        [report(0, {"f3": 1e-6})], None, POLICY, MonitorState(), model_version="1", now=DAY0 + timedelta(days=1)
    )
    assert assessment.action == "watch" and assessment.drifted_features == ("f3",)
    assert assessment.drift_share == pytest.approx(0.1)
    assessment, state = assess(
        [report(0, {"f1": 1e-6, "f3": 1e-7, "f8": 1e-5})],
        None,
        POLICY,
        MonitorState(),
        model_version="1",
        now=DAY0 + timedelta(days=1),
    )
    assert assessment.action == "retrain" and assessment.retrain and assessment.drifted_features == ("f1", "f3", "f8")
    assert state.retrains_total == 1 and state.last_retrain_model_version == "1"


def test_bh_is_applied_over_every_feature_and_day_of_the_window() -> None:
    # 0.004 would pass on its own (0.004 <= 0.05 * 1/11), not as one of 7 x 11 = 77 tests (line 0.05/77 = 0.00065)
    days = [report(d) for d in range(6)] + [report(6, {"f2": 0.004})]
    actions, _ = run(days)
    assert actions[-1] == "ok"
    alone, _ = assess(
        [report(6, {"f2": 0.004})], None, POLICY, MonitorState(), model_version="1", now=DAY0 + timedelta(days=7)
    )
    assert alone.action == "watch"
    # three p-values of 0.0005 in the window: the third smallest meets its line 3/77 * 0.05 = 0.00195
    days = [report(d, {"f2": 0.0005} if d in (2, 4, 6) else None) for d in range(7)]
    actions, _ = run(days)
    assert actions[-1] == "watch"


def test_significant_but_tiny_changes_are_not_drift() -> None:
    """With 50,000 rows a day KS rejects changes nobody should retrain for: the effect size must be material."""
    tiny = report(1, {name: 1e-12 for name in FEATURES})
    tiny = dataclasses.replace(tiny, features=tuple(dataclasses.replace(f, effect=0.02) for f in tiny.features))
    assessment, _ = assess(
        [tiny], None, POLICY, MonitorState(), model_version="1", now=tiny.window_end + timedelta(hours=1)
    )  # type: ignore[operator]
    assert assessment.action == "ok" and assessment.drifted_features == ()
    large = dataclasses.replace(tiny, features=tuple(dataclasses.replace(f, effect=0.3) for f in tiny.features))
    assessment, _ = assess(
        [large], None, POLICY, MonitorState(), model_version="1", now=large.window_end + timedelta(hours=1)
    )  # type: ignore[operator]
    assert assessment.action == "retrain" and len(assessment.drifted_features) == len(FEATURES)


def test_drift_must_persist_for_min_drift_days() -> None:
    policy = POLICY.model_copy(update={"min_drift_days": 2})
    assert MonitorPolicy().min_drift_days == 2
    drifted = {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9}
    # one-day spikes of different features, a week long: never two days for one feature, never drift
    spikes = [report(d, {f"f{d}": 1e-9}) for d in range(7)]
    actions, _ = run(spikes, policy=policy)
    assert actions == ["ok"] * 7
    assessment, _ = assess(spikes[:1], None, policy, MonitorState(), model_version="1", now=DAY0 + timedelta(days=1))
    assert assessment.drifted_features == () and len(assessment.discoveries) == 1
    # a sustained change is found on its second day
    actions, _ = run([report(0, drifted), report(1, drifted)], policy=policy)
    assert actions == ["ok", "retrain"]


def test_decay_must_hold_for_min_decay_days_of_one_version() -> None:
    policy = POLICY.model_copy(update={"min_decay_days": 3})
    assert MonitorPolicy().min_decay_days == 10
    actions, state = run([report(d) for d in range(3)], decay=decayed(), policy=policy)
    assert actions == ["watch", "watch", "retrain"]
    assessment, _ = assess(
        [report(1)], decayed(), policy, MonitorState(), model_version="1", now=DAY0 + timedelta(days=2)
    )
    assert "decay held 1 of the 3 day(s)" in assessment.reasons[-1]
    # a day without significant decay starts the count again
    _, state = run([report(0)], decay=decayed(), policy=policy)
    _, state = run([report(1)], state, decay=decayed(significant=False), policy=policy)
    assert state.decay_since is None
    actions, state = run([report(2), report(3)], state, decay=decayed(), policy=policy)
    assert actions == ["watch", "watch"] and state.decay_since == (DAY0 + timedelta(days=2)).date()


def test_score_drift_alone_is_watch_unless_the_policy_retrains_on_it() -> None:
    now = DAY0 + timedelta(days=1)
    assessment, _ = assess([report(0, score_p=1e-9)], None, POLICY, MonitorState(), model_version="1", now=now)
    assert assessment.action == "watch" and assessment.score_drift
    assert any(d.feature == SCORE_TEST for d in assessment.discoveries)
    strict = POLICY.model_copy(update={"retrain_on_score_drift": True})
    assessment, _ = assess([report(0, score_p=1e-9)], None, strict, MonitorState(), model_version="1", now=now)
    assert assessment.action == "retrain"


def test_days_below_the_minimum_rows_are_not_tested() -> None:
    drifted = {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9, "f4": 1e-9}
    assessment, _ = assess(
        [report(0, drifted, n_current=400)],
        None,
        POLICY,
        MonitorState(),
        model_version="1",
        now=DAY0 + timedelta(days=1),
    )
    assert assessment.action == "ok" and assessment.n_tests == 0
    assert "below 1000 current or 1000 reference rows" in assessment.reasons[0]


def decayed(significant: bool = True) -> DecayResult:
    perf = Performance(
        n=1,
        positives=1,
        pr_auc=0.5,
        pr_auc_low=0.4,
        pr_auc_high=0.6,
        pr_auc_se=0.05,
        recall=0.5,
        recall_low=0.4,
        recall_high=0.6,
        true_positives=1,
        false_positives=0,
        fpr=0.0,
        threshold=0.5,
    )
    return DecayResult(
        baseline=perf,
        recent=perf,
        pr_auc_drop=0.2,
        pr_auc_p_value=0.001,
        recall_drop=0.2,
        recall_p_value=0.001,
        alpha=0.05,
        min_drop=0.0,
        min_positives=30,
        enough_labels=True,
        significant=significant,
        reasons=("recall dropped 0.200 (p=0.001 < 0.025)",),
    )


def test_the_same_drift_against_the_retrained_model_is_the_same_episode() -> None:
    drifted = {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9}
    actions, state = run([report(0, drifted)])
    assert actions == ["retrain"] and state.episode_signals == ("f1", "f2", "f3")
    # the retrained model (version 2) is champion two days later and sees the same drift for weeks:
    # it learnt from a day of the shift only; one episode, one retrain
    actions, state = run([report(d, drifted, version="2") for d in range(2, 30)], state, version="2")
    assert set(actions) == {"watch"} and state.retrains_total == 1
    assessment, _ = assess(
        [report(29, drifted, version="2")], None, POLICY, state, model_version="2", now=DAY0 + timedelta(days=30)
    )
    assert assessment.blocked_by == "episode" and "same episode" in assessment.reasons[-1]
    # the episode lasts episode_days (30): after that the same drift is a new signal
    actions, state = run([report(30, drifted, version="2")], state, version="2")
    assert actions == ["retrain"] and state.retrains_total == 2


def test_new_features_drifting_or_the_retrained_model_decaying_open_a_new_episode() -> None:
    first = {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9}
    _, state = run([report(0, first)])
    # within the cooldown, something new is still held back
    assessment, _ = assess(
        [report(3, version="2")], decayed(), POLICY, state, model_version="2", now=DAY0 + timedelta(days=4)
    )
    assert assessment.action == "watch" and assessment.blocked_by == "cooldown"
    # after it: decay of the retrained version retrains
    assessment, after = assess(
        [report(9, version="2")], decayed(), POLICY, state, model_version="2", now=DAY0 + timedelta(days=10)
    )
    assert assessment.action == "retrain" and "version 2, retrained in the episode, decays" in assessment.reasons[-1]
    assert after.episode_signals == ("decay",)
    # ... and so do three other features (30 % of ten) drifting on their own
    other = {"f1": 1e-9, "f5": 1e-9, "f6": 1e-9, "f7": 1e-9}
    actions, state2 = run([report(9, other, version="2")], state, version="2")
    assert actions == ["retrain"] and state2.episode_signals == ("f1", "f5", "f6", "f7")
    # but decay of the version that opened the episode is that episode (it waits for the new champion)
    assessment, _ = assess([report(9)], decayed(), POLICY, state, model_version="1", now=DAY0 + timedelta(days=10))
    assert assessment.blocked_by == "episode"


def test_a_quiet_day_closes_the_episode() -> None:
    drifted = {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9}
    _, state = run([report(0, drifted)])
    # the new version's first quiet days do not close it: it cannot show sustained drift yet
    actions, state = run([report(d, version="2") for d in range(2, 8)], state, version="2")
    assert set(actions) == {"ok"} and state.episode_signals == ("f1", "f2", "f3")
    actions, state = run([report(d, version="2") for d in range(8, 10)], state, version="2")
    assert actions[-1] == "ok" and state.episode_started_at is None and state.episode_signals == ()
    actions, state = run([report(11, drifted, version="2")], state, version="2")
    assert actions == ["retrain"]


def test_one_episode_one_retrain_and_the_next_needs_new_drift() -> None:
    drifted = {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9}
    actions, state = run([report(d, drifted) for d in range(12)])
    # day 0 retrains; version 1 stays champion (say the retrained model failed the gate): never again for it,
    # even after the cooldown
    assert actions == ["retrain"] + ["watch"] * 11 and state.retrains_total == 1
    assessment, _ = assess([report(12, drifted)], None, POLICY, state, model_version="1", now=DAY0 + timedelta(days=13))
    assert assessment.blocked_by == "episode"
    # a new champion: the old version's days leave the window, and without new drift it is ok
    actions, state = run([report(13, version="2")], state, version="2")
    assert actions == ["ok"] and {d.model_version for d in state.history} == {"2"}
    # ending the episode by hand lets version 1 retrain again
    actions, _ = run([report(12, drifted)], state.end_episode())
    assert actions == ["retrain"]


def test_significant_decay_retrains_and_too_few_labels_do_not() -> None:
    perf = Performance(
        n=1,
        positives=1,
        pr_auc=0.5,
        pr_auc_low=0.4,
        pr_auc_high=0.6,
        pr_auc_se=0.05,
        recall=0.5,
        recall_low=0.4,
        recall_high=0.6,
        true_positives=1,
        false_positives=0,
        fpr=0.0,
        threshold=0.5,
    )
    decay = DecayResult(
        baseline=perf,
        recent=perf,
        pr_auc_drop=0.2,
        pr_auc_p_value=0.001,
        recall_drop=0.2,
        recall_p_value=0.001,
        alpha=0.05,
        min_drop=0.0,
        min_positives=30,
        enough_labels=True,
        significant=True,
        reasons=("recall dropped 0.200 (p=0.001 < 0.025)",),
    )
    now = DAY0 + timedelta(days=1)
    assessment, _ = assess([report(0)], decay, POLICY, MonitorState(), model_version="1", now=now)
    assert assessment.action == "retrain" and assessment.decay_significant
    assert "decay: recall dropped" in assessment.reasons[0]
    weak = DecayResult(
        **{
            **decay.__dict__,
            "enough_labels": False,
            "significant": False,
            "reasons": ("not enough labels: 12 recent ...",),
        }
    )
    assessment, _ = assess([report(0)], weak, POLICY, MonitorState(), model_version="1", now=now)
    assert assessment.action == "ok" and "decay: not enough labels" in assessment.reasons[0]


def test_window_drops_old_days_and_reruns_replace_a_day() -> None:
    _, state = run([report(d) for d in range(10)])
    assert [d.day for d in state.history] == [(DAY0 + timedelta(days=d)).date() for d in range(3, 10)]
    now = DAY0 + timedelta(days=10, hours=2)
    _, again = assess([report(9, {"f1": 1e-9})], None, POLICY, state, model_version="1", now=now)
    assert len(again.history) == 7 and again.history[-1].feature_p_values["f1"] == 1e-9


def test_state_survives_json(tmp_path: Path) -> None:
    path = tmp_path / "monitor" / "state.json"
    assert load_state(path) == MonitorState()
    nan_report = report(0, {"f0": float("nan")})
    _, state = run([nan_report, report(1, {"f1": 1e-9, "f2": 1e-9, "f3": 1e-9})])
    save_state(state, path)
    assert load_state(path) == state and state.history[0].feature_p_values["f0"] is None
    path.write_text('{"format": 1, "retrains_total": -1}')
    with pytest.raises(DataContractError, match="delete it to start a fresh window"):
        load_state(path)


def test_misuse_is_refused() -> None:
    with pytest.raises(ConfigError, match="version 2"):
        assess([report(0, version="2")], None, POLICY, MonitorState(), model_version="1", now=DAY0)
    with pytest.raises(ConfigError, match="timezone"):
        assess([], None, POLICY, MonitorState(), model_version="1", now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="fdr"):
        MonitorPolicy(fdr=0)
