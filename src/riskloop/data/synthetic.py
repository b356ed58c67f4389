"""Synthetic card transactions with history-dependent fraud, drift scenarios and late labels.

The generator is deterministic by seed and fully vectorised (one numpy pass per
day). Its design, so that the features the platform builds actually matter:

* Every card has a home country, a usual spending level, a usual hour, a channel
  mix and a handful of merchants it returns to.
* Fraud arrives in *episodes*: a compromised card sees a burst of transactions
  within an hour or two, at merchants it never used, often abroad and online,
  for amounts far above its usual level. Detecting it needs the card's history
  (real-time counts, amount relative to the 7-day mean, new merchant/country),
  not just the transaction itself; risky merchant categories and night hours
  add a transaction-level signal.
* Legitimate behaviour has risky-looking noise (travel, occasional big buys) so
  the problem is not trivial.
* Each fraud gets a chargeback some days later (``chargeback_timestamp``): labels
  arrive late, and training only counts chargebacks known at its cutoff.

Drift scenarios start at ``drift_day`` (days before it are byte-identical
across scenarios for the same seed, because every day draws from its own
``(seed, day)`` stream):

* ``covariate_shift``: amounts rise 60 %, the channel mix moves online and
  distances grow; the fraud mechanism is unchanged.
* ``concept_drift``: fraudsters imitate the card (usual amounts, home country,
  usual channel and hour) and betray themselves only by new merchants, a
  ``desktop`` device and tight bursts; inputs look alike, the old model decays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from riskloop.storage import Location, location

COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "PL", "GB", "US", "BR", "NG")
COUNTRY_P = (0.30, 0.20, 0.10, 0.10, 0.10, 0.06, 0.06, 0.04, 0.02, 0.02)
CURRENCY_OF = {"GB": "GBP", "US": "USD", "BR": "BRL", "NG": "NGN", "PL": "PLN"}
CURRENCIES = ("EUR", "GBP", "USD", "BRL", "NGN", "PLN")
CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "fashion",
    "pharmacy",
    "entertainment",
    "travel",
    "electronics",
    "digital_goods",
    "jewelry",
)
CATEGORY_P = (0.28, 0.18, 0.12, 0.10, 0.07, 0.08, 0.05, 0.06, 0.04, 0.02)
CATEGORY_AMOUNT = (0.8, 0.9, 1.2, 1.5, 0.6, 1.0, 4.0, 3.0, 0.7, 5.0)
RISKY_CATEGORIES = ("electronics", "digital_goods", "jewelry", "travel")
CHANNELS = ("pos", "contactless", "online")
DEVICES = ("terminal", "mobile", "desktop")

_US = 1_000_000  # microseconds per second
_DAY_US = 86_400 * _US


class Scenario(StrEnum):
    """Drift scenario applied from ``drift_day`` on."""

    none = "none"
    covariate_shift = "covariate_shift"
    concept_drift = "concept_drift"


class GeneratorParams(BaseModel):
    """What one generation run does; every random choice follows from ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(default=30, ge=1, le=3650)
    start: date = date(2026, 1, 1)
    n_cards: int = Field(default=5_000, ge=10)
    n_merchants: int = Field(default=1_000, ge=10)
    tx_per_card_day: float = Field(default=2.0, gt=0, le=50)
    compromise_rate: float = Field(default=0.005, ge=0, le=0.2, description="P(card compromised) per day")
    seed: int = 7
    scenario: Scenario = Scenario.none
    drift_day: int | None = Field(default=None, ge=0, description="Day index the scenario starts; default days//2")
    chargeback_mean_days: float = Field(default=4.0, gt=1)

    @model_validator(mode="after")
    def _drift_inside(self) -> GeneratorParams:
        if self.drift_day is not None and self.drift_day >= self.days:
            raise ValueError(f"drift_day={self.drift_day} must be < days={self.days}")
        return self

    @property
    def effective_drift_day(self) -> int:
        return self.days // 2 if self.drift_day is None else self.drift_day


@dataclass(frozen=True)
class _Cards:
    home: np.ndarray  # country index
    amount_mu: np.ndarray  # log-scale usual amount
    rate: np.ndarray  # transactions per day
    usual_hour: np.ndarray
    channel_p: np.ndarray  # (n, 3)
    device: np.ndarray  # device index used online
    base_age: np.ndarray
    favourites: np.ndarray  # (n, 8) merchant indices


def _cards(p: GeneratorParams) -> _Cards:
    rng = np.random.default_rng([p.seed, 0])
    n = p.n_cards
    fav = rng.zipf(1.3, size=(n, 8)) % p.n_merchants
    return _Cards(
        home=rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P),
        amount_mu=rng.normal(3.4, 0.6, size=n),
        rate=rng.gamma(2.0, p.tx_per_card_day / 2.0, size=n),
        usual_hour=np.clip(rng.normal(14.0, 3.0, size=n), 6.0, 22.0),
        channel_p=rng.dirichlet((4.0, 3.0, 2.0), size=n),
        device=rng.choice((1, 2), size=n, p=(0.7, 0.3)),
        base_age=rng.integers(30, 3000, size=n),
        favourites=fav,
    )


def _merchant_categories(p: GeneratorParams) -> np.ndarray:
    rng = np.random.default_rng([p.seed, 2])
    return rng.choice(len(CATEGORIES), size=p.n_merchants, p=CATEGORY_P)


def _pick_channel(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    u = rng.random(len(probs))[:, None]
    picked: np.ndarray = (u > np.cumsum(probs, axis=1)).sum(axis=1)
    return picked


def _other_country(rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
    shift = rng.integers(1, len(COUNTRIES), size=len(home))
    return (home + shift) % len(COUNTRIES)


def _generate_day(p: GeneratorParams, cards: _Cards, mcat: np.ndarray, day: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([p.seed, 1, day])
    drifting = p.scenario is not Scenario.none and day >= p.effective_drift_day
    covariate = drifting and p.scenario is Scenario.covariate_shift
    concept = drifting and p.scenario is Scenario.concept_drift
    day_us = (
        int(datetime.combine(p.start + timedelta(days=day), datetime.min.time(), tzinfo=timezone.utc).timestamp()) * _US
    )

    # ---- legitimate transactions
    counts = rng.poisson(cards.rate)
    card = np.repeat(np.arange(p.n_cards), counts)
    n = len(card)
    hour = np.mod(rng.normal(cards.usual_hour[card], 2.5), 24.0)
    ts = day_us + (hour * 3600 * _US).astype(np.int64)
    ch_p = cards.channel_p[card]
    if covariate:
        ch_p = ch_p * np.array([0.6, 0.8, 1.9])
        ch_p = ch_p / ch_p.sum(axis=1, keepdims=True)
    channel = _pick_channel(rng, ch_p)
    fav_pick = cards.favourites[card, rng.integers(0, 8, size=n)]
    merchant = np.where(rng.random(n) < 0.85, fav_pick, rng.integers(0, p.n_merchants, size=n))
    travel = rng.random(n) < 0.03
    country = np.where(travel, _other_country(rng, cards.home[card]), cards.home[card])
    cat = mcat[merchant]
    amount = np.exp(rng.normal(cards.amount_mu[card], 0.7)) * np.asarray(CATEGORY_AMOUNT)[cat]
    amount = np.where(rng.random(n) < 0.02, amount * rng.uniform(3, 8, size=n), amount)
    distance = np.where(travel, rng.uniform(300, 3000, size=n), rng.exponential(8.0, size=n))
    if covariate:
        amount = amount * 1.6
        distance = distance * 1.8
    device = np.where(channel == 2, cards.device[card], np.where(channel == 1, 1, 0))
    fraud = np.zeros(n, dtype=np.int8)

    # ---- fraud episodes on compromised cards
    comp = np.flatnonzero(rng.random(p.n_cards) < p.compromise_rate)
    k = 1 + rng.poisson(2.5, size=len(comp))
    fcard = np.repeat(comp, k)
    m = len(fcard)
    episode_start = np.repeat(rng.uniform(0, 24 * 3600, size=len(comp)), k)
    # offsets within a burst: cumulative gaps of ~10 min (tighter under concept drift)
    gap_mean = 240.0 if concept else 600.0
    gaps = rng.exponential(gap_mean, size=m)
    first = np.r_[0, np.cumsum(k)[:-1]] if len(k) else np.zeros(0, dtype=np.int64)
    csum = np.cumsum(gaps)
    offset = csum - np.repeat(csum[first] - gaps[first], k) if m else csum
    fts = day_us + (np.mod(episode_start + offset, 24 * 3600) * _US).astype(np.int64)
    fmerchant = rng.integers(0, p.n_merchants, size=m)  # never the card's favourites, mostly
    if concept:
        fchannel = _pick_channel(rng, cards.channel_p[fcard])
        fcountry = cards.home[fcard]
        fhour_ts = day_us + (np.mod(rng.normal(cards.usual_hour[fcard], 2.0), 24.0) * 3600 * _US).astype(np.int64)
        fts = np.where(np.repeat(rng.random(len(comp)) < 0.7, k), fhour_ts + (offset * _US).astype(np.int64), fts)
        fts = np.clip(fts, day_us, day_us + _DAY_US - 1)
        famount = np.exp(rng.normal(cards.amount_mu[fcard], 0.7)) * rng.uniform(0.8, 2.0, size=m)
        fdistance = rng.exponential(10.0, size=m)
        fdevice = np.full(m, 2)
    else:
        risky = np.asarray([CATEGORIES.index(c) for c in RISKY_CATEGORIES])
        risky_merchants = np.flatnonzero(np.isin(mcat, risky))
        use_risky = rng.random(m) < 0.6
        if len(risky_merchants):
            fmerchant = np.where(use_risky, rng.choice(risky_merchants, size=m), fmerchant)
        fchannel = np.where(rng.random(m) < 0.7, 2, _pick_channel(rng, cards.channel_p[fcard]))
        abroad = rng.random(m) < 0.45
        fcountry = np.where(abroad, _other_country(rng, cards.home[fcard]), cards.home[fcard])
        famount = np.exp(cards.amount_mu[fcard]) * rng.uniform(2.0, 12.0, size=m)
        famount = np.where(offset == 0, np.minimum(famount, rng.uniform(1, 5, size=m)), famount)
        fdistance = np.where(abroad, rng.uniform(500, 8000, size=m), rng.exponential(40.0, size=m))
        fdevice = np.where(fchannel == 2, rng.choice((1, 2), size=m), np.where(fchannel == 1, 1, 0))
    if covariate:
        famount = famount * 1.6
        fdistance = fdistance * 1.8

    out = {
        "card": np.r_[card, fcard],
        "ts": np.r_[ts, fts],
        "amount": np.round(np.r_[amount, famount], 2).clip(0.5),
        "merchant": np.r_[merchant, fmerchant],
        "channel": np.r_[channel, fchannel],
        "country": np.r_[country, fcountry],
        "device": np.r_[device, fdevice],
        "distance": np.round(np.r_[distance, fdistance], 1),
        "fraud": np.r_[fraud, np.ones(m, dtype=np.int8)],
    }
    order = np.lexsort((out["card"], out["ts"]))
    out = {key: v[order] for key, v in out.items()}
    n_all = len(order)
    out["age"] = cards.base_age[out["card"]] + day
    delay_days = 1.0 + rng.gamma(2.0, (p.chargeback_mean_days - 1.0) / 2.0, size=n_all)
    out["chargeback"] = out["ts"] + (delay_days * _DAY_US).astype(np.int64)
    return out


def _cat(codes: np.ndarray, categories: tuple[str, ...]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes.astype(np.int64), categories=pd.Index(categories))  # type: ignore[return-value]


def _to_frame(raw: dict[str, np.ndarray], day_date: date, mcat: np.ndarray) -> pd.DataFrame:
    n = len(raw["ts"])
    seq = pd.Series(np.arange(n)).map("{:07d}".format)
    country = np.asarray(COUNTRIES)[raw["country"]]
    currency = pd.Series(country).map(lambda c: CURRENCY_OF.get(c, "EUR"))
    ts = pd.to_datetime(raw["ts"], unit="us", utc=True).as_unit("us")
    cb = pd.to_datetime(raw["chargeback"], unit="us", utc=True).as_unit("us")
    fraud = raw["fraud"].astype(np.int8)
    return pd.DataFrame(
        {
            "transaction_id": ("T" + day_date.strftime("%Y%m%d") + "-") + seq,
            "card_id": pd.Series(raw["card"]).map("C{:06d}".format),
            "merchant_id": pd.Series(raw["merchant"]).map("M{:05d}".format),
            "event_timestamp": ts,
            "amount": raw["amount"].astype(np.float64),
            "currency": pd.Categorical(currency, categories=CURRENCIES),
            "merchant_category": _cat(mcat[raw["merchant"]], CATEGORIES),
            "channel": _cat(raw["channel"], CHANNELS),
            "country": _cat(raw["country"], COUNTRIES),
            "device_type": _cat(raw["device"], DEVICES),
            "distance_from_home_km": raw["distance"].astype(np.float64),
            "card_age_days": raw["age"].astype(np.int64),
            "is_fraud": fraud,
            "chargeback_timestamp": pd.Series(cb).where(fraud == 1),
        }
    )


def iter_days(params: GeneratorParams) -> Iterator[tuple[date, pd.DataFrame]]:
    """Yield ``(day, frame)`` for every day, in order."""
    cards = _cards(params)
    mcat = _merchant_categories(params)
    for d in range(params.days):
        day_date = params.start + timedelta(days=d)
        yield day_date, _to_frame(_generate_day(params, cards, mcat, d), day_date, mcat)


def generate(params: GeneratorParams) -> pd.DataFrame:
    """The whole range as one frame (for tests and small runs)."""
    return pd.concat([f for _, f in iter_days(params)], ignore_index=True)


def partition_path(root: Path | Location, day: date) -> Location:
    return location(root) / f"date={day.isoformat()}" / "part-0.parquet"


def write_partitions(
    params: GeneratorParams,
    root: Path | Location,
    *,
    on_day: Callable[[date, int], None] | None = None,
) -> list[Location]:
    """Write one parquet file per day under ``root/date=YYYY-MM-DD/`` (local or object store); return them.

    Existing partitions for the same days are replaced; other days are kept.
    """
    paths = []
    for day_date, frame in iter_days(params):
        path = partition_path(root, day_date)
        path.write_table(pa.Table.from_pandas(frame, preserve_index=False))
        paths.append(path)
        if on_day is not None:
            on_day(day_date, len(frame))
    return paths
