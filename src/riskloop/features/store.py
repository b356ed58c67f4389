"""Feast adapter: the only place that builds a FeatureStore and talks to it.

Locally the offline store is DuckDB over parquet (Feast's default file store
silently drops entity rows without a feature row in the TTL) and the online
store is sqlite; on a cluster the online store is Redis. All of it comes from
arguments, never from import-time globals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from riskloop.errors import FeatureStoreError
from riskloop.features.compute import (
    FEATURE_TIMESTAMP,
    REALTIME_FEATURES,
    STORE_FEATURES,
    CardState,
    compute_batch_features,
    compute_realtime_features,
    event_hour,
    state_snapshots,
)
from riskloop.features.definitions import (
    CARD_DAILY_FILE,
    CARD_RECENT_FILE,
    MERCHANT_DAILY_FILE,
    PUSH_SOURCE,
    Definitions,
    build_definitions,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from riskloop.settings import Settings  # importing feast costs seconds, so it happens inside functions

PROJECT = "riskloop"


@dataclass(frozen=True)
class StoreConfig:
    """Where the feature store keeps things."""

    repo_dir: Path  # registry and local stores
    offline_dir: Path  # parquet sources
    online_store: str = "sqlite"  # sqlite | redis
    redis_connection: str = "127.0.0.1:6379"

    @classmethod
    def local(cls, feast_dir: Path, **kw: Any) -> StoreConfig:
        return cls(repo_dir=feast_dir, offline_dir=feast_dir / "offline", **kw)

    @classmethod
    def from_settings(cls, s: Settings) -> StoreConfig:
        return cls.local(s.feast_dir, online_store=s.feast.online_store, redis_connection=s.feast.redis_connection)


def open_store(cfg: StoreConfig) -> FeatureStore:
    """A FeatureStore from our config (no feature_store.yaml needed)."""
    from feast import FeatureStore, RepoConfig

    cfg.repo_dir.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any]
    if cfg.online_store == "sqlite":
        online = {"type": "sqlite", "path": str(cfg.repo_dir / "online.db")}
    elif cfg.online_store == "redis":
        online = {"type": "redis", "connection_string": cfg.redis_connection}
    else:
        raise FeatureStoreError(f"unknown online store {cfg.online_store!r}",
                                fix="set RISKLOOP_FEAST__ONLINE_STORE to 'sqlite' or 'redis'")
    config = RepoConfig(
        project=PROJECT, provider="local", registry=str(cfg.repo_dir / "registry.db"),
        offline_store={"type": "duckdb"}, online_store=online,
        entity_key_serialization_version=3,
    )
    return FeatureStore(config=config)


def write_feature_tables(tx: pd.DataFrame, offline_dir: Path) -> dict[str, Path]:
    """Compute both tiers' offline tables from validated transactions and write them.

    Returns the written paths. The card state snapshots (``card_recent``) are
    taken at every day boundary, so materializing up to a day's start loads
    exactly the state the real-time features of that day start from.
    """
    offline_dir.mkdir(parents=True, exist_ok=True)
    card_daily, merchant_daily = compute_batch_features(tx)
    boundaries = sorted(card_daily[FEATURE_TIMESTAMP].unique())
    recent = state_snapshots(tx, [pd.Timestamp(b) for b in boundaries])
    paths = {}
    for name, frame in ((CARD_DAILY_FILE, card_daily), (MERCHANT_DAILY_FILE, merchant_daily),
                        (CARD_RECENT_FILE, recent)):
        path = offline_dir / name
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        paths[name] = path
    return paths


def apply_definitions(store: FeatureStore, offline_dir: Path) -> Definitions:
    defs = build_definitions(offline_dir)
    try:
        store.apply(defs.objects())
    except Exception as exc:  # Feast raises many unrelated types; say where it happened
        raise FeatureStoreError(f"feast apply failed: {exc}", where=str(offline_dir),
                                fix="run `riskloop features apply` after `riskloop data validate`") from exc
    return defs


def materialize(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Load offline rows stamped in ``[start, end]`` into the online store."""
    try:
        store.materialize(start_date=start, end_date=end)
    except Exception as exc:
        raise FeatureStoreError(f"materialization failed: {exc}",
                                fix="check that `riskloop features apply` ran on this state dir") from exc


def entity_frame(tx: pd.DataFrame) -> pd.DataFrame:
    """The entity rows for historical retrieval: keys, time (floored to µs) and request fields."""
    return pd.DataFrame({
        "transaction_id": tx["transaction_id"].to_numpy(),
        "card_id": tx["card_id"].to_numpy(),
        "merchant_id": tx["merchant_id"].to_numpy(),
        "event_timestamp": tx["event_timestamp"].dt.floor("us").dt.as_unit("us"),
        "amount": tx["amount"].astype("float64").to_numpy(),
        "country": tx["country"].astype(str).to_numpy(),
        "event_hour": event_hour(tx["event_timestamp"]).to_numpy(),
    })


def historical_features(store: FeatureStore, tx: pd.DataFrame, service: str) -> pd.DataFrame:
    """Point-in-time correct features for every transaction, one output row per input row.

    Batch and on-demand features come from Feast's point-in-time join; real-time
    features are computed from the same stream by the same definitions the
    online path uses (see ``compute.py``). Raises if Feast returns a different
    number of rows than it was given.
    """
    entities = entity_frame(tx)
    fs = store.get_feature_service(service, allow_cache=True)  # a registry refresh per call costs ~20 ms
    # the real-time state view is an online-only input: offline, the stream itself is the truth
    refs = [f"{proj.name_to_use()}:{feat.name}"  # type: ignore[no-untyped-call]
            for proj in fs.feature_view_projections
            if proj.name != "card_recent" for feat in proj.features]
    try:
        got = store.get_historical_features(entity_df=entities, features=refs).to_df()
    except Exception as exc:
        raise FeatureStoreError(f"historical retrieval failed: {exc}",
                                fix="run `riskloop features apply` first") from exc
    if len(got) != len(entities):
        raise FeatureStoreError(
            f"the offline store returned {len(got)} rows for {len(entities)} entity rows",
            fix="use the DuckDB offline store (the file store drops rows without features)")
    got = got.set_index("transaction_id").loc[entities["transaction_id"]]
    realtime = compute_realtime_features(tx).set_axis(tx["transaction_id"].to_numpy())
    out = pd.concat([got[list(STORE_FEATURES)].astype("float64"), realtime], axis=1)
    out.index.name = "transaction_id"
    return out.reset_index()


def online_features(store: FeatureStore, rows: Sequence[dict[str, Any]], service: str
                    ) -> tuple[list[dict[str, float]], list[CardState], list[bool]]:
    """Batch lookup for scoring: store features, each card's state, and whether the card is known."""
    fs = store.get_feature_service(service, allow_cache=True)  # a registry refresh per call costs ~20 ms
    resp = store.get_online_features(
        features=fs,
        entity_rows=[{"card_id": r["card_id"], "merchant_id": r["merchant_id"], "amount": float(r["amount"]),
                      "country": r["country"], "event_hour": float(r["event_hour"])} for r in rows],
    ).to_dict()
    feats: list[dict[str, float]] = []
    states: list[CardState] = []
    known: list[bool] = []
    for i in range(len(rows)):
        feats.append({name: _float(resp[name][i]) for name in STORE_FEATURES})
        ev, am = resp["recent_event_us"][i], resp["recent_amounts"][i]
        states.append(CardState(tuple(int(t) for t in ev or ()), tuple(float(a) for a in am or ())))
        known.append(resp["card_txn_count_30d"][i] is not None)
    return feats, states, known


def push_states(store: FeatureStore, card_ids: Sequence[str], states: Sequence[CardState],
                at: Sequence[datetime]) -> None:
    """Write cards' new recent-activity state to the online store through the PushSource."""
    frame = pd.DataFrame({
        "card_id": list(card_ids),
        FEATURE_TIMESTAMP: pd.to_datetime(list(at), utc=True),
        "recent_event_us": [list(s.event_us) for s in states],
        "recent_amounts": [list(s.amounts) for s in states],
    })
    from feast.data_source import PushMode

    store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)


def _float(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v)


__all__ = ["REALTIME_FEATURES", "STORE_FEATURES", "StoreConfig", "apply_definitions", "entity_frame",
           "historical_features", "materialize", "online_features", "open_store", "push_states",
           "write_feature_tables"]
