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
    STATE_AMOUNTS,
    STATE_EVENT_US,
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
    Definitions,
    build_definitions,
)
from riskloop.features.online import FeastOnlineIO, KeyedView, OnlineIO, Rows, online_io

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, OnDemandFeatureView

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
        return cls.local(
            s.feast_dir,
            online_store=s.feast.online_store,
            redis_connection=s.feast.redis_connection,
            registry=s.feast.registry,
        )

    def registry_config(self) -> str | dict[str, Any]:
        """Feast's ``registry`` entry: the local file, or the SQL registry the cluster's feature server reads."""
        if self.registry is None:
            return str(self.repo_dir / "registry.db")
        if "://" not in self.registry:
            raise FeatureStoreError(
                f"the Feast registry {self.registry.split('@')[-1]!r} is not a URL",
                where="RISKLOOP_FEAST__REGISTRY",
                fix="use a SQLAlchemy URL such as postgresql+psycopg://user:pw@host:5432/feast, "
                "or unset it for the local registry file",
            )
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
        raise FeatureStoreError(
            f"unknown online store {cfg.online_store!r}", fix="set RISKLOOP_FEAST__ONLINE_STORE to 'sqlite' or 'redis'"
        )
    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry=cfg.registry_config(),
        offline_store={"type": "duckdb"},
        online_store=online,
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
    for name, frame in (
        (CARD_DAILY_FILE, card_daily),
        (MERCHANT_DAILY_FILE, merchant_daily),
        (CARD_RECENT_FILE, recent),
    ):
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
        raise FeatureStoreError(
            f"feast apply failed: {exc}",
            where=str(offline_dir),
            fix="run `riskloop features apply` after `riskloop data validate`",
        ) from exc
    return defs


def materialize(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Load offline rows stamped in ``[start, end]`` into the online store."""
    try:
        store.materialize(start_date=start, end_date=end)
    except Exception as exc:
        raise FeatureStoreError(
            f"materialization failed: {exc}", fix="check that `riskloop features apply` ran on this state dir"
        ) from exc


def entity_frame(tx: pd.DataFrame) -> pd.DataFrame:
    """The entity rows for historical retrieval: keys, time (floored to µs) and request fields."""
    return pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy(),
            "card_id": tx["card_id"].to_numpy(),
            "merchant_id": tx["merchant_id"].to_numpy(),
            "event_timestamp": tx["event_timestamp"].dt.floor("us").dt.as_unit("us"),
            "amount": tx["amount"].astype("float64").to_numpy(),
            "country": tx["country"].astype(str).to_numpy(),
            "event_hour": event_hour(tx["event_timestamp"]).to_numpy(),
        }
    )


def historical_features(store: FeatureStore, tx: pd.DataFrame, service: str) -> pd.DataFrame:
    """Point-in-time correct features for every transaction, one output row per input row.

    Batch and on-demand features come from Feast's point-in-time join; real-time
    features are computed from the same stream by the same definitions the
    online path uses (see ``compute.py``). Raises if Feast returns a different
    number of rows than it was given.
    """
    entities = entity_frame(tx)
    fs = store.get_feature_service(service, allow_cache=True)  # a registry refresh per call costs ~20 ms
    # the push-fed real-time state view is an online-only input: offline, the stream itself is the truth
    online_only = {v.name for v in store.list_feature_views(allow_cache=True) if _push_fed(v)}
    refs = [
        f"{proj.name_to_use()}:{feat.name}"  # type: ignore[no-untyped-call]
        for proj in fs.feature_view_projections
        if proj.name not in online_only
        for feat in proj.features
    ]
    try:
        got = store.get_historical_features(entity_df=entities, features=refs).to_df()
    except Exception as exc:
        raise FeatureStoreError(
            f"historical retrieval failed: {exc}", fix="run `riskloop features apply` first"
        ) from exc
    if len(got) != len(entities):
        raise FeatureStoreError(
            f"the offline store returned {len(got)} rows for {len(entities)} entity rows",
            fix="use the DuckDB offline store (the file store drops rows without features)",
        )
    got = got.set_index("transaction_id").loc[entities["transaction_id"]]
    realtime = compute_realtime_features(tx).set_axis(tx["transaction_id"].to_numpy())
    out = pd.concat([got[list(STORE_FEATURES)].astype("float64"), realtime], axis=1)
    out.index.name = "transaction_id"
    return out.reset_index()


class OnlineFeatures:
    """The serving path's features from Feast's online store: the views resolved once, then read and written.

    Every view comes from the feature service the dataset spec names
    (``features.service``), by role, not by name: the view fed by a
    ``PushSource`` holds the real-time state (what :meth:`push` writes), the
    on-demand views are evaluated on the batch views' rows and the request, and
    the other views are the batch tier, each read by its entity's join key taken
    from the request row. A test holds the answers equal to the SDK's, for known,
    unknown and just-pushed cards.

    One difference from the SDK, on purpose: a batch row older than its view's TTL
    at the transaction's event time is treated as missing, as the offline
    point-in-time join does in training (the SDK returns stale rows as they are).

    The store is read and written through the backend ``online_io`` picks once, by
    the store's online store type (``riskloop.features.online``): on sqlite and on
    a single-node Redis a lookup is one statement or one round trip and a push one
    more, on Feast's own layout; on Redis a call fails with ``FeatureStoreError``
    within about ``timeout_seconds`` when Redis is down or hung. ``io`` overrides
    the choice (e.g. ``FeastOnlineIO(store)``, the provider's path, to compare).
    Every store error comes out as ``FeatureStoreError``.
    """

    def __init__(
        self, store: FeatureStore, service: str, *, timeout_seconds: float = 2.0, io: OnlineIO | None = None
    ) -> None:
        try:
            views, odfvs = _service_views(store, service, allow_cache=False)
        except FeatureStoreError:
            raise
        except Exception as exc:  # feast raises its own *NotFound types and registry errors
            raise FeatureStoreError(
                f"feature service {service!r} cannot be resolved: {exc}",
                fix="run `riskloop features apply` on this state dir",
            ) from exc
        state = [v for v in views if _push_fed(v)]
        if len(state) != 1:
            raise FeatureStoreError(
                f"feature service {service!r} has {len(state)} views fed by a PushSource "
                f"({sorted(v.name for v in state)}); the predictor keeps the real-time state in exactly one",
                fix="give the service one push-fed view for the card state (see riskloop.features.definitions)",
            )
        self._state = _keyed(state[0])
        self._batch = [_keyed(v) for v in views if not _push_fed(v)]
        batch_names = {k.view.name for k in self._batch}
        for odfv in odfvs:
            outside = sorted({p.name for p in odfv.source_feature_view_projections.values()} - batch_names)
            if outside:
                raise FeatureStoreError(
                    f"on-demand view {odfv.name!r} reads views {outside} that are not batch "
                    f"views of feature service {service!r}",
                    fix="add those views to the service in riskloop.features.definitions",
                )
        # each on-demand view as (its function, its request fields, its (batch view, features) inputs)
        self._odfvs = [
            (
                FeastOnlineIO.python_udf(o),
                [f.name for req in o.source_request_sources.values() for f in req.schema],
                [(p.name, [f.name for f in p.features]) for p in o.source_feature_view_projections.values()],
            )
            for o in odfvs
        ]
        provided = {f.name for k in self._batch for f in k.view.features} | {f.name for o in odfvs for f in o.features}
        missing = [name for name in STORE_FEATURES if name not in provided]
        if missing:
            raise FeatureStoreError(
                f"feature service {service!r} does not provide {missing}, which the model reads",
                fix="serve a model trained on this feature service",
            )
        self._io = io if io is not None else online_io(store, timeout_seconds=timeout_seconds)  # last: it connects

    def lookup(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], list[CardState], list[bool]]:
        """Store features, each card's real-time state, and whether the card is known, for each row.

        A row holds each view's join key (e.g. ``card_id``, ``merchant_id``), the
        on-demand views' request fields (``amount``, ``country``, ``event_hour``)
        and ``event_us`` (the transaction's time, for the TTL). A card is known when
        every batch view keyed like the state view has a fresh row for it.
        """
        keyed = [*self._batch, self._state]
        stored = self._io.read([(k, [r[k.join_key] for r in rows]) for k in keyed])  # all views at once
        fresh = [_fresh_rows(k, view_rows, rows) for k, view_rows in zip(keyed, stored, strict=True)]
        batch = {k.view.name: f for k, f in zip(self._batch, fresh, strict=False)}
        state_rows = fresh[-1]
        context: dict[str, list[Any]] = {}
        for udf, request_fields, sources in self._odfvs:
            inputs: dict[str, list[Any]] = {name: [r[name] for r in rows] for name in request_fields}
            for view, names in sources:
                inputs.update({name: [got.get(name) for got in batch[view]] for name in names})
            context.update(udf(inputs))
        feats: list[dict[str, float]] = []
        for i in range(len(rows)):
            values: dict[str, Any] = {name: column[i] for name, column in context.items()}
            for got in batch.values():
                values.update(got[i])
            feats.append({name: _float(values.get(name)) for name in STORE_FEATURES})
        states = [CardState(tuple(s.get(STATE_EVENT_US) or ()), tuple(s.get(STATE_AMOUNTS) or ())) for s in state_rows]
        entity = [batch[k.view.name] for k in self._batch if k.join_key == self._state.join_key]
        known = [all(got[i] for got in entity) for i in range(len(rows))]
        return feats, states, known

    def push(self, card_ids: Sequence[str], states: Sequence[CardState], at: Sequence[datetime]) -> None:
        """Write cards' new recent-activity state to the state view (what a push to its PushSource writes)."""
        self._io.write(
            self._state,
            [
                (c, {STATE_EVENT_US: list(s.event_us), STATE_AMOUNTS: list(s.amounts)}, t)
                for c, s, t in zip(card_ids, states, at, strict=True)
            ],
        )

    @property
    def backend(self) -> str:
        """Which path reads and writes the store: ``redis``, ``sqlite`` or ``provider``."""
        return self._io.kind

    def close(self) -> None:
        """Close the connections the backend opened (the FeatureStore's own stay open)."""
        self._io.close()


def _fresh_rows(keyed: KeyedView, got: Rows, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's values in ``keyed.view`` if within the view's TTL at ``event_us`` (the offline join's rule)."""
    out: list[dict[str, Any]] = []
    for r in rows:
        ts_values = got.get(r[keyed.join_key])
        fresh = ts_values is not None and (not keyed.ttl_us or ts_values[0] >= r["event_us"] - keyed.ttl_us)
        out.append(ts_values[1] if fresh and ts_values is not None else {})
    return out


def _service_views(
    store: FeatureStore, service: str, *, allow_cache: bool
) -> tuple[list[FeatureView], list[OnDemandFeatureView]]:
    """The feature service's feature views and on-demand views, in the service's order."""
    names = [p.name for p in store.get_feature_service(service, allow_cache=allow_cache).feature_view_projections]
    views = {v.name: v for v in store.list_feature_views(allow_cache=allow_cache)}
    odfvs = {v.name: v for v in store.list_on_demand_feature_views(allow_cache=allow_cache)}
    unknown = [n for n in names if n not in views and n not in odfvs]
    if unknown:
        raise FeatureStoreError(
            f"feature service {service!r} names views {unknown} the registry does not hold",
            fix="run `riskloop features apply` on this state dir",
        )
    return [views[n] for n in names if n in views], [odfvs[n] for n in names if n in odfvs]


def _push_fed(view: FeatureView) -> bool:
    """Whether ``view`` is fed by a PushSource (the real-time state, online only)."""
    from feast import PushSource

    return isinstance(view.stream_source, PushSource)


def _keyed(view: FeatureView) -> KeyedView:
    if len(view.join_keys) != 1:
        raise FeatureStoreError(
            f"feature view {view.name!r} has join keys {view.join_keys}; the online path reads views of one entity",
            fix="give the view one entity in riskloop.features.definitions",
        )
    ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
    return KeyedView(view, view.join_keys[0], ttl_us)


def _float(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v)


__all__ = [
    "REALTIME_FEATURES",
    "STORE_FEATURES",
    "FeastOnlineIO",
    "OnlineFeatures",
    "OnlineIO",
    "StoreConfig",
    "apply_definitions",
    "entity_frame",
    "historical_features",
    "materialize",
    "open_store",
    "write_feature_tables",
]
