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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from riskloop.errors import FeatureStoreError
from riskloop.features.compute import (
    CONTEXT_FEATURES,
    FEATURE_TIMESTAMP,
    REALTIME_FEATURES,
    STORE_FEATURES,
    CardState,
    compute_batch_features,
    compute_realtime_features,
    epoch_us,
    event_hour,
    state_snapshots,
)
from riskloop.features.definitions import (
    CARD_DAILY_FILE,
    CARD_RECENT_FILE,
    MERCHANT_DAILY_FILE,
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
    registry: str | None = None  # a SQL registry URL; None: registry.db in repo_dir

    @classmethod
    def local(cls, feast_dir: Path, **kw: Any) -> StoreConfig:
        return cls(repo_dir=feast_dir, offline_dir=feast_dir / "offline", **kw)

    @classmethod
    def from_settings(cls, s: Settings) -> StoreConfig:
        return cls.local(s.feast_dir, online_store=s.feast.online_store, redis_connection=s.feast.redis_connection,
                         registry=s.feast.registry)

    def registry_config(self) -> str | dict[str, Any]:
        """Feast's ``registry`` entry: the local file, or the SQL registry the cluster's feature server reads."""
        if self.registry is None:
            return str(self.repo_dir / "registry.db")
        if "://" not in self.registry:
            raise FeatureStoreError(f"the Feast registry {self.registry.split('@')[-1]!r} is not a URL",
                                    where="RISKLOOP_FEAST__REGISTRY",
                                    fix="use a SQLAlchemy URL such as postgresql+psycopg://user:pw@host:5432/feast, "
                                        "or unset it for the local registry file")
        return {"registry_type": "sql", "path": self.registry, "cache_ttl_seconds": 60}


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
        project=PROJECT, provider="local", registry=cfg.registry_config(),
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


class OnlineFeatures:
    """The serving path's access to Feast's online store: resolved once, then read and written directly.

    ``FeatureStore.get_online_features`` and ``FeatureStore.push`` rebuild the
    feature service, its views and the push source from registry protos on every
    call (each constructor checked at run time by typeguard): 5-25 ms per call,
    against 0.1-0.4 ms for the online store's own read and write of the same rows
    (``benchmarks/serving/feast_calls.py``). Here the views are resolved once from
    the registry and the provider's ``online_read`` / ``online_write_batch`` are
    called directly (the Provider interface every online store implements); the
    on-demand view is evaluated by calling its registered python-mode function,
    the same code training's point-in-time join runs. A test holds the answers
    equal to the SDK's, for known, unknown and just-pushed cards.

    One difference from the SDK, on purpose: a batch row older than its view's TTL
    at the transaction's event time is treated as missing, as the offline
    point-in-time join does in training (the SDK returns stale rows as they are).
    """

    def __init__(self, store: FeatureStore, service: str) -> None:
        from feast import FeatureView

        try:
            fs = store.get_feature_service(service)
            views = {p.name: store.get_feature_view(p.name) for p in fs.feature_view_projections
                     if p.name != "transaction_context"}
            odfv = store.get_on_demand_feature_view("transaction_context")
        except Exception as exc:  # feast raises its own *NotFound types and registry errors
            raise FeatureStoreError(f"feature service {service!r} cannot be resolved: {exc}",
                                    fix="run `riskloop features apply` on this state dir") from exc
        expected = {"card_daily", "merchant_daily", "card_recent"}
        if set(views) != expected or not all(isinstance(v, FeatureView) for v in views.values()):
            raise FeatureStoreError(f"feature service {service!r} has views {sorted(views)}, the predictor "
                                    f"reads {sorted(expected)} and transaction_context",
                                    fix="serve a model trained on fraud_detector_v1")
        self._views = views
        transformation = odfv.feature_transformation
        if transformation is None or not callable(getattr(transformation, "udf", None)):
            raise FeatureStoreError("on-demand view transaction_context has no python udf in the registry",
                                    fix="re-run `riskloop features apply`")
        self._udf = transformation.udf
        self._provider = store._get_provider()  # the store's configured provider; no public accessor
        self._config = store.config
        self._ttl_us = {name: int(v.ttl.total_seconds() * 1_000_000) if v.ttl else 0 for name, v in views.items()}
        self._tune_sqlite()

    def _tune_sqlite(self) -> None:
        """Local sqlite store: WAL and synchronous=NORMAL, so a push is not an fsync of the journal.

        Under load the push's commit (journal fsync per transaction) was a third of a
        with-features request's time. WAL with NORMAL still survives a crash of the
        server; only a power loss may lose the last pushes (the real-time state of a
        local store). Redis on the cluster is untouched.
        """
        store = getattr(self._provider, "online_store", None)
        get_conn = getattr(store, "_get_conn", None)  # SqliteOnlineStore's connection (no public accessor)
        if type(store).__name__ != "SqliteOnlineStore" or get_conn is None:
            return
        conn = get_conn(self._config)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")

    def _read(self, view: str, join_key: str, ids: Sequence[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Rows of ``view`` by entity id, each with its feature timestamp (µs); absent ids left out."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        unique = list(dict.fromkeys(ids))
        got = self._provider.online_read(
            self._config, self._views[view],
            [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]) for i in unique])
        return {key: (epoch_us(_utc(ts)) if ts is not None else 0, {name: _decode(v) for name, v in values.items()})
                for key, (ts, values) in zip(unique, got, strict=True) if values is not None}

    def _fresh(self, view: str, rows: dict[str, tuple[int, dict[str, Any]]], key: str, at_us: int
               ) -> dict[str, Any]:
        """The row for ``key`` if it is within the view's TTL at ``at_us`` (the offline join's rule), else {}."""
        got = rows.get(key)
        if got is None:
            return {}
        ttl = self._ttl_us[view]
        return got[1] if not ttl or got[0] >= at_us - ttl else {}

    def lookup(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], list[CardState], list[bool]]:
        """Store features, each card's real-time state, and whether the card is known, for each row.

        A row holds ``card_id``, ``merchant_id``, ``amount``, ``country``,
        ``event_hour`` and ``event_us`` (the transaction's time, for the TTL).
        """
        cards = [r["card_id"] for r in rows]
        card = self._read("card_daily", "card_id", cards)
        merchant = self._read("merchant_daily", "merchant_id", [r["merchant_id"] for r in rows])
        recent = self._read("card_recent", "card_id", cards)
        card_rows = [self._fresh("card_daily", card, r["card_id"], r["event_us"]) for r in rows]
        context = self._udf({
            "amount": [float(r["amount"]) for r in rows], "country": [r["country"] for r in rows],
            "event_hour": [float(r["event_hour"]) for r in rows],
            **{name: [cr.get(name) for cr in card_rows]
               for name in ("card_amount_mean_7d", "card_amount_max_30d", "card_usual_country", "card_usual_hour")},
        })
        feats: list[dict[str, float]] = []
        states: list[CardState] = []
        for i, r in enumerate(rows):
            values = {**card_rows[i], **self._fresh("merchant_daily", merchant, r["merchant_id"], r["event_us"]),
                      **{name: context[name][i] for name in CONTEXT_FEATURES}}
            feats.append({name: _float(values.get(name)) for name in STORE_FEATURES})
            state = self._fresh("card_recent", recent, r["card_id"], r["event_us"])
            states.append(CardState(tuple(state.get("recent_event_us") or ()),
                                    tuple(state.get("recent_amounts") or ())))
        known = [cr.get("card_txn_count_30d") is not None for cr in card_rows]
        return feats, states, known

    def push(self, card_ids: Sequence[str], states: Sequence[CardState], at: Sequence[datetime]) -> None:
        """Write cards' new recent-activity state to ``card_recent`` (what a push to its PushSource writes)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, Value

        data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = [
            (EntityKey(join_keys=["card_id"], entity_values=[Value(string_val=c)]),
             {"recent_event_us": Value(int64_list_val=Int64List(val=list(s.event_us))),
              "recent_amounts": Value(double_list_val=DoubleList(val=list(s.amounts)))},
             t, None)
            for c, s, t in zip(card_ids, states, at, strict=True)]
        self._provider.online_write_batch(self._config, self._views["card_recent"], data, None)


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _decode(v: Any) -> Any:
    """A Feast ValueProto as a python value (None when unset; repeated values as lists)."""
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(v, kind)
    return list(value.val) if kind.endswith("_list_val") else value


def _float(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v)


__all__ = [
    "REALTIME_FEATURES",
    "STORE_FEATURES",
    "OnlineFeatures",
    "StoreConfig",
    "apply_definitions",
    "entity_frame",
    "historical_features",
    "materialize",
    "open_store",
    "write_feature_tables",
]
