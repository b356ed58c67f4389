"""The serving hot path's reads and writes of Feast's online store, on Feast's own on-disk layout.

``OnlineFeatures`` (``store.py``) reads a request's batch and state views and
writes the card state back through one :class:`OnlineIO`, picked once per store
by :func:`online_io`:

* :class:`RedisOnlineIO` (``redis_type: redis``): every view of a request in ONE
  pipelined round trip (an HMGET per entity key, with the fields of every view
  keyed by that entity, since Feast keeps all views of an entity in one hash), a
  push in one more; a redis-py client of our own with short socket timeouts and no
  retries, so a dead or hung Redis costs a request a ``FeatureStoreError`` within
  ``timeout_seconds`` and no thread is needed to enforce a deadline;
* :class:`SqliteOnlineIO`: every view in ONE ``SELECT ... UNION ALL ...``, a push
  in one ``executemany`` and one commit (WAL, ``synchronous=NORMAL``);
* :class:`FeastOnlineIO`: any other store (and Redis Cluster or Sentinel), through
  the provider's ``online_read`` / ``online_write_batch``, a call per view.

Why not Feast's provider for sqlite and Redis too: it reads one view per call
(three sqlite statements or three Redis round trips per request) and Redis'
``online_write_batch`` reads every key's timestamp before writing it (two round
trips), on a client with Feast's default retries and no timeout. The layouts
written and read here are Feast 0.67's (``feast/infra/online_stores/redis.py`` and
``sqlite.py``), through Feast's own key helpers where it has them
(``serialize_entity_key``, ``_redis_key``, ``_mmh3``, ``compute_table_id``,
``compute_versioned_name``, ``extract_text_and_num``): ``feast materialize``
writes what these read, and Feast's SDK reads what these push. Tests in
``tests/integration/test_online_paths.py`` hold every path equal to the SDK; the
Feast internals relied on are pinned by ``test_the_feast_internals_the_online_path_relies_on``.

One difference from Feast's Redis ``online_write_batch``, on purpose: a push
overwrites the card's state even if the stored state is stamped later (Feast's
``skip_dedup: true`` mode, and what its sqlite store always does). The predictor's
new state is computed from the state it just read, so it is never older in content
than what it replaces; the dedup read would double the push's round trips.

Entity keys are strings (every entity of ``definitions.py`` is). Nothing here
imports feast or redis at module import (seconds of start-up for a CLI).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from riskloop.errors import FeatureStoreError
from riskloop.features.compute import epoch_us

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, OnDemandFeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

Rows = dict[str, tuple[int, dict[str, Any]]]
"""A view's rows by entity id: (feature timestamp in µs, {feature: python value}); absent ids left out."""

WriteRow = tuple[str, dict[str, Any], datetime]
"""(entity id, {feature: python value}, event time): one row of a push."""

KEY_CACHE = 1 << 16
"""Serialized entity keys kept per backend, by (join key, id): Feast's serializer costs ~15 µs a key."""


@dataclass(frozen=True)
class KeyedView:
    """A feature view read by one join key, with its TTL in µs (0: none)."""

    view: FeatureView
    join_key: str
    ttl_us: int


class OnlineIO(ABC):
    """How one online store type is read and written; every store error comes out as ``FeatureStoreError``."""

    kind: str  # what the backend is, for messages and tests: "redis" | "sqlite" | "provider"

    @abstractmethod
    def read(self, reads: Sequence[tuple[KeyedView, Sequence[str]]]) -> list[Rows]:
        """Each ``(view, entity ids)``'s rows, in order, read together (one round trip where the store allows)."""

    @abstractmethod
    def write(self, keyed: KeyedView, rows: Sequence[WriteRow]) -> None:
        """Write rows to ``keyed.view``, as a push to it would."""

    def close(self) -> None:  # noqa: B027  # only stores with a connection of their own close anything
        """Release connections this object opened (not the FeatureStore's)."""


def online_io(store: FeatureStore, *, timeout_seconds: float) -> OnlineIO:
    """The fastest backend that reads and writes ``store``'s online store exactly as Feast does."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    online = store.config.online_store
    if isinstance(online, RedisOnlineStoreConfig) and online.redis_type == RedisType.redis:
        return RedisOnlineIO(store, timeout_seconds=timeout_seconds)
    if isinstance(online, SqliteOnlineStoreConfig) and not (
        # extra columns this path does not write: keep Feast's own writer for them
        online.vector_enabled or online.enable_openai_compatible_store or online.text_search_enabled
    ):
        return SqliteOnlineIO(store, timeout_seconds=timeout_seconds)
    return FeastOnlineIO(store)


def _entity_key(join_key: str, entity_id: str) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity_id)])


def _value_kinds(view: FeatureView) -> dict[str, str]:
    """Feast's ValueProto field for each feature of ``view`` (e.g. ``Array(Int64)``: ``int64_list_val``)."""
    return {f.name: f"{f.dtype.to_value_type().name.lower()}_val" for f in view.features}


def _versioned(store: FeatureStore) -> bool:
    return bool(store.config.registry.enable_online_feature_view_versioning)


class RedisOnlineIO(OnlineIO):
    """Feast's Redis layout (``redis_type: redis``), a request's reads in one round trip and a push in one more.

    The layout (Feast's ``RedisOnlineStore``): one hash per entity key at
    ``serialize_entity_key(key) + project``, holding every view of that entity:
    field ``_mmh3("<view>:<feature>")`` is a serialized ValueProto, field
    ``_ts:<view>`` a serialized ``google.protobuf.Timestamp``; a hash without a
    view's ``_ts:`` field has no row in that view. A push sets the view's fields and
    ``_ts:`` (and ``EXPIRE key_ttl_seconds`` when the store sets it), as Feast's
    ``online_write_batch`` does.

    The client is built from the store's ``connection_string`` as Feast parses it
    (``host:port,db=..,password=..,ssl=..``) with ``socket_connect_timeout`` and
    ``socket_timeout`` set to ``timeout_seconds`` and no retries: Feast's own client
    retries with backoff and waits forever.
    """

    kind = "redis"

    def __init__(self, store: FeatureStore, *, timeout_seconds: float) -> None:
        from feast.infra.online_stores.redis import RedisOnlineStore
        from redis import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        config = store.config
        self._project = config.project
        self._key_version = config.entity_key_serialization_version
        self._key_ttl = config.online_store.key_ttl_seconds
        self._versioned = _versioned(store)
        nodes, params = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
        self._where = f"redis {nodes[0]['host']}:{nodes[0]['port']} (online store of project {config.project!r})"
        params.update(
            host=nodes[0]["host"],
            port=int(nodes[0]["port"]),
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._client = Redis(**params)
        self._key: Callable[[str, str], bytes] = functools.lru_cache(maxsize=KEY_CACHE)(self._serialize)
        self._timeout = timeout_seconds
        self._fields: dict[str, tuple[list[bytes], list[str]]] = {}
        self._plans: dict[
            tuple[tuple[str, str], ...], list[tuple[str, list[bytes], list[tuple[int, int, list[str]]]]]
        ] = {}
        self._kinds: dict[str, dict[str, str]] = {}

    def _view_fields(self, view: FeatureView) -> tuple[list[bytes], list[str]]:
        """The hash fields of ``view`` (each feature's, then ``_ts:``) and its feature names."""
        got = self._fields.get(view.name)
        if got is None:
            from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

            name = compute_versioned_name(view, self._versioned)
            features = [f.name for f in view.features]
            fields = [_mmh3(f"{name}:{f}") for f in features] + [f"_ts:{name}".encode()]
            got = self._fields[view.name] = (fields, features)
        return got

    def _serialize(self, join_key: str, entity_id: str) -> bytes:
        from feast.infra.online_stores.helpers import _redis_key

        return _redis_key(self._project, _entity_key(join_key, entity_id), self._key_version)

    def _failed(self, exc: Exception, doing: str) -> FeatureStoreError:
        return FeatureStoreError(
            f"the online store failed while {doing}: {type(exc).__name__}: {exc}",
            where=self._where,
            fix=f"check that Redis answers within {self._timeout:g} s (the serving timeout) "
            "and that RISKLOOP_FEAST__REDIS_CONNECTION names it",
        )

    def _plan(self, views: Sequence[KeyedView]) -> list[tuple[str, list[bytes], list[tuple[int, int, list[str]]]]]:
        """Per join key: the fields of every view read by it (one HMGET), and each view's (read, offset, features)."""
        name = tuple((keyed.view.name, keyed.join_key) for keyed in views)  # strings hash once; views do not
        plan = self._plans.get(name)
        if plan is None:
            groups: dict[str, tuple[list[bytes], list[tuple[int, int, list[str]]]]] = {}
            for n, keyed in enumerate(views):
                fields, features = self._view_fields(keyed.view)
                group = groups.setdefault(keyed.join_key, ([], []))
                group[1].append((n, len(group[0]), features))
                group[0].extend(fields)
            plan = self._plans[name] = [(join_key, fields, slices) for join_key, (fields, slices) in groups.items()]
        return plan

    def read(self, reads: Sequence[tuple[KeyedView, Sequence[str]]]) -> list[Rows]:
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp
        from redis import RedisError

        plan = self._plan([keyed for keyed, _ in reads])
        # one HMGET per entity key, with the fields of every view read by that key
        groups = [
            (fields, slices, list(dict.fromkeys(i for n, _, _ in slices for i in reads[n][1])))
            for _, fields, slices in plan
        ]
        commands = [
            ("HMGET", self._key(join_key, entity_id), *fields)
            for (join_key, _, _), (fields, _, ids) in zip(plan, groups, strict=True)
            for entity_id in ids
        ]
        try:
            replies = iter(self._round_trip(commands))
        except RedisError as exc:
            raise self._failed(exc, "reading features") from exc
        out: list[Rows] = [{} for _ in reads]
        # a view read with fewer ids than others of its join key (not OnlineFeatures' case) keeps only its own
        wanted = [None if len(slices) == 1 else [set(reads[n][1]) for n, _, _ in slices] for _, slices, _ in groups]
        for (_, slices, ids), sets in zip(groups, wanted, strict=True):
            for entity_id in ids:
                values = next(replies)
                for s, (n, start, features) in enumerate(slices):
                    if sets is not None and entity_id not in sets[s]:
                        continue
                    end = start + len(features)
                    ts_bytes = values[end]
                    if ts_bytes is None:  # no row of this view for this entity
                        continue
                    ts = Timestamp.FromString(ts_bytes)
                    out[n][entity_id] = (
                        ts.seconds * 1_000_000 + ts.nanos // 1000,
                        {
                            name: None if raw is None else _decode(Value.FromString(raw))
                            for name, raw in zip(features, values[start:end], strict=True)
                        },
                    )
        return out

    def write(self, keyed: KeyedView, rows: Sequence[WriteRow]) -> None:
        from feast.utils import make_tzaware
        from google.protobuf.timestamp_pb2 import Timestamp
        from redis import RedisError

        fields, features = self._view_fields(keyed.view)
        by_name = dict(zip(features, fields, strict=False))
        kinds = self._kinds.get(keyed.view.name)
        if kinds is None:
            kinds = self._kinds[keyed.view.name] = _value_kinds(keyed.view)
        commands: list[tuple[Any, ...]] = []
        for entity_id, values, at in rows:
            ts = Timestamp()
            ts.FromDatetime(make_tzaware(at))
            key = self._key(keyed.join_key, entity_id)
            hset: list[Any] = ["HSET", key]
            for name, v in values.items():
                hset += (by_name[name], _encode(kinds[name], v).SerializeToString())
            hset += (fields[-1], ts.SerializeToString())
            commands.append(tuple(hset))
            if self._key_ttl:
                commands.append(("EXPIRE", key, self._key_ttl))
        try:
            self._round_trip(commands)
        except RedisError as exc:
            raise self._failed(exc, f"pushing to {keyed.view.name!r}") from exc

    def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies: one round trip.

        redis-py's connection API, as its ``Pipeline`` drives it (``pack_commands``, ``send_packed_command``,
        ``read_response``), without the pipeline's per-call objects, command stack and retry wrapper: ~40 µs
        of CPU less per round trip on the benchmark machine (60 against 100). An error reply raises
        ``ResponseError`` before the later replies are read, so the connection is then dropped, never reused
        with replies pending.
        """
        if not commands:
            return []
        pool = self._client.connection_pool
        conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
        try:
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def close(self) -> None:
        self._client.close()


class SqliteOnlineIO(OnlineIO):
    """Feast's sqlite layout, a request's reads in one statement and a push in one transaction.

    The layout (Feast's ``SqliteOnlineStore``): a table ``<project>_<view>`` per view,
    a row per (``entity_key`` = ``serialize_entity_key(key)``, ``feature_name``) with
    the serialized ValueProto in ``value``, its text in ``value_text`` and
    ``event_ts`` as the integer Feast's datetime adapter writes:
    ``int(naive_utc.timestamp())``, read back with ``datetime.fromtimestamp`` as
    naive UTC (both local-time conversions, so they cancel in any TZ; seconds only).

    The connection is our own on Feast's file (``SqliteOnlineStore._get_db_path``),
    WAL with ``synchronous=NORMAL``: a push is not an fsync of the journal (under
    load that commit was a third of a with-features request). WAL with NORMAL still
    survives a crash of the server; only a power loss may lose the last pushes (the
    real-time state of a local store). ``busy_timeout`` is ``timeout_seconds``.
    Calls are serialized by a lock: one connection, one transaction at a time.
    """

    kind = "sqlite"

    def __init__(self, store: FeatureStore, *, timeout_seconds: float) -> None:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        config = store.config
        self._project = config.project
        self._key_version = config.entity_key_serialization_version
        self._versioned = _versioned(store)
        self._path = SqliteOnlineStore._get_db_path(config)
        self._conn = sqlite3.connect(self._path, timeout=timeout_seconds, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self._key: Callable[[str, str], bytes] = functools.lru_cache(maxsize=KEY_CACHE)(self._serialize)
        self._tables: dict[str, str] = {}
        self._kinds: dict[str, dict[str, str]] = {}
        self._selects: dict[tuple[tuple[str, int], ...], str] = {}

    def _table(self, view: FeatureView) -> str:
        """The view's table name, quoted as Feast quotes it."""
        got = self._tables.get(view.name)
        if got is None:
            from feast.infra.online_stores.helpers import compute_table_id

            got = self._tables[view.name] = (
                '"' + compute_table_id(self._project, view, self._versioned).replace('"', '""') + '"'
            )
        return got

    def _serialize(self, join_key: str, entity_id: str) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key

        return serialize_entity_key(_entity_key(join_key, entity_id), self._key_version)

    def _failed(self, exc: Exception, doing: str) -> FeatureStoreError:
        return FeatureStoreError(
            f"the online store failed while {doing}: {type(exc).__name__}: {exc}",
            where=self._path,
            fix="run `riskloop features apply` (it creates the tables) and check that no other process "
            "holds a write lock on the file",
        )

    def read(self, reads: Sequence[tuple[KeyedView, Sequence[str]]]) -> list[Rows]:
        from feast.protos.feast.types.Value_pb2 import Value

        parts: list[tuple[str, int]] = []
        params: list[bytes] = []
        ids_by_key: list[dict[bytes, str]] = []
        for keyed, ids in reads:
            keys = {self._key(keyed.join_key, i): i for i in dict.fromkeys(ids)}
            ids_by_key.append(keys)
            parts.append((self._table(keyed.view), len(keys)))
            params.extend(keys)
        if not params:
            return [{} for _ in reads]
        shape = tuple(parts)
        sql = self._selects.get(shape)
        if sql is None:  # one statement per shape of request, kept (a handful: one per batch size)
            sql = self._selects[shape] = " UNION ALL ".join(
                f"SELECT {n}, entity_key, feature_name, value, event_ts FROM {table} "
                f"WHERE entity_key IN ({','.join('?' * count)})"
                for n, (table, count) in enumerate(parts)
                if count
            )
        try:
            with self._lock:
                got = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._failed(exc, "reading features") from exc
        out: list[Rows] = [{} for _ in reads]
        for n, key, feature, raw, event_ts in got:
            entity_id = ids_by_key[n][key]
            row = out[n].get(entity_id)
            if row is None:  # Feast's conversion of event_ts, as SqliteOnlineStore.online_read does it
                ts_us = epoch_us(datetime.fromtimestamp(int(event_ts)).replace(tzinfo=UTC))
                row = out[n][entity_id] = (ts_us, {})
            row[1][feature] = _decode(Value.FromString(raw))
        return out

    def write(self, keyed: KeyedView, rows: Sequence[WriteRow]) -> None:
        from feast.infra.online_stores.helpers import extract_text_and_num
        from feast.utils import to_naive_utc

        kinds = self._kinds.get(keyed.view.name)
        if kinds is None:
            kinds = self._kinds[keyed.view.name] = _value_kinds(keyed.view)
        params: list[tuple[bytes, str, bytes, str | None, int, None]] = []
        for entity_id, values, at in rows:
            key = self._key(keyed.join_key, entity_id)
            event_ts = int(to_naive_utc(at).timestamp())  # Feast's sqlite adapter for datetime
            for name, v in values.items():
                value = _encode(kinds[name], v)
                params.append(
                    (key, name, value.SerializeToString(), extract_text_and_num(value, False)[0], event_ts, None)
                )
        sql = (
            f"INSERT INTO {self._table(keyed.view)} "
            "(entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
        try:
            with self._lock, self._conn:
                self._conn.executemany(sql, params)
        except sqlite3.Error as exc:
            raise self._failed(exc, f"pushing to {keyed.view.name!r}") from exc

    def close(self) -> None:
        self._conn.close()


class FeastOnlineIO(OnlineIO):
    """Any other online store, through Feast's provider: a call per view (the path sqlite and Redis used to take).

    Why not ``FeatureStore.get_online_features`` / ``FeatureStore.push``: each call
    rebuilds the feature service, its views and the push source from registry protos
    (every constructor checked at run time by typeguard), 5-25 ms per call against
    0.1-0.4 ms for the online store's own read and write of the same rows
    (``benchmarks/serving/feast_calls.py``). ``write_to_online_store`` resolves the
    view and converts a DataFrame on every call likewise.

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
    * ``SqliteOnlineStore._get_conn(config)`` (private), only for a sqlite store read
      through here: WAL with ``synchronous=NORMAL``, as :class:`SqliteOnlineIO`.

    No timeout of its own: a store that hangs hangs the call (the stores that come
    here are neither riskloop's sqlite nor its single-node Redis).
    """

    kind = "provider"

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

    def _failed(self, exc: Exception, doing: str) -> FeatureStoreError:
        return FeatureStoreError(
            f"the online store failed while {doing}: {type(exc).__name__}: {exc}",
            where=f"{self._config.online_store.type} online store of project {self._config.project!r}",
            fix="check that the online store is up and that `riskloop features apply` ran",
        )

    def read(self, reads: Sequence[tuple[KeyedView, Sequence[str]]]) -> list[Rows]:
        return [self.read_view(keyed.view, keyed.join_key, ids) for keyed, ids in reads]

    def read_view(self, view: FeatureView, join_key: str, ids: Sequence[str]) -> Rows:
        """Rows of ``view`` by entity id, each with its feature timestamp (µs); absent ids left out."""
        unique = list(dict.fromkeys(ids))
        try:
            got = self._provider.online_read(self._config, view, [_entity_key(join_key, i) for i in unique])
        except Exception as exc:  # each store raises its own client's errors
            raise self._failed(exc, f"reading {view.name!r}") from exc
        return {
            key: (epoch_us(_utc(ts)) if ts is not None else 0, {name: _decode(v) for name, v in values.items()})
            for key, (ts, values) in zip(unique, got, strict=True)
            if values is not None
        }

    def write(self, keyed: KeyedView, rows: Sequence[WriteRow]) -> None:
        kinds = self._kinds.get(keyed.view.name)
        if kinds is None:
            kinds = self._kinds[keyed.view.name] = _value_kinds(keyed.view)
        data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = [
            (_entity_key(keyed.join_key, key), {name: _encode(kinds[name], v) for name, v in values.items()}, at, None)
            for key, values, at in rows
        ]
        try:
            self._provider.online_write_batch(self._config, keyed.view, data, None)
        except Exception as exc:
            raise self._failed(exc, f"pushing to {keyed.view.name!r}") from exc

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


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _decode(v: Any) -> Any:
    """A Feast ValueProto as a python value (None when unset; repeated values as lists)."""
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(v, kind)
    return list(value.val) if kind[-8:] == "list_val" else value


def _encode(kind: str, value: Any) -> Any:
    """A python value as a Feast ValueProto with ``kind`` (e.g. ``double_val``, ``int64_list_val``) set."""
    from feast.protos.feast.types.Value_pb2 import Value

    v = Value()
    if kind.endswith("_list_val"):
        getattr(v, kind).val.extend(value)
    else:
        setattr(v, kind, value)
    return v


__all__ = ["FeastOnlineIO", "KeyedView", "OnlineIO", "RedisOnlineIO", "Rows", "SqliteOnlineIO", "online_io"]
