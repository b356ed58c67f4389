"""Real Feast: DuckDB offline store, sqlite and Redis online stores, on small generated data."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from riskloop.data.synthetic import GeneratorParams, generate
from riskloop.errors import FeatureStoreError
from riskloop.features.compute import REALTIME_FEATURES, CardState, compute_realtime_features, epoch_us
from riskloop.features.definitions import CARD_DAILY_FILE, FEATURE_SERVICE, build_definitions
from riskloop.features.store import (
    STORE_FEATURES,
    FeastOnlineIO,
    OnlineFeatures,
    StoreConfig,
    apply_definitions,
    historical_features,
    materialize,
    open_store,
    write_feature_tables,
)

PARAMS = GeneratorParams(days=10, n_cards=150, n_merchants=40, seed=5)
T0 = datetime(2025, 12, 1, tzinfo=timezone.utc)
NOON_DAY10 = epoch_us(datetime(2026, 1, 10, 12, tzinfo=timezone.utc))


def row(
    card: str, merchant: str = "M00001", *, amount: float = 10.0, country: str = "DE", at_us: int = NOON_DAY10
) -> dict[str, object]:
    return {
        "card_id": card,
        "merchant_id": merchant,
        "amount": amount,
        "country": country,
        "event_hour": (at_us % 86_400_000_000) / 3_600_000_000,
        "event_us": at_us,
    }


def sdk_online_features(store: object, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Feast's own answer through its SDK (the reference the direct path must equal)."""
    fs = store.get_feature_service(FEATURE_SERVICE)  # type: ignore[attr-defined]
    resp = store.get_online_features(  # type: ignore[attr-defined]
        features=fs, entity_rows=[{k: v for k, v in r.items() if k != "event_us"} for r in rows]
    ).to_dict()
    return [{k: resp[k][i] for k in resp} for i in range(len(rows))]


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    return generate(PARAMS)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, tx: pd.DataFrame) -> StoreConfig:
    cfg = StoreConfig.local(tmp_path_factory.mktemp("feast"))
    write_feature_tables(tx, cfg.offline_dir)
    apply_definitions(open_store(cfg), cfg.offline_dir)
    return cfg


def test_no_training_row_is_lost(store_dir: StoreConfig, tx: pd.DataFrame) -> None:
    # include cards and merchants the store has never seen: they must come back with nulls, not vanish
    strangers = tx.head(25).assign(
        card_id="C_NEVER_SEEN", merchant_id="M_NEVER_SEEN", transaction_id=lambda d: "X" + d["transaction_id"]
    )
    entities = pd.concat([tx, strangers], ignore_index=True)
    got = historical_features(open_store(store_dir), entities, FEATURE_SERVICE)
    assert len(got) == len(entities)
    assert list(got["transaction_id"]) == list(entities["transaction_id"])
    stranger_rows = got[got["transaction_id"].str.startswith("X")]
    assert stranger_rows["card_txn_count_7d"].isna().all()


def test_no_leakage_from_rows_stamped_after_the_event(store_dir: StoreConfig, tx: pd.DataFrame, tmp_path: Path) -> None:
    """Batch tier: plant poison rows stamped 1 µs after events; they must never be joined."""
    cfg = StoreConfig.local(tmp_path)
    write_feature_tables(tx, cfg.offline_dir)
    day5 = tx[tx.event_timestamp.dt.day == 6].drop_duplicates("card_id").head(40)  # one event per card
    table = pd.read_parquet(cfg.offline_dir / CARD_DAILY_FILE)
    poison = pd.DataFrame(
        {
            "card_id": day5["card_id"].to_numpy(),
            "feature_timestamp": (day5["event_timestamp"] + pd.Timedelta(microseconds=1)).to_numpy(),
        }
    )
    for col in table.columns:
        if col not in poison:
            poison[col] = -999.0 if col != "card_usual_country" else "XX"
    pd.concat([table, poison], ignore_index=True).to_parquet(cfg.offline_dir / CARD_DAILY_FILE, index=False)
    store = open_store(cfg)
    apply_definitions(store, cfg.offline_dir)
    got = historical_features(store, day5, FEATURE_SERVICE)
    assert not (got[list(STORE_FEATURES)] == -999.0).any().any()
    # while a poison row stamped exactly at the event IS visible (the join is inclusive): the test can fail
    poison_at = poison.assign(feature_timestamp=day5["event_timestamp"].to_numpy())
    pd.concat([table, poison_at], ignore_index=True).to_parquet(cfg.offline_dir / CARD_DAILY_FILE, index=False)
    got_at = historical_features(store, day5, FEATURE_SERVICE)
    assert (got_at["card_txn_count_7d"] == -999.0).all()


def test_realtime_tier_excludes_the_event_itself(tx: pd.DataFrame) -> None:
    rt = compute_realtime_features(tx)
    lone = tx.groupby("card_id")["transaction_id"].transform("size") == 1
    assert (rt.loc[lone, "card_count_24h"] == 0).all()
    first = ~tx.sort_values("event_timestamp").duplicated("card_id")
    assert (rt.loc[first[first].index, "card_count_1h"] == 0).all()


def test_online_features_for_a_known_card_after_materialize(store_dir: StoreConfig, tx: pd.DataFrame) -> None:
    store = open_store(store_dir)
    end = datetime(2026, 1, 10, tzinfo=timezone.utc)  # serve day 10 from state as of its start
    materialize(store, T0, end)
    table = pd.read_parquet(store_dir.offline_dir / CARD_DAILY_FILE)
    expected = table[table.feature_timestamp == pd.Timestamp(end)].set_index("card_id")
    card = expected.index[0]
    rows = [row(card), row("C_UNKNOWN")]
    feats, states, known = OnlineFeatures(store, FEATURE_SERVICE).lookup(rows)
    assert known == [True, False]
    assert feats[0]["card_txn_count_7d"] == expected.loc[card, "card_txn_count_7d"]
    day9 = tx[
        (tx.card_id == card)
        & (tx.event_timestamp >= pd.Timestamp(end) - pd.Timedelta(hours=24))
        & (tx.event_timestamp < pd.Timestamp(end))
    ]
    assert len(states[0].event_us) == len(day9)


def _push_roundtrip(cfg: StoreConfig) -> None:
    store = open_store(cfg)
    apply_definitions(store, cfg.offline_dir)
    state = CardState((1_767_225_600_000_000, 1_767_225_660_000_000), (12.5, 99.0))
    online = OnlineFeatures(store, FEATURE_SERVICE)
    online.push(["C_PUSHED"], [state], [datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)])
    _, states, _ = online.lookup([row("C_PUSHED", at_us=1_767_225_700_000_000)])
    assert states[0] == state
    # the SDK sees the same pushed state
    sdk = sdk_online_features(store, [row("C_PUSHED")])[0]
    assert (tuple(sdk["recent_event_us"]), tuple(sdk["recent_amounts"])) == (state.event_us, state.amounts)


def test_push_updates_the_sqlite_online_store(store_dir: StoreConfig) -> None:
    _push_roundtrip(store_dir)


def test_redis_online_store(redis_url: str, tx: pd.DataFrame, tmp_path: Path) -> None:
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    cfg = StoreConfig.local(tmp_path, online_store="redis", redis_connection=host_port)
    write_feature_tables(tx, cfg.offline_dir)
    store = open_store(cfg)
    apply_definitions(store, cfg.offline_dir)
    materialize(store, T0, datetime(2026, 1, 10, tzinfo=timezone.utc))
    table = pd.read_parquet(cfg.offline_dir / CARD_DAILY_FILE)
    card = table[table.feature_timestamp == pd.Timestamp("2026-01-10", tz="UTC")].iloc[0]
    feats, _, known = OnlineFeatures(store, FEATURE_SERVICE).lookup([row(card.card_id)])
    assert known == [True] and feats[0]["card_txn_count_30d"] == card.card_txn_count_30d
    _push_roundtrip(cfg)


def test_direct_online_path_equals_the_feast_sdk(store_dir: StoreConfig) -> None:
    """OnlineFeatures (views resolved once, provider calls) answers what get_online_features answers."""
    store = open_store(store_dir)
    materialize(store, T0, datetime(2026, 1, 10, tzinfo=timezone.utc))
    table = pd.read_parquet(store_dir.offline_dir / CARD_DAILY_FILE)
    cards = table[table.feature_timestamp == table.feature_timestamp.max()].card_id.tolist()[:25]
    rows = [
        row(
            c,
            f"M{i % 40 + 1:05d}",
            amount=5.0 + 7 * i,
            country=("DE", "FR", "XX")[i % 3],
            at_us=NOON_DAY10 + i * 997_000_000,
        )
        for i, c in enumerate(cards)
    ]
    rows += [row("C_UNKNOWN", "M_UNKNOWN"), row(cards[0], "M00002", amount=0.0), rows[0]]  # repeat in one batch
    feats, states, known = OnlineFeatures(store, FEATURE_SERVICE).lookup(rows)
    sdk = sdk_online_features(store, rows)
    assert known.count(False) == 1
    for i, ref in enumerate(sdk):
        for name in STORE_FEATURES:
            want = math.nan if ref[name] is None else float(ref[name])
            assert feats[i][name] == pytest.approx(want, nan_ok=True), (i, name)
        assert states[i].event_us == tuple(ref["recent_event_us"] or ())
        assert states[i].amounts == tuple(ref["recent_amounts"] or ())
        assert known[i] is (ref["card_txn_count_30d"] is not None)


def test_the_feast_internals_the_online_path_relies_on(store_dir: StoreConfig) -> None:
    """Each internal riskloop.features.online's docstrings name, as this Feast has it: fails when an upgrade
    changes one. (The layouts themselves are held equal to Feast's by tests/integration/test_online_paths.py.)"""
    import inspect
    import sqlite3
    from contextlib import closing

    from feast import FeatureStore
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import (
        _mmh3,
        _redis_key,
        compute_table_id,
        compute_versioned_name,
        extract_text_and_num,
    )
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
    from feast.infra.passthrough_provider import PassthroughProvider
    from feast.infra.provider import Provider
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.utils import make_tzaware, to_naive_utc

    from riskloop.features.definitions import _transaction_context

    assert isinstance(inspect.getattr_static(FeatureStore, "provider"), property)
    assert list(inspect.signature(Provider.online_read).parameters)[:4] == ["self", "config", "table", "entity_keys"]
    assert list(inspect.signature(Provider.online_write_batch).parameters) == [
        "self",
        "config",
        "table",
        "data",
        "progress",
    ]
    assert isinstance(inspect.getattr_static(PassthroughProvider, "online_store"), property)
    assert list(inspect.signature(SqliteOnlineStore._get_conn).parameters) == ["self", "config"]
    # the fast paths (riskloop.features.online): Feast's key helpers and config fields, as they use them
    assert isinstance(inspect.getattr_static(SqliteOnlineStore, "_get_db_path"), staticmethod)
    assert isinstance(inspect.getattr_static(RedisOnlineStore, "_parse_connection_string"), staticmethod)
    assert RedisOnlineStore._parse_connection_string("h:6380,db=3,password=pw,ssl=true") == (
        [{"host": "h", "port": "6380"}],
        {"db": 3, "password": "pw", "ssl": True},
    )
    assert {"redis_type", "connection_string", "key_ttl_seconds"} <= set(RedisOnlineStoreConfig.model_fields)
    assert RedisType.redis == "redis"
    assert {"path", "vector_enabled", "enable_openai_compatible_store", "text_search_enabled"} <= set(
        SqliteOnlineStoreConfig.model_fields
    )
    key = EntityKey(join_keys=["card_id"], entity_values=[Value(string_val="C1")])
    # the v3 layout: key count, then each key's type and length and name, then each value's type, length, bytes
    assert serialize_entity_key(key, 3) == (
        b"\x01\x00\x00\x00" + b"\x02\x00\x00\x00\x07\x00\x00\x00card_id" + b"\x02\x00\x00\x00\x02\x00\x00\x00C1"
    )
    assert _redis_key("p", key, 3) == serialize_entity_key(key, 3) + b"p"
    assert len(_mmh3("card_recent:recent_amounts")) == 4
    assert extract_text_and_num(Value(double_val=1.5), False) == ("1.5", None)
    assert list(inspect.signature(compute_table_id).parameters) == ["project", "table", "enable_versioning"]
    assert list(inspect.signature(compute_versioned_name).parameters) == ["table", "enable_versioning"]
    assert to_naive_utc(datetime(2026, 1, 1, 1, tzinfo=timezone.utc)) == datetime(2026, 1, 1, 1)
    assert make_tzaware(datetime(2026, 1, 1)).tzinfo is not None
    assert {"join_keys", "entity_values"} <= set(EntityKey.DESCRIPTOR.fields_by_name)
    defs = build_definitions(store_dir.offline_dir)
    kinds = {
        f"{f.dtype.to_value_type().name.lower()}_val"
        for v in (defs.card_daily, defs.merchant_daily, defs.card_recent)
        for f in v.features
    }
    assert kinds <= set(Value.DESCRIPTOR.fields_by_name), kinds  # the field FeastOnlineIO.write sets per dtype

    store = open_store(store_dir)
    assert isinstance(store.provider.online_store, SqliteOnlineStore)
    assert store.config.registry.enable_online_feature_view_versioning is False
    FeastOnlineIO(store)
    with closing(sqlite3.connect(store_dir.repo_dir / "online.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # the file keeps it; _get_conn set it
    registered = store.get_on_demand_feature_view(defs.transaction_context.name)
    inputs = {
        "amount": [50.0, 7.0],
        "country": ["DE", "FR"],
        "event_hour": [3.0, 23.5],
        "card_amount_mean_7d": [25.0, None],
        "card_amount_max_30d": [100.0, None],
        "card_usual_country": ["DE", None],
        "card_usual_hour": [4.0, None],
    }
    got = FeastOnlineIO.python_udf(registered)(inputs)  # the registry hands back our function: columns in, out
    assert got == _transaction_context(inputs) and got["amount_to_mean_7d"][0] == 2.0


def test_views_are_found_by_role_not_by_name(tx: pd.DataFrame, tmp_path: Path) -> None:
    """A service of the same views under other names serves the same answers; one without a state view is refused."""
    from feast import Entity, FeatureService, FeatureView
    from feast.on_demand_feature_view import OnDemandFeatureView

    from riskloop.features.definitions import _transaction_context

    cfg = StoreConfig.local(tmp_path)
    write_feature_tables(tx, cfg.offline_dir)
    store = open_store(cfg)
    defs = apply_definitions(store, cfg.offline_dir)

    def renamed(view: FeatureView, entity: Entity) -> FeatureView:
        return FeatureView(
            name=f"{view.name}_b",
            entities=[entity],
            ttl=view.ttl,
            schema=view.features,
            source=view.stream_source or view.batch_source,
            online=True,
        )

    card_b, merchant_b = renamed(defs.card_daily, defs.card), renamed(defs.merchant_daily, defs.merchant)
    state_b = renamed(defs.card_recent, defs.card)
    ctx = defs.transaction_context
    ctx_b = OnDemandFeatureView(
        name="context_b",
        sources=[card_b, *ctx.source_request_sources.values()],
        mode="python",
        schema=ctx.features,
        udf=_transaction_context,  # type: ignore[arg-type]
        udf_string=ctx.udf_string,
    )
    store.apply(
        [
            card_b,
            merchant_b,
            state_b,
            ctx_b,
            FeatureService(name="renamed_v1", features=[ctx_b, state_b, merchant_b, card_b]),
            FeatureService(name="no_state_v1", features=[card_b, merchant_b, ctx_b]),
        ]
    )
    materialize(store, T0, datetime(2026, 1, 10, tzinfo=timezone.utc))
    table = pd.read_parquet(cfg.offline_dir / CARD_DAILY_FILE)
    cards = table[table.feature_timestamp == table.feature_timestamp.max()].card_id.tolist()
    rows = [row(c, f"M{i % 40 + 1:05d}", amount=3.0 + i) for i, c in enumerate(cards)] + [row("C_UNKNOWN")]
    original, other = OnlineFeatures(store, FEATURE_SERVICE), OnlineFeatures(store, "renamed_v1")
    pushed = CardState((1_768_000_000_000_000,), (4.0,))
    other.push(["C_PUSHED"], [pushed], [datetime(2026, 1, 10, tzinfo=timezone.utc)])
    rows.append(row("C_PUSHED"))
    want, got = original.lookup(rows), other.lookup(rows)
    assert got[2] == want[2] and got[2].count(False) == 2
    assert got[1][:-1] == want[1][:-1] and any(s.event_us for s in got[1])
    assert (got[1][-1], want[1][-1]) == (pushed, CardState())  # the push went to the renamed state view
    for a, b in zip(got[0], want[0], strict=True):
        assert a == pytest.approx(b, nan_ok=True)
    with pytest.raises(FeatureStoreError, match="PushSource"):
        OnlineFeatures(store, "no_state_v1")


def test_batch_rows_past_their_ttl_count_as_missing(store_dir: StoreConfig) -> None:
    """Like the offline point-in-time join: a 2-day TTL at the transaction's time, not the server's clock."""
    store = open_store(store_dir)
    materialize(store, T0, datetime(2026, 1, 10, tzinfo=timezone.utc))
    table = pd.read_parquet(store_dir.offline_dir / CARD_DAILY_FILE)
    card = table[table.feature_timestamp == table.feature_timestamp.max()].card_id.iloc[0]
    online = OnlineFeatures(store, FEATURE_SERVICE)
    three_days_later = NOON_DAY10 + 3 * 86_400_000_000
    feats, _, known = online.lookup([row(card), row(card, at_us=three_days_later)])
    assert known == [True, False]
    assert not math.isnan(feats[0]["card_txn_count_7d"]) and math.isnan(feats[1]["card_txn_count_7d"])


def test_realtime_columns_present(store_dir: StoreConfig, tx: pd.DataFrame) -> None:
    got = historical_features(open_store(store_dir), tx.head(50), FEATURE_SERVICE)
    assert set(REALTIME_FEATURES) <= set(got.columns)


def test_sql_registry_is_shared_between_stores(postgres_dsn: str, tx: pd.DataFrame, tmp_path: Path) -> None:
    """The cluster's layout: pipelines apply definitions to a SQL registry on PostgreSQL, and the predictor and
    the feature server, with repo dirs of their own, resolve the same views from it."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    db = f"feast_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        parts = urlsplit(postgres_dsn)
        url = urlunsplit(("postgresql+psycopg", parts.netloc, f"/{db}", parts.query, ""))
        writer = StoreConfig.local(tmp_path / "pipeline", registry=url)
        write_feature_tables(tx, writer.offline_dir)
        applied = open_store(writer)
        apply_definitions(applied, writer.offline_dir)
        reader = open_store(StoreConfig.local(tmp_path / "predictor", registry=url))
        assert {v.name for v in reader.list_feature_views()} == {v.name for v in applied.list_feature_views()} != set()
        assert reader.get_feature_service(FEATURE_SERVICE).name == FEATURE_SERVICE
        OnlineFeatures(reader, FEATURE_SERVICE)  # resolves every view of the service from the shared registry
        assert not any(p.name == "registry.db" for p in tmp_path.rglob("*"))
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_a_registry_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match="not a URL") as err:
        open_store(StoreConfig.local(tmp_path, registry="secret@db-host/feast"))
    assert "secret" not in str(err.value) and "RISKLOOP_FEAST__REGISTRY" in str(err.value)
