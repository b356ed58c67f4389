"""Real Feast: DuckDB offline store, sqlite and Redis online stores, on small generated data."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from riskloop.data.synthetic import GeneratorParams, generate
from riskloop.features.compute import REALTIME_FEATURES, CardState, compute_realtime_features
from riskloop.features.definitions import CARD_DAILY_FILE, FEATURE_SERVICE
from riskloop.features.store import (
    STORE_FEATURES,
    StoreConfig,
    apply_definitions,
    historical_features,
    materialize,
    online_features,
    open_store,
    push_states,
    write_feature_tables,
)

PARAMS = GeneratorParams(days=10, n_cards=150, n_merchants=40, seed=5)
T0 = datetime(2025, 12, 1, tzinfo=timezone.utc)


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
    rows = [{"card_id": card, "merchant_id": "M00001", "amount": 10.0, "country": "DE", "event_hour": 12.0},
            {"card_id": "C_UNKNOWN", "merchant_id": "M00001", "amount": 10.0, "country": "DE", "event_hour": 12.0}]
    feats, states, known = online_features(store, rows, FEATURE_SERVICE)
    assert known == [True, False]
    assert feats[0]["card_txn_count_7d"] == expected.loc[card, "card_txn_count_7d"]
    day9 = tx[(tx.card_id == card) & (tx.event_timestamp >= pd.Timestamp(end) - pd.Timedelta(hours=24))
              & (tx.event_timestamp < pd.Timestamp(end))]
    assert len(states[0].event_us) == len(day9)


def _push_roundtrip(cfg: StoreConfig) -> None:
    store = open_store(cfg)
    apply_definitions(store, cfg.offline_dir)
    state = CardState((1_767_225_600_000_000, 1_767_225_660_000_000), (12.5, 99.0))
    push_states(store, ["C_PUSHED"], [state], [datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)])
    row = {"card_id": "C_PUSHED", "merchant_id": "M00001", "amount": 1.0, "country": "DE", "event_hour": 0.1}
    _, states, _ = online_features(store, [row], FEATURE_SERVICE)
    assert states[0] == state


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
    row = {"card_id": card.card_id, "merchant_id": "M00001", "amount": 10.0, "country": "DE", "event_hour": 12.0}
    feats, _, known = online_features(store, [row], FEATURE_SERVICE)
    assert known == [True] and feats[0]["card_txn_count_30d"] == card.card_txn_count_30d
    _push_roundtrip(cfg)


def test_realtime_columns_present(store_dir: StoreConfig, tx: pd.DataFrame) -> None:
    got = historical_features(open_store(store_dir), tx.head(50), FEATURE_SERVICE)
    assert set(REALTIME_FEATURES) <= set(got.columns)
