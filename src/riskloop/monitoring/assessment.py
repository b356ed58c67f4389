"""The monitor's assessment (its action, retrain / watch / ok, and why): pure, from drift reports, a decay result,
a policy and the state a daily job carries.

:func:`assess` returns ``retrain``, ``watch`` or ``ok`` with its reasons, and the
new :class:`MonitorState` (JSON, :func:`save_state` / :func:`load_state`).

* **Window and family.** The state keeps the per-day p-values of the last
  ``window_days`` days of the *current* model version, ending yesterday (or on
  the latest day reported today); today's reports are added, older days and
  other versions dropped. Every feature × day and
  score × day test of days with enough rows forms one family, and
  Benjamini-Hochberg at ``fdr`` picks the discoveries: the expected share of
  false alarms among them is at most ``fdr``, however many days and features.
* **Signals.** ``drift_share`` = features with discoveries on at least
  ``min_drift_days`` days of the window (a discovery: BH-rejected *and* an
  effect of at least ``min_effect``) / features tested. Retrain when it
  reaches ``retrain_drift_share``, when performance decay is significant
  (``retrain_on_decay``), or on score drift if ``retrain_on_score_drift``.
  Sustained drift below the share, or a signal that is not acted on, means
  ``watch``; a one-day discovery alone, or nothing, means ``ok``.
* **Minimum samples.** Days with fewer than ``min_current_rows`` tested rows or
  a reference below ``min_reference_rows`` are left out of the family; a decay
  result without enough labels is ignored. Both are named in the reasons.
* **Cooldown.** No retrain within ``cooldown_days`` of the last one (``watch``
  instead).
* **One episode, one retrain.** A retrain opens an *episode* that remembers
  the features (and the score) that drifted. For ``episode_days`` (30: the
  training window, after which everything a retrained model learnt from
  postdates the change) the same drift does not retrain again, whichever
  version is champion: a model retrained on the day a shift starts has seen
  only a day of it, so its own reference still differs from the traffic,
  and 30-day history features keep moving for a month. Inside an episode a
  retrain needs something new: features outside the episode drifting at
  ``retrain_drift_share`` on their own, or significant decay of a version
  other than the one that opened it (the retrain did not help). A whole
  quiet window (``window_days`` tested days, nothing drifted, no decay)
  closes the episode early.
  A retrain is also triggered at most once per champion version: if the
  retrained model never becomes champion (rejected by the gate), the monitor
  stays at ``watch`` and a person decides (or :meth:`MonitorState.end_episode`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from riskloop.errors import ConfigError, DataContractError
from riskloop.monitoring.decay import DecayResult
from riskloop.monitoring.drift import DriftReport
from riskloop.monitoring.stats import benjamini_hochberg
from riskloop.storage import Location, location

Action = Literal["retrain", "watch", "ok"]
ACTIONS: Final[tuple[Action, ...]] = ("retrain", "watch", "ok")
SCORE_TEST: Final = "score"  # the name of the score's test in the family (features cannot be called this)
STATE_FORMAT: Final = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonitorPolicy(_Frozen):
    """The thresholds of the assessment (typed run parameters)."""

    fdr: float = Field(default=0.05, gt=0, lt=1, description="false discovery rate over the window's tests")
    window_days: int = Field(default=7, ge=1, description="days of drift tests the assessment looks at")
    min_reference_rows: int = Field(default=1000, ge=1)
    min_current_rows: int = Field(default=1000, ge=1, description="rows tested per day, after sampling")
    retrain_drift_share: float = Field(
        default=0.3, gt=0, le=1, description="share of features with a discovery that triggers a retrain"
    )
    min_effect: float = Field(
        default=0.1,
        ge=0,
        description=(
            "a discovery counts as drift only if the change is also this large: the Wasserstein distance in reference "
            "standard deviations for numeric features, Cramer's V for categorical ones (drift.FeatureDrift.effect). "
            "With thousands of rows a day, KS finds differences far too small to matter (a drift-free synthetic run "
            "flagged 36-57 % of features every day on p-values alone)"
        ),
    )
    min_drift_days: int = Field(
        default=2,
        ge=1,
        description=(
            "a feature counts as drifted only with material discoveries on at least this many days of the window: "
            "a sustained change, not one day's noise (a drift-free run collected one-day spikes of different "
            "features until a third of them had 'drifted' within a week)"
        ),
    )
    retrain_on_decay: bool = True
    min_decay_days: int = Field(
        default=10,
        ge=1,
        description=(
            "significant decay retrains only once it has held on this many consecutive daily runs of one version, "
            "so that the retrain's training split holds days of the new behaviour. Decay shows once the changed "
            "days are labelled (maturity, 7 days after the change at the earliest); a retrain on day D trains on "
            "days up to D-14 (maturity 7, validation 3, test 4), so 10 days of decay put about 3 changed days into "
            "it. At 7 the offline study's concept-drift retrains were rejected by the gate on seeds 202 and 203, "
            "the candidate having seen none of the new fraud pattern"
        ),
    )
    retrain_on_score_drift: bool = False
    cooldown_days: float = Field(default=7, ge=0, description="no retrain within this many days of the last one")
    episode_days: float = Field(
        default=30,
        ge=0,
        description=(
            "how long an episode opened by a retrain stays open: the same drift does not retrain again within it"
        ),
    )


class DayTests(_Frozen):
    """One day's drift p-values for one model version (None = not tested), as the state keeps them."""

    day: date
    model_version: str
    n_reference: int
    n_current: int
    feature_p_values: dict[str, float | None]
    score_p_value: float | None = None
    feature_effects: dict[str, float | None] = Field(default_factory=dict)
    score_effect: float | None = None

    def effect(self, name: str) -> float | None:
        """The effect size of test ``name`` (a feature or :data:`SCORE_TEST`); None when unknown."""
        return self.score_effect if name == SCORE_TEST else self.feature_effects.get(name)

    def tests(self) -> list[tuple[str, float]]:
        """``(name, p)`` of every test that ran: the features, then the score as :data:`SCORE_TEST`."""
        pairs = [*self.feature_p_values.items(), (SCORE_TEST, self.score_p_value)]
        return [(name, p) for name, p in pairs if p is not None]


class MonitorState(_Frozen):
    """What a daily monitoring job carries from one run to the next (JSON)."""

    format: Literal[1] = STATE_FORMAT
    history: tuple[DayTests, ...] = ()
    last_run_at: datetime | None = None
    last_action: Action | None = None
    last_retrain_at: datetime | None = None
    last_retrain_model_version: str | None = None
    retrains_total: int = Field(default=0, ge=0)
    episode_started_at: datetime | None = None
    decay_since: date | None = Field(
        default=None, description=("first day of the current run of days with significant decay of decay_model_version")
    )
    decay_model_version: str | None = None
    episode_signals: tuple[str, ...] = Field(
        default=(), description=("what the open episode's retrain acted on: drifted features, 'score', 'decay'")
    )

    @field_validator("last_run_at", "last_retrain_at", "episode_started_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.utcoffset() is None:
            raise ValueError("timestamps in the monitor state must carry a timezone")
        return v

    @model_validator(mode="after")
    def _retrain_pair(self) -> MonitorState:
        if (self.last_retrain_at is None) != (self.last_retrain_model_version is None):
            raise ValueError("last_retrain_at and last_retrain_model_version are set together")
        return self

    def end_episode(self) -> MonitorState:
        """The same state with the open episode closed: the current version may trigger a retrain again."""
        return self.model_copy(
            update={
                "last_retrain_model_version": None,
                "last_retrain_at": None,
                "episode_started_at": None,
                "episode_signals": (),
            }
        )

    def episode_open(self, now: datetime, days: float) -> bool:
        return self.episode_started_at is not None and now - self.episode_started_at < timedelta(days=days)


@dataclass(frozen=True)
class Discovery:
    """A test the Benjamini-Hochberg procedure rejected: drift of ``feature`` (or the score) on ``day``."""

    day: date
    feature: str
    p_value: float
    adjusted_p_value: float


@dataclass(frozen=True)
class MonitorAssessment:
    """The monitor's action on the champion and why (glossary: action).

    ``blocked_by`` names the guard that turned a wanted retrain into ``watch``.
    """

    action: Action
    reasons: tuple[str, ...]
    model_version: str
    discoveries: tuple[Discovery, ...]
    n_tests: int
    days_tested: int
    drift_share: float
    drifted_features: tuple[str, ...]
    score_drift: bool
    decay_significant: bool
    blocked_by: Literal["cooldown", "episode"] | None = None

    @property
    def retrain(self) -> bool:
        return self.action == "retrain"


def assess(
    drift: Sequence[DriftReport],
    decay: DecayResult | None,
    policy: MonitorPolicy,
    state: MonitorState,
    *,
    model_version: str,
    now: datetime,
) -> tuple[MonitorAssessment, MonitorState]:
    """Today's assessment for the champion ``model_version`` and the state to carry to tomorrow.

    ``drift``: today's reports (usually one) against this version's reference;
    each is filed under the UTC date of the last instant before its ``window_end`` (``now`` if unset)
    and replaces an earlier entry of the same day. ``decay``: this version's
    recent window against its baseline, or None. Pure: no clock, no I/O.
    """
    if now.utcoffset() is None:
        raise ConfigError(
            f"now={now.isoformat()} has no timezone",
            where="assess",
            fix="pass a tz-aware datetime, e.g. datetime.now(UTC)",
        )
    today = _utc_date(now)
    new_days = [_day_tests(r, model_version, today) for r in drift]
    replaced = {(d.day, d.model_version) for d in new_days}
    # the window's last day: yesterday (what a daily job tests) or a later day reported today
    last_day = max([today - timedelta(days=1), *(d.day for d in new_days)])
    first_day = last_day - timedelta(days=policy.window_days - 1)
    history = tuple(
        sorted(
            (
                d
                for d in (*[d for d in state.history if (d.day, d.model_version) not in replaced], *new_days)
                if d.model_version == model_version and first_day <= d.day <= last_day
            ),
            key=lambda d: d.day,
        )
    )

    reasons: list[str] = []
    eligible = [
        d for d in history if d.n_current >= policy.min_current_rows and d.n_reference >= policy.min_reference_rows
    ]
    if len(eligible) < len(history):
        reasons.append(
            f"{len(history) - len(eligible)} of {len(history)} day(s) in the window below "
            f"{policy.min_current_rows} current or {policy.min_reference_rows} reference rows: not tested"
        )

    family = [(d.day, name, p) for d in eligible for name, p in d.tests()]
    rejected, adjusted = benjamini_hochberg([p for _, _, p in family], policy.fdr)
    effects = {(d.day, name): d.effect(name) for d in eligible for name, _ in d.tests()}

    def material(day: date, name: str) -> bool:
        e = effects.get((day, name))
        return e is None or e >= policy.min_effect  # unknown effect (older state): the p-value decides

    discoveries = tuple(
        Discovery(day, name, p, float(a))
        for (day, name, p), r, a in zip(family, rejected, adjusted, strict=True)
        if r and material(day, name)
    )
    tested_features = {name for _, name, _ in family if name != SCORE_TEST}
    days_found: dict[str, set[date]] = {}
    for d in discoveries:
        days_found.setdefault(d.feature, set()).add(d.day)
    sustained = {name for name, days in days_found.items() if len(days) >= policy.min_drift_days}
    drifted = tuple(sorted(sustained - {SCORE_TEST}))
    drift_share = len(drifted) / len(tested_features) if tested_features else 0.0
    score_drift = SCORE_TEST in sustained

    want: Action = "ok"
    if drifted:
        top = ", ".join(drifted[:5]) + (" ..." if len(drifted) > 5 else "")
        reasons.append(
            f"drift in {len(drifted)} of {len(tested_features)} features ({drift_share:.0%}; {top}) "
            f"over {len(eligible)} day(s), {len(family)} tests, FDR {policy.fdr:g}, "
            f"effect >= {policy.min_effect:g} on >= {policy.min_drift_days} day(s)"
        )
        want = "retrain" if drift_share >= policy.retrain_drift_share else "watch"
        if want == "watch":
            reasons.append(f"drift share {drift_share:.0%} below the retrain level {policy.retrain_drift_share:.0%}")
    if score_drift:
        reasons.append("score distribution drifted")
        want = "retrain" if policy.retrain_on_score_drift else _max(want, "watch")
    decay_significant = False
    decay_since: date | None = None
    if decay is not None:
        reasons.extend(f"decay: {r}" for r in decay.reasons)
        decay_significant = decay.significant
        if decay.significant:
            same_run = state.decay_since is not None and state.decay_model_version == model_version
            decay_since = state.decay_since if same_run else last_day
            assert decay_since is not None
            held = (last_day - decay_since).days + 1
            if not policy.retrain_on_decay:
                want = _max(want, "watch")
            elif held >= policy.min_decay_days:
                want = "retrain"
            else:
                want = _max(want, "watch")
                reasons.append(
                    f"decay held {held} of the {policy.min_decay_days} day(s) it needs to retrain "
                    f"(since {decay_since.isoformat()})"
                )
    if not family and decay is None:
        reasons.append("nothing to test: no day with enough rows and no decay result")

    action: Action = want
    blocked: Literal["cooldown", "episode"] | None = None
    new_state = state
    signals = (*drifted, *(["score"] if score_drift else []), *(["decay"] if decay_significant else []))
    episode_open = state.episode_open(now, policy.episode_days)
    if want == "retrain":
        new_in_episode = _new_in_episode(state, drifted, len(tested_features), decay_significant, policy, model_version)
        if state.last_retrain_model_version == model_version:
            action, blocked = "watch", "episode"
            reasons.append(
                f"retrain already triggered for version {model_version} at "
                f"{_iso(state.last_retrain_at)}: one retrain per episode, waiting for the new champion"
            )
        elif episode_open and new_in_episode is None:
            action, blocked = "watch", "episode"
            assert state.episode_started_at is not None
            reasons.append(
                f"same episode as the retrain at {_iso(state.episode_started_at)} "
                f"({_short(state.episode_signals)}): nothing new drifted and no decay of the retrained "
                f"model; it stays open until "
                f"{_iso(state.episode_started_at + timedelta(days=policy.episode_days))}"
            )
        elif state.last_retrain_at is not None and now - state.last_retrain_at < timedelta(days=policy.cooldown_days):
            action, blocked = "watch", "cooldown"
            reasons.append(
                f"cooldown: last retrain at {_iso(state.last_retrain_at)}, next allowed from "
                f"{_iso(state.last_retrain_at + timedelta(days=policy.cooldown_days))}"
            )
        else:
            if episode_open and new_in_episode:
                reasons.append(f"a new episode: {new_in_episode}")
            new_state = state.model_copy(
                update={
                    "last_retrain_at": now,
                    "last_retrain_model_version": model_version,
                    "retrains_total": state.retrains_total + 1,
                    "episode_started_at": now,
                    "episode_signals": signals,
                }
            )
    elif action == "ok" and state.episode_started_at is not None and len(eligible) >= policy.window_days:
        # a whole quiet window, not the first day of a new version (which cannot show sustained drift yet)
        new_state = state.model_copy(update={"episode_started_at": None, "episode_signals": ()})
        reasons.append(
            f"the episode opened at {_iso(state.episode_started_at)} is over: nothing drifted for {len(eligible)} days"
        )
    elif state.episode_started_at is not None and not episode_open:
        new_state = state.model_copy(update={"episode_started_at": None, "episode_signals": ()})
    if action == "ok" and not reasons:
        reasons.append(f"no drift over {len(eligible)} day(s) ({len(family)} tests, FDR {policy.fdr:g})")
    new_state = new_state.model_copy(
        update={
            "history": history,
            "last_run_at": now,
            "last_action": action,
            "decay_since": decay_since,
            "decay_model_version": model_version if decay_since else None,
        }
    )
    assessment = MonitorAssessment(
        action=action,
        reasons=tuple(reasons),
        model_version=model_version,
        discoveries=discoveries,
        n_tests=len(family),
        days_tested=len(eligible),
        drift_share=drift_share,
        drifted_features=drifted,
        score_drift=score_drift,
        decay_significant=decay_significant,
        blocked_by=blocked,
    )
    return assessment, new_state


def _new_in_episode(
    state: MonitorState,
    drifted: Sequence[str],
    n_tested: int,
    decay_significant: bool,
    policy: MonitorPolicy,
    model_version: str,
) -> str | None:
    """Why today's wanted retrain is not the open episode's (None: it is the same episode)."""
    fresh = sorted(set(drifted) - set(state.episode_signals))
    if n_tested and len(fresh) / n_tested >= policy.retrain_drift_share:
        return f"{len(fresh)} feature(s) outside the open episode drifted ({_short(tuple(fresh))})"
    if decay_significant and state.last_retrain_model_version not in (None, model_version):
        return f"version {model_version}, retrained in the episode, decays too"
    return None


def _short(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "") if names else "nothing recorded"


def save_state(state: MonitorState, path: Path | Location) -> Location:
    """Write ``state`` as JSON, atomically for readers (local or object store); return where."""
    target = location(path)
    target.write_text(state.model_dump_json(indent=2) + "\n")
    return target


def load_state(path: Path | Location) -> MonitorState:
    """The state saved at ``path``; a fresh :class:`MonitorState` when there is none yet."""
    source = location(path)
    try:
        text = source.read_text()
    except FileNotFoundError:
        return MonitorState()
    try:
        return MonitorState.model_validate_json(text)
    except ValidationError as exc:
        raise DataContractError(
            f"the monitor state cannot be read: {exc}",
            where=str(source),
            fix="restore it from a backup, or delete it to start a fresh window "
            "(the cooldown and episode are then forgotten)",
        ) from exc


def _day_tests(report: DriftReport, model_version: str, today: date) -> DayTests:
    if report.model_version is not None and report.model_version != model_version:
        raise ConfigError(
            f"a drift report of version {report.model_version} was passed for version {model_version}",
            where="assess",
            fix="pass only reports computed against the current champion's reference",
        )
    if SCORE_TEST in report.p_values:
        raise ConfigError(
            f"a feature is called {SCORE_TEST!r}, the name of the score's test",
            where="assess",
            fix="rename the feature",
        )
    # the day of the window's last instant: a day-aligned window [d, d + 1) is filed under d
    day = _utc_date(report.window_end - timedelta(microseconds=1)) if report.window_end is not None else today
    return DayTests(
        day=day,
        model_version=model_version,
        n_reference=report.n_reference,
        n_current=report.n_current,
        feature_p_values={k: _finite(p) for k, p in report.p_values.items()},
        score_p_value=_finite(report.score_p_value),
        feature_effects={f.feature: _finite(f.effect) for f in report.features},
        score_effect=_finite(report.score.effect) if report.score is not None else None,
    )


def _finite(p: float) -> float | None:
    return None if math.isnan(p) else p


def _utc_date(stamp: datetime) -> date:
    offset = stamp.utcoffset()
    return (stamp - offset).date() if offset is not None else stamp.date()


def _max(a: Action, b: Action) -> Action:
    return a if ACTIONS.index(a) <= ACTIONS.index(b) else b


def _iso(stamp: datetime | None) -> str:
    return stamp.isoformat(timespec="seconds") if stamp is not None else "?"


__all__ = [
    "ACTIONS",
    "Action",
    "DayTests",
    "Discovery",
    "MonitorAssessment",
    "MonitorPolicy",
    "MonitorState",
    "assess",
    "load_state",
    "save_state",
]
