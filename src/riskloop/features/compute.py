"""Feature computation for both tiers, as pure functions over transaction frames.

Freshness is part of each feature's definition, and training reproduces it exactly:

* **batch** features (per card, per merchant) for day ``D`` use only transactions
  of days strictly before ``D``; their rows are stamped ``D 00:00:00 UTC``, so a
  point-in-time join gives a transaction on day ``D`` the row "as of the end of
  day D-1", and never anything from its own day;
* **real-time** features (per card) use the card's transactions strictly before
  the current one (``ts < t``) inside a trailing window (``ts > t - window``).
  Training computes them vectorised from the raw stream
  (:func:`compute_realtime_features`); serving computes them from the card's
  recent-activity state held in the online store (:func:`realtime_from_state`),
  which the predictor updates after scoring (:func:`append_to_state`). The two
  implementations are tested to agree on random streams. ``seconds_since_prev``
  looks back as far as the state keeps (24 h): older gaps read as missing.

Timestamps are handled as integer microseconds since the epoch everywhere, so
window edges compare exactly the same way offline and online.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

US = 1_000_000
DAY_US = 86_400 * US
REALTIME_WINDOWS_S = {"1h": 3_600, "24h": 86_400}
STATE_HORIZON_US = max(REALTIME_WINDOWS_S.values()) * US

CARD_BATCH_FEATURES = (
    "card_txn_count_7d",
    "card_txn_count_30d",
    "card_amount_mean_7d",
    "card_amount_mean_30d",
    "card_amount_max_30d",
    "card_amount_std_30d",
    "card_distinct_merchants_7d",
    "card_distinct_countries_7d",
    "card_usual_hour",
)
CARD_STRING_FEATURES = ("card_usual_country",)
MERCHANT_BATCH_FEATURES = ("merchant_txn_count_7d", "merchant_amount_mean_7d")
REALTIME_FEATURES = (
    "card_count_1h",
    "card_amount_sum_1h",
    "card_count_24h",
    "card_amount_sum_24h",
    "seconds_since_prev",
)
CONTEXT_FEATURES = ("amount_to_mean_7d", "amount_to_max_30d", "country_differs_from_usual", "hours_from_usual")
FEATURE_TIMESTAMP = "feature_timestamp"
# The card state's columns: offline snapshots, the online state view's schema, and what the predictor pushes.
STATE_EVENT_US = "recent_event_us"
STATE_AMOUNTS = "recent_amounts"
# Features the model sees from the store (batch + on-demand), in the order they are returned.
STORE_FEATURES = (*CARD_BATCH_FEATURES, *MERCHANT_BATCH_FEATURES, *CONTEXT_FEATURES)


def to_us(ts: pd.Series) -> np.ndarray:
    """Integer microseconds since the epoch for a tz-aware timestamp column."""
    out: np.ndarray = ts.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy()
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_us(dt: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding) of an aware datetime."""
    return (dt - _EPOCH) // timedelta(microseconds=1)


def hour_of_day(us: int) -> float:
    """Hour of day with its fraction, UTC, from epoch microseconds (the same formula as ``event_hour``)."""
    return (us % DAY_US) / (3600 * US)


def event_hour(ts: pd.Series) -> pd.Series:
    """Hour of day with its fraction, UTC (a request field of the context features)."""
    us = to_us(ts)
    return pd.Series((us % DAY_US) / (3600 * US), index=ts.index, name="event_hour")


# ---------------------------------------------------------------------------- batch tier
def _day_index(ts: pd.Series) -> tuple[np.ndarray, pd.Timestamp]:
    day0 = ts.min().floor("D")
    return ((to_us(ts) - day0.value // 1000) // DAY_US).astype(np.int64), day0


def _rolling_sum(grid: np.ndarray, window: int) -> np.ndarray:
    """Sum over the previous ``window`` days, excluding the current one (axis 1 = day)."""
    c = np.cumsum(np.pad(grid, ((0, 0), (1, 0))), axis=1, dtype=np.float64)
    n_days = grid.shape[1]
    hi = np.arange(n_days + 1)  # features for day d use days [d-window, d-1]
    lo = np.maximum(hi - window, 0)
    return c[:, hi] - c[:, lo]


def _rolling_max(grid: np.ndarray, window: int) -> np.ndarray:
    """Max over the previous ``window`` days, excluding the current one (-inf where empty)."""
    padded = np.concatenate([np.full((grid.shape[0], window), -np.inf), grid], axis=1)
    # output day d covers padded columns d .. d+window-1, i.e. days d-window .. d-1
    out: np.ndarray = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1).max(axis=2)
    return out


def _distinct_in_window(
    keys: np.ndarray, other: np.ndarray, day: np.ndarray, n_keys: int, n_days: int, window: int
) -> np.ndarray:
    """Distinct ``other`` values per key over the previous ``window`` days."""
    n_other, n_target = int(other.max(initial=0)) + 1, n_days + window + 1
    # (key, other, day) packed into one int64 so that 1-D unique does the sorting
    packed = np.unique((keys.astype(np.int64) * n_other + other) * n_target + day)
    pair, first_day = packed // n_target, packed % n_target
    # a pair seen on day d is visible on days d+1 .. d+window; overlapping spans of one pair count once
    targets = (first_day[None, :] + np.arange(1, window + 1)[:, None]).ravel()
    pairs = np.broadcast_to(pair, (window, len(pair))).ravel()
    keep = targets <= n_days
    visible = np.unique(pairs[keep] * n_target + targets[keep])
    out = np.zeros((n_keys, n_days + 1))
    np.add.at(out, ((visible // n_target) // n_other, visible % n_target), 1)
    return out


def compute_batch_features(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily card and merchant feature rows, stamped at the start of the day they serve.

    Returns ``(card_daily, merchant_daily)``. For every entity seen in ``tx`` there
    is one row per day from its first-activity day + 1 up to the day after the
    last day of ``tx`` (the row that serves "tomorrow"), so offline joins and the
    online store hold the same values, zero counts included.
    """
    day, day0 = _day_index(tx["event_timestamp"])
    n_days = int(day.max()) + 1
    amount = tx["amount"].to_numpy(np.float64)
    stamps = pd.DatetimeIndex([day0 + pd.Timedelta(days=d) for d in range(n_days + 1)]).as_unit("us")

    card_codes, card_ids = pd.factorize(tx["card_id"], sort=True)
    nc = len(card_ids)

    def grid(values: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
        g = np.zeros((n, n_days))
        np.add.at(g, (codes, day), values)
        return g

    cnt = grid(np.ones_like(amount), card_codes, nc)
    amt = grid(amount, card_codes, nc)
    amt2 = grid(amount * amount, card_codes, nc)
    amax = np.full((nc, n_days), -np.inf)
    np.maximum.at(amax, (card_codes, day), amount)
    hour_angle = event_hour(tx["event_timestamp"]).to_numpy() * (2 * math.pi / 24)
    sin_g, cos_g = grid(np.sin(hour_angle), card_codes, nc), grid(np.cos(hour_angle), card_codes, nc)

    c7, c30 = _rolling_sum(cnt, 7), _rolling_sum(cnt, 30)
    s7, s30, q30 = _rolling_sum(amt, 7), _rolling_sum(amt, 30), _rolling_sum(amt2, 30)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean7 = np.where(c7 > 0, s7 / c7, np.nan)
        mean30 = np.where(c30 > 0, s30 / c30, np.nan)
        var30 = np.where(c30 > 1, (q30 - c30 * mean30**2) / np.maximum(c30 - 1, 1), np.nan)
    max30 = _rolling_max(amax, 30)
    max30 = np.where(np.isfinite(max30), max30, np.nan)
    hs, hc = _rolling_sum(sin_g, 30), _rolling_sum(cos_g, 30)
    usual_hour = np.where(c30 > 0, np.mod(np.arctan2(hs, hc) * 24 / (2 * math.pi), 24), np.nan)

    country_codes, countries = pd.factorize(tx["country"].astype(str), sort=True)
    by_country = np.zeros((nc, len(countries), n_days))
    np.add.at(by_country, (card_codes, country_codes, day), 1)
    c_roll = np.cumsum(np.pad(by_country, ((0, 0), (0, 0), (1, 0))), axis=2)
    hi = np.arange(n_days + 1)
    c30_country = c_roll[:, :, hi] - c_roll[:, :, np.maximum(hi - 30, 0)]
    usual_country = np.asarray(countries, dtype=object)[c30_country.argmax(axis=1)]
    usual_country = np.asarray(np.where(c30 > 0, usual_country, None), dtype=object)

    merchant_codes, merchant_ids = pd.factorize(tx["merchant_id"], sort=True)
    dm7 = _distinct_in_window(card_codes, merchant_codes, day, nc, n_days, 7)
    dc7 = _distinct_in_window(card_codes, country_codes, day, nc, n_days, 7)

    first_day = np.full(nc, n_days)
    np.minimum.at(first_day, card_codes, day)
    card_cols: dict[str, np.ndarray] = {
        "card_txn_count_7d": c7,
        "card_txn_count_30d": c30,
        "card_amount_mean_7d": mean7,
        "card_amount_mean_30d": mean30,
        "card_amount_max_30d": max30,
        "card_amount_std_30d": np.sqrt(np.maximum(var30, 0)),
        "card_distinct_merchants_7d": dm7,
        "card_distinct_countries_7d": dc7,
        "card_usual_hour": usual_hour,
        "card_usual_country": usual_country,
    }
    card_daily = _long_frame("card_id", np.asarray(card_ids), first_day, stamps, card_cols)

    nm = len(merchant_ids)
    mcnt = grid(np.ones_like(amount), merchant_codes, nm)
    mamt = grid(amount, merchant_codes, nm)
    m7, ms7 = _rolling_sum(mcnt, 7), _rolling_sum(mamt, 7)
    with np.errstate(invalid="ignore", divide="ignore"):
        mmean7 = np.where(m7 > 0, ms7 / m7, np.nan)
    mfirst = np.full(nm, n_days)
    np.minimum.at(mfirst, merchant_codes, day)
    merchant_daily = _long_frame(
        "merchant_id",
        np.asarray(merchant_ids),
        mfirst,
        stamps,
        {"merchant_txn_count_7d": m7, "merchant_amount_mean_7d": mmean7},
    )
    return card_daily, merchant_daily


def _long_frame(
    key: str, ids: np.ndarray, first_day: np.ndarray, stamps: pd.DatetimeIndex, cols: dict[str, np.ndarray]
) -> pd.DataFrame:
    n, d = next(iter(cols.values())).shape
    day_grid = np.broadcast_to(np.arange(d), (n, d))
    keep = (day_grid > first_day[:, None]).ravel()  # from the day after first activity
    rows = np.broadcast_to(np.arange(n)[:, None], (n, d)).ravel()[keep]
    days = day_grid.ravel()[keep]
    out = {key: ids[rows], FEATURE_TIMESTAMP: stamps[days]}
    for name, values in cols.items():
        flat = values.ravel()[keep]
        out[name] = flat.astype(np.float64) if flat.dtype != object else flat
    frame = pd.DataFrame(out)
    return frame.sort_values([FEATURE_TIMESTAMP, key], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------ real-time tier
def compute_realtime_features(tx: pd.DataFrame) -> pd.DataFrame:
    """Real-time features for every transaction from the raw stream, indexed like ``tx``.

    For a transaction of card ``c`` at ``t`` (microseconds), each window ``W``
    covers the card's transactions with ``t - W < ts < t``: the transaction
    itself and any other at the very same instant are excluded.
    """
    ts = to_us(tx["event_timestamp"])
    codes, _ = pd.factorize(tx["card_id"])
    amount = tx["amount"].to_numpy(np.float64)
    order = np.lexsort((ts, codes))
    ts_s, codes_s, amt_s = ts[order], codes[order].astype(np.int64), amount[order]
    span = int(ts_s.max() - ts_s.min()) + STATE_HORIZON_US + 1 if len(ts_s) else 1
    if codes_s.max(initial=0) * span > np.iinfo(np.int64).max // 2:
        raise OverflowError("too many cards for the composite window key")
    key = codes_s * span + (ts_s - ts_s.min())
    csum = np.concatenate([[0.0], np.cumsum(amt_s)])
    hi = np.searchsorted(key, key, side="left")  # first row with ts >= t: excludes t itself
    out: dict[str, np.ndarray] = {}
    for name, seconds in REALTIME_WINDOWS_S.items():
        lo = np.searchsorted(key, key - seconds * US, side="right")  # ts > t - W
        out[f"card_count_{name}"] = (hi - lo).astype(np.float64)
        out[f"card_amount_sum_{name}"] = csum[hi] - csum[lo]
    group_start = np.searchsorted(codes_s, codes_s, side="left")
    prev_ts = ts_s[np.maximum(hi - 1, 0)]
    # "previous" is bounded by the state horizon, as the online state only keeps that much
    has_prev = (hi - 1 >= group_start) & (prev_ts > ts_s - STATE_HORIZON_US)
    out["seconds_since_prev"] = np.where(has_prev, (ts_s - prev_ts) / US, np.nan)
    result = pd.DataFrame(out, index=tx.index[order])
    return result.loc[tx.index, list(REALTIME_FEATURES)]


@dataclass(frozen=True)
class CardState:
    """A card's recent activity as held in the online store (parallel arrays, oldest first)."""

    event_us: tuple[int, ...] = ()
    amounts: tuple[float, ...] = ()


def realtime_from_state(state: CardState, now_us: int) -> dict[str, float]:
    """Real-time features at ``now_us`` from a card's stored recent activity."""
    ev = state.event_us
    out: dict[str, float] = {}
    for name, seconds in REALTIME_WINDOWS_S.items():
        lo_us = now_us - seconds * US
        picked = [a for t, a in zip(ev, state.amounts, strict=True) if lo_us < t < now_us]
        out[f"card_count_{name}"] = float(len(picked))
        out[f"card_amount_sum_{name}"] = math.fsum(picked)
    before = [t for t in ev if now_us - STATE_HORIZON_US < t < now_us]
    out["seconds_since_prev"] = (now_us - max(before)) / US if before else math.nan
    return out


def append_to_state(state: CardState, event_us: int, amount: float) -> CardState:
    """The state after a transaction, pruned to what any future window can still see.

    Idempotent: an event identical in time and amount to one already held is a
    retry of the same transaction (payment clients retry), not a second one.
    """
    horizon = event_us - STATE_HORIZON_US
    pairs = sorted({*zip(state.event_us, state.amounts, strict=True), (event_us, amount)})
    kept = [(t, a) for t, a in pairs if t > horizon]
    return CardState(tuple(t for t, _ in kept), tuple(a for _, a in kept))


def state_snapshots(tx: pd.DataFrame, boundaries: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """Each card's recent-activity state as of each boundary (the online store's content then).

    One row per (card, boundary) where the card has activity inside the horizon;
    stamped at the boundary, holding transactions with ``boundary - horizon < ts < boundary``.
    """
    ts = to_us(tx["event_timestamp"])
    cards = tx["card_id"].to_numpy()
    amounts = tx["amount"].to_numpy(np.float64)
    frames = []
    for b in boundaries:
        b_us = pd.Timestamp(b).value // 1000  # .value is always nanoseconds
        idx = np.flatnonzero((ts > b_us - STATE_HORIZON_US) & (ts < b_us))
        if not len(idx):
            continue
        idx = idx[np.lexsort((ts[idx], cards[idx]))]  # by card, then time
        c, t, a = cards[idx], ts[idx].tolist(), amounts[idx].tolist()
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        bounds = np.r_[starts, len(idx)].tolist()
        frames.append(
            pd.DataFrame(
                {
                    "card_id": c[starts],
                    FEATURE_TIMESTAMP: pd.Timestamp(b).as_unit("us"),
                    STATE_EVENT_US: [t[i:j] for i, j in itertools.pairwise(bounds)],
                    STATE_AMOUNTS: [a[i:j] for i, j in itertools.pairwise(bounds)],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["card_id", FEATURE_TIMESTAMP, STATE_EVENT_US, STATE_AMOUNTS])
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------ on-demand (context)
def context_features(
    amount: float,
    country: str | None,
    hour: float,
    card_mean_7d: float | None,
    card_max_30d: float | None,
    card_usual_country: str | None,
    card_usual_hour: float | None,
) -> dict[str, float]:
    """Transaction relative to the card's usual behaviour (one row; used by the Feast ODFV)."""

    def ok(x: float | None) -> bool:
        return x is not None and not (isinstance(x, float) and math.isnan(x))

    circ = abs(hour - card_usual_hour) % 24 if ok(card_usual_hour) else math.nan  # type: ignore[operator]
    return {
        "amount_to_mean_7d": amount / card_mean_7d if ok(card_mean_7d) and card_mean_7d else math.nan,
        "amount_to_max_30d": amount / card_max_30d if ok(card_max_30d) and card_max_30d else math.nan,
        "country_differs_from_usual": (
            float(country != card_usual_country) if card_usual_country and country else math.nan
        ),
        "hours_from_usual": min(circ, 24 - circ) if ok(card_usual_hour) else math.nan,
    }
