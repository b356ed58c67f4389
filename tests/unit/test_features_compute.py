from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from riskloop.data.synthetic import GeneratorParams, generate
from riskloop.features.compute import (
    STATE_HORIZON_US,
    US,
    CardState,
    append_to_state,
    compute_batch_features,
    compute_realtime_features,
    context_features,
    realtime_from_state,
    state_snapshots,
)


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_batch_features_match_brute_force_and_never_see_their_own_day() -> None:
    df = generate(GeneratorParams(days=10, n_cards=120, n_merchants=30))
    card_daily, merchant_daily = compute_batch_features(df)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(card_daily), 150, replace=False):
        r = card_daily.iloc[i]
        stamp = r["feature_timestamp"]
        hist = df[(df.card_id == r.card_id) & (df.event_timestamp < stamp)]  # strictly before the stamp
        h7 = hist[hist.event_timestamp >= stamp - pd.Timedelta(days=7)]
        h30 = hist[hist.event_timestamp >= stamp - pd.Timedelta(days=30)]
        assert r.card_txn_count_7d == len(h7) and r.card_txn_count_30d == len(h30)
        if len(h7):
            assert math.isclose(r.card_amount_mean_7d, h7.amount.mean())
            assert r.card_distinct_merchants_7d == h7.merchant_id.nunique()
            assert r.card_distinct_countries_7d == h7.country.nunique()
        if len(h30):
            assert math.isclose(r.card_amount_max_30d, h30.amount.max())
            assert r.card_usual_country == h30.country.astype(str).value_counts().sort_index().idxmax()
        if len(h30) > 1:
            assert math.isclose(r.card_amount_std_30d, h30.amount.std(), rel_tol=1e-6)
    for i in rng.choice(len(merchant_daily), 50, replace=False):
        r = merchant_daily.iloc[i]
        stamp = r["feature_timestamp"]
        h7 = df[
            (df.merchant_id == r.merchant_id)
            & (df.event_timestamp < stamp)
            & (df.event_timestamp >= stamp - pd.Timedelta(days=7))
        ]
        assert r.merchant_txn_count_7d == len(h7)
    # rows start the day after an entity's first activity and stamps are day starts
    assert (card_daily["feature_timestamp"].dt.hour == 0).all()
    first = df.groupby("card_id")["event_timestamp"].min().dt.floor("D")
    mins = card_daily.groupby("card_id")["feature_timestamp"].min()
    assert (mins > first.loc[mins.index]).all()


# distinct (card, time): a repeated (card, time, amount) is a retry by definition (see append_to_state)
events = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3 * 86_400), st.floats(0.5, 5000)),
    min_size=1,
    max_size=60,
    unique_by=lambda e: (e[0], e[1]),
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_realtime_vectorised_equals_state_function(evts: list[tuple[int, int, float]]) -> None:
    """The training implementation and the serving implementation agree on any stream."""
    base = pd.Timestamp("2026-01-01", tz="UTC").value // 1000
    df = pd.DataFrame(
        {
            "card_id": [f"C{c}" for c, _, _ in evts],
            "event_timestamp": pd.to_datetime([base + s * US for _, s, _ in evts], unit="us", utc=True).as_unit("us"),
            "amount": [a for _, _, a in evts],
        }
    )
    offline = compute_realtime_features(df)
    # replay in time order exactly as the predictor does: read state, score, then push
    states: dict[str, CardState] = {}
    order = np.lexsort((df.index.to_numpy(), df.event_timestamp.to_numpy()))
    online: dict[int, dict[str, float]] = {}
    for i in order:
        card, t_us, amount = df.card_id[i], int(df.event_timestamp[i].value // 1000), float(df.amount[i])
        st_ = states.get(card, CardState())
        online[i] = realtime_from_state(st_, t_us)
        states[card] = append_to_state(st_, t_us, amount)
    for i, feats in online.items():
        for name, value in feats.items():
            assert close(value, float(offline.loc[i, name])), (i, name, value, offline.loc[i, name])


def test_retried_event_is_counted_once() -> None:
    s = append_to_state(CardState(), 10 * US, 5.0)
    assert append_to_state(s, 10 * US, 5.0) == s
    assert len(append_to_state(s, 10 * US, 6.0).event_us) == 2  # same instant, another amount: another event


def test_state_is_pruned_to_the_horizon() -> None:
    s = CardState()
    for k in range(5):
        s = append_to_state(s, k * 10 * 3600 * US, 1.0)  # every 10 h
    last = 40 * 3600 * US
    assert all(t > last - STATE_HORIZON_US for t in s.event_us)
    assert len(s.event_us) == 3


def test_snapshots_hold_only_strictly_earlier_events() -> None:
    df = generate(GeneratorParams(days=3, n_cards=50, n_merchants=10))
    b = pd.Timestamp("2026-01-03", tz="UTC")
    snap = state_snapshots(df, [b])
    b_us = b.value // 1000
    for ev in snap["recent_event_us"]:
        assert all(b_us - STATE_HORIZON_US < t < b_us for t in ev)
    expected = df[(df.event_timestamp < b) & (df.event_timestamp > b - pd.Timedelta(hours=24))]
    assert sum(len(e) for e in snap["recent_event_us"]) == len(expected)


def test_context_features() -> None:
    f = context_features(
        amount=100.0,
        country="FR",
        hour=23.0,
        card_mean_7d=50.0,
        card_max_30d=200.0,
        card_usual_country="DE",
        card_usual_hour=1.0,
    )
    assert f == {
        "amount_to_mean_7d": 2.0,
        "amount_to_max_30d": 0.5,
        "country_differs_from_usual": 1.0,
        "hours_from_usual": 2.0,
    }
    unknown = context_features(
        amount=1.0,
        country="DE",
        hour=1.0,
        card_mean_7d=None,
        card_max_30d=math.nan,
        card_usual_country=None,
        card_usual_hour=None,
    )
    assert all(math.isnan(v) for v in unknown.values())
