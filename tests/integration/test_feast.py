"""Real Feast: DuckDB offline store, sqlite and Redis online stores, on small generated data."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from riskloop.data.synthetic import GeneratorParams, generate
from riskloop.features.compute import REALTIME_FEATURES, CardState, compute_realtime_features, epoch_us
from riskloop.features.definitions import CARD_DAILY_FILE, FEATURE_SERVICE
from riskloop.features.store import (
    STORE_FEATURES,
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


def row(card: str, merchant: str = "M00001", *, amount: float = 10.0, country: str = "DE",
        at_us: int = NOON_DAY10) -> dict[str, object]:
    return {"card_id": card, "merchant_id": merchant, "amount": amount, "country": country,
            "event_hour": (at_us % 86_400_000_000) / 3_600_000_000, "event_us": at_us}


def sdk_online_features(store: object, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Feast's own answer through its SDK (the reference the direct path must equal)."""
    fs = store.get_feature_service(FEATURE_SERVICE)  # type: ignore[attr-defined]
    resp = store.get_online_features(  # type: ignore[attr-defined]
        features=fs, entity_rows=[{k: v for k, v in r.items() if k != "event_us"} for r in rows]).to_dict()
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
    strangers = tx.head(25).assign(card_id="C_NEVER_SEEN", merchant_id="M_NEVER_SEEN",
                                   transaction_id=lambda d: "X" + d["transaction_id"])
    entities = pd.concat([tx, strangers], ignore_index=True)
    got = historical_features(open_store(store_dir), entities, FEATURE_SERVICE)
    assert len(got) == len(entities)
    assert list(got["transaction_id"]) == list(entities["transaction_id"])
    stranger_rows = got[got["transaction_id"].str.startswith("X")]
    assert stranger_rows["card_txn_count_7d"].isna().all()


def test_no_leakage_from_rows_stamped_after_the_event(store_dir: StoreConfig, tx: pd.DataFrame,
                                                      tmp_path: Path) -> None:
    """Batch tier: plant poison rows stamped 1 µs after events; they must never be joined."""
    cfg = StoreConfig.local(tmp_path)
    write_feature_tables(tx, cfg.offline_dir)
    day5 = tx[tx.event_timestamp.dt.day == 6].drop_duplicates("card_id").head(40)  # one event per card
    table = pd.read_parquet(cfg.offline_dir / CARD_DAILY_FILE)
    poison = pd.DataFrame({"card_id": day5["card_id"].to_numpy(),
                           "feature_timestamp": (day5["event_timestamp"] + pd.Timedelta(microseconds=1)).to_numpy()})
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
    day9 = tx[(tx.card_id == card) & (tx.event_timestamp >= pd.Timestamp(end) - pd.Timedelta(hours=24))
              & (tx.event_timestamp < pd.Timestamp(end))]
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
    rows = [row(c, f"M{i % 40 + 1:05d}", amount=5.0 + 7 * i, country=("DE", "FR", "XX")[i % 3],
                at_us=NOON_DAY10 + i * 997_000_000) for i, c in enumerate(cards)]
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
    from riskloop.errors import FeatureStoreError

    with pytest.raises(FeatureStoreError, match="not a URL") as err:
        open_store(StoreConfig.local(tmp_path, registry="secret@db-host/feast"))
    assert "secret" not in str(err.value) and "RISKLOOP_FEAST__REGISTRY" in str(err.value)
