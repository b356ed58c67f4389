"""Feast adapter: the only place that builds a FeatureStore and talks to it.

Locally the offline store is DuckDB over parquet (Feast's default file store
silently drops entity rows without a feature row in the TTL) and the online
store is sqlite; on a cluster the online store is Redis. All of it comes from
arguments, never from import-time globals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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


class FeastOnlineIO:
    """The serving hot path's only contact with Feast below its user SDK, kept in this one class.

    Why not ``FeatureStore.get_online_features`` / ``FeatureStore.push``: each call
    rebuilds the feature service, its views and the push source from registry protos
    (every constructor checked at run time by typeguard), 5-25 ms per call against
    0.1-0.4 ms for the online store's own read and write of the same rows
    (``benchmarks/serving/feast_calls.py``); through the SDK the with-features server
    ran at 0.035x MLServer's throughput, through this path at 0.53x
    (``benchmarks/README.md``, serving). ``write_to_online_store`` resolves the view
    and converts a DataFrame on every call likewise.

    What it relies on, each pinned by ``test_the_feast_internals_the_online_path_relies_on``
    in ``tests/integration/test_feast.py`` (which fails if Feast changes them):

    * ``FeatureStore.provider`` (a public property) and the Provider interface's
      ``online_read(config, table, entity_keys)`` and
      ``online_write_batch(config, table, data, progress)``: Feast's documented
      extension interface for custom providers, which every online store implements;
      not part of the user SDK, so its signatures may change between releases;
    * the ``EntityKey`` and ``Value`` protos those methods take and return, with
      Feast's naming of value fields (``<value type>_val``, e.g. ``int64_list_val``);
    * ``OnDemandFeatureView.feature_transformation.udf``: the python-mode function as
      registered, called directly (the same code training's point-in-time join runs);
    * ``SqliteOnlineStore._get_conn(config)`` (private), only for the local sqlite store:
      WAL with ``synchronous=NORMAL``, so a push is not an fsync of the journal. Under
      load that commit was a third of a with-features request's time. WAL with NORMAL
      still survives a crash of the server; only a power loss may lose the last pushes
      (the real-time state of a local store). Redis on the cluster is untouched.

    Entity keys are strings (every entity of ``definitions.py`` is).
    """

    def __init__(self, store: FeatureStore) -> None:
        self._provider = store.provider  # the store's configured provider, one per FeatureStore
        self._config = store.config
        self._kinds: dict[str, dict[str, str]] = {}
        self._tune_sqlite()

    def _tune_sqlite(self) -> None:
        online = getattr(self._provider, "online_store", None)
        if type(online).__name__ != "SqliteOnlineStore":
            return
        conn = online._get_conn(self._config)  # type: ignore[union-attr]  # no public accessor
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")

    def read(self, view: FeatureView, join_key: str, ids: Sequence[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Rows of ``view`` by entity id, each with its feature timestamp (µs); absent ids left out."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        unique = list(dict.fromkeys(ids))
        got = self._provider.online_read(
            self._config, view, [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]) for i in unique]
        )
        return {
            key: (epoch_us(_utc(ts)) if ts is not None else 0, {name: _decode(v) for name, v in values.items()})
            for key, (ts, values) in zip(unique, got, strict=True)
            if values is not None
        }

    def write(self, view: FeatureView, join_key: str, rows: Sequence[tuple[str, dict[str, Any], datetime]]) -> None:
        """Write ``(entity id, {feature: python value}, event time)`` rows to ``view``, as a push to it would."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        kinds = self._kinds.get(view.name)
        if kinds is None:  # Value's field for each feature, from the view's schema (e.g. Array(Int64): int64_list_val)
            kinds = self._kinds[view.name] = {
                f.name: f"{f.dtype.to_value_type().name.lower()}_val" for f in view.features
            }
        data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = [
            (
                EntityKey(join_keys=[join_key], entity_values=[Value(string_val=key)]),
                {name: _encode(kinds[name], v) for name, v in values.items()},
                at,
                None,
            )
            for key, values, at in rows
        ]
        self._provider.online_write_batch(self._config, view, data, None)

    @staticmethod
    def python_udf(odfv: OnDemandFeatureView) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """The python-mode function of an on-demand view as registered (columns in, columns out)."""
        transformation = odfv.feature_transformation
        udf = getattr(transformation, "udf", None)
        if transformation is None or not callable(udf):
            raise FeatureStoreError(
                f"on-demand view {odfv.name!r} has no python udf in the registry",
                fix="define it with mode='python' and re-run `riskloop features apply`",
            )
        return cast("Callable[[dict[str, Any]], dict[str, Any]]", udf)


@dataclass(frozen=True)
class _Keyed:
    """A feature view read by one join key, with its TTL in µs (0: none)."""

    view: FeatureView
    join_key: str
    ttl_us: int


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
    """

    def __init__(self, store: FeatureStore, service: str) -> None:
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
        self._io = FeastOnlineIO(store)
        # each on-demand view as (its function, its request fields, its (batch view, features) inputs)
        self._odfvs = [
            (
                self._io.python_udf(o),
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

    def lookup(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], list[CardState], list[bool]]:
        """Store features, each card's real-time state, and whether the card is known, for each row.

        A row holds each view's join key (e.g. ``card_id``, ``merchant_id``), the
        on-demand views' request fields (``amount``, ``country``, ``event_hour``)
        and ``event_us`` (the transaction's time, for the TTL). A card is known when
        every batch view keyed like the state view has a fresh row for it.
        """
        batch = {k.view.name: self._fresh_rows(k, rows) for k in self._batch}
        state_rows = self._fresh_rows(self._state, rows)
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

    def _fresh_rows(self, keyed: _Keyed, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each row's values in ``keyed.view`` if within the view's TTL at ``event_us`` (the offline join's rule)."""
        got = self._io.read(keyed.view, keyed.join_key, [r[keyed.join_key] for r in rows])
        out: list[dict[str, Any]] = []
        for r in rows:
            ts_values = got.get(r[keyed.join_key])
            fresh = ts_values is not None and (not keyed.ttl_us or ts_values[0] >= r["event_us"] - keyed.ttl_us)
            out.append(ts_values[1] if fresh and ts_values is not None else {})
        return out

    def push(self, card_ids: Sequence[str], states: Sequence[CardState], at: Sequence[datetime]) -> None:
        """Write cards' new recent-activity state to the state view (what a push to its PushSource writes)."""
        self._io.write(
            self._state.view,
            self._state.join_key,
            [
                (c, {STATE_EVENT_US: list(s.event_us), STATE_AMOUNTS: list(s.amounts)}, t)
                for c, s, t in zip(card_ids, states, at, strict=True)
            ],
        )


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


def _keyed(view: FeatureView) -> _Keyed:
    if len(view.join_keys) != 1:
        raise FeatureStoreError(
            f"feature view {view.name!r} has join keys {view.join_keys}; the online path reads views of one entity",
            fix="give the view one entity in riskloop.features.definitions",
        )
    ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
    return _Keyed(view, view.join_keys[0], ttl_us)


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _decode(v: Any) -> Any:
    """A Feast ValueProto as a python value (None when unset; repeated values as lists)."""
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(v, kind)
    return list(value.val) if kind.endswith("_list_val") else value


def _encode(kind: str, value: Any) -> Any:
    """A python value as a Feast ValueProto with ``kind`` (e.g. ``double_val``, ``int64_list_val``) set."""
    from feast.protos.feast.types.Value_pb2 import Value

    v = Value()
    if kind.endswith("_list_val"):
        getattr(v, kind).val.extend(value)
    else:
        setattr(v, kind, value)
    return v


def _float(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v)


__all__ = [
    "REALTIME_FEATURES",
    "STORE_FEATURES",
    "FeastOnlineIO",
    "OnlineFeatures",
    "StoreConfig",
    "apply_definitions",
    "entity_frame",
    "historical_features",
    "materialize",
    "open_store",
    "write_feature_tables",
]
