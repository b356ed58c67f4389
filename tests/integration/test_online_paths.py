"""The serving path's own reads and writes of Feast's online store (``riskloop.features.online``), on real stores.

Each fast path (one statement or one Redis round trip per lookup, one more per push)
must answer what Feast's SDK and Feast's provider path answer, on the layout Feast
writes (``feast materialize``) and reads (``get_online_features``); a Redis that is
down or hung must cost a call a ``FeatureStoreError`` within its timeout.

Redis here is the services' Redis on a db of its own (``DB``), and, where counting
commands or stopping the server, a throwaway ``redis-server`` this module starts.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from riskloop.errors import FeatureStoreError
from riskloop.features.compute import CardState, epoch_us
from riskloop.features.definitions import CARD_DAILY_FILE, FEATURE_SERVICE
from riskloop.features.online import FeastOnlineIO, RedisOnlineIO, SqliteOnlineIO, online_io
from riskloop.features.store import (
    STORE_FEATURES,
    OnlineFeatures,
    StoreConfig,
    apply_definitions,
    materialize,
    open_store,
    write_feature_tables,
)
from tests.integration.test_feast import NOON_DAY10, PARAMS, T0, row, sdk_online_features
from tests.services import _unavailable

DB = 11  # the services' Redis db of this module (test_feast.py uses db 0)
DAY10 = datetime(2026, 1, 10, tzinfo=timezone.utc)


@dataclass
class Stored:
    cfg: StoreConfig
    store: Any  # feast.FeatureStore
    cards: list[str]  # cards with a batch row stamped at DAY10


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    from riskloop.data.synthetic import generate

    return generate(PARAMS)


def _materialized(cfg: StoreConfig, tx: pd.DataFrame) -> Stored:
    write_feature_tables(tx, cfg.offline_dir)
    store = open_store(cfg)
    apply_definitions(store, cfg.offline_dir)
    materialize(store, T0, DAY10)
    table = pd.read_parquet(cfg.offline_dir / CARD_DAILY_FILE)
    return Stored(cfg, store, table[table.feature_timestamp == pd.Timestamp(DAY10)].card_id.tolist())


@pytest.fixture(scope="module")
def sqlite_stored(tmp_path_factory: pytest.TempPathFactory, tx: pd.DataFrame) -> Stored:
    return _materialized(StoreConfig.local(tmp_path_factory.mktemp("feast-sqlite")), tx)


@pytest.fixture(scope="module")
def redis_stored(tmp_path_factory: pytest.TempPathFactory, tx: pd.DataFrame, redis_url: str) -> Stored:
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    d = tmp_path_factory.mktemp("feast-redis")
    return _materialized(StoreConfig.local(d, online_store="redis", redis_connection=f"{host_port},db={DB}"), tx)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def stored(request: pytest.FixtureRequest) -> Stored:
    got: Stored = request.getfixturevalue(f"{request.param}_stored")
    return got


def _rows(cards: list[str]) -> list[dict[str, object]]:
    rows = [
        row(c, f"M{i % 40 + 1:05d}", amount=5.0 + 7 * i, country=("DE", "FR", "XX")[i % 3], at_us=NOON_DAY10 + i * 997)
        for i, c in enumerate(cards[:20])
    ]
    unknown = f"C_UNKNOWN_{uuid.uuid4().hex[:8]}"
    return [*rows, row(unknown, "M_UNKNOWN"), row(cards[0], "M00002", amount=0.0), rows[0]]  # a repeat in one batch


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    """Two lookups' answers equal, NaN equal to NaN."""
    (fa, sa, ka), (fb, sb, kb) = a, b
    assert ka == kb and sa == sb
    for x, y in zip(fa, fb, strict=True):
        assert x.keys() == y.keys()
        assert all(x[n] == y[n] or (math.isnan(x[n]) and math.isnan(y[n])) for n in x), (x, y)


def _equals_sdk(store: Any, rows: list[dict[str, object]], got: tuple[Any, ...]) -> None:
    feats, states, known = got
    for i, ref in enumerate(sdk_online_features(store, rows)):
        for name in STORE_FEATURES:
            want = math.nan if ref[name] is None else float(ref[name])
            assert feats[i][name] == pytest.approx(want, nan_ok=True), (i, name)
        assert states[i] == CardState(tuple(ref["recent_event_us"] or ()), tuple(ref["recent_amounts"] or ()))
        assert known[i] is (ref["card_txn_count_30d"] is not None)


def test_each_store_gets_its_fast_path(stored: Stored) -> None:
    online = OnlineFeatures(stored.store, FEATURE_SERVICE)
    assert online.backend == stored.cfg.online_store  # "sqlite" | "redis"
    online.close()


def test_lookup_equals_the_sdk_and_the_provider_path(stored: Stored) -> None:
    """Known, unknown, repeated and just-pushed cards: the fast path, Feast's SDK and the provider path agree."""
    fast = OnlineFeatures(stored.store, FEATURE_SERVICE)
    provider = OnlineFeatures(stored.store, FEATURE_SERVICE, io=FeastOnlineIO(stored.store))
    pushed = f"C_PUSHED_{uuid.uuid4().hex[:8]}"
    state = CardState((NOON_DAY10 - 60_000_000, NOON_DAY10 - 1), (12.5, 99.0))
    fast.push([pushed], [state], [DAY10 + timedelta(hours=11, microseconds=7)])
    rows = [*_rows(stored.cards), row(pushed)]
    got = fast.lookup(rows)
    assert got[2].count(True) == 22 and got[1][-1] == state and any(s.event_us for s in got[1][:20])
    _same(got, provider.lookup(rows))
    _equals_sdk(stored.store, rows, got)


def test_views_of_one_entity_read_with_different_ids_keep_their_own(stored: Stored) -> None:
    """Redis reads every view of an entity in one HMGET; a view still answers only for the ids it was asked."""
    fast = OnlineFeatures(stored.store, FEATURE_SERVICE)
    pushed = f"C_ONLY_STATE_{uuid.uuid4().hex[:8]}"
    fast.push([pushed], [CardState((NOON_DAY10 - 5,), (1.0,))], [DAY10])
    card = stored.cards[2]
    daily = next(k for k in fast._batch if k.view.name == "card_daily")
    got = fast._io.read([(daily, [card]), (fast._state, [card, pushed]), (daily, [pushed])])
    assert list(got[0]) == [card] and set(got[1]) == {card, pushed} and got[2] == {}
    provider = FeastOnlineIO(stored.store).read([(daily, [card]), (fast._state, [card, pushed]), (daily, [pushed])])
    # Feast's Redis online_read answers an absent entity with an empty row stamped at the epoch: not a row
    assert got == [{k: v for k, v in rows.items() if v[0]} for rows in provider]


def test_stale_batch_rows_count_as_missing_on_both_paths(stored: Stored) -> None:
    fast = OnlineFeatures(stored.store, FEATURE_SERVICE)
    provider = OnlineFeatures(stored.store, FEATURE_SERVICE, io=FeastOnlineIO(stored.store))
    card = stored.cards[1]
    later = NOON_DAY10 + 3 * 86_400_000_000  # past the batch views' 2-day TTL at the transaction's time
    rows = [row(card), row(card, at_us=later)]
    got = fast.lookup(rows)
    assert got[2] == [True, False] and math.isnan(got[0][1]["card_txn_count_7d"])
    assert not math.isnan(got[0][0]["card_txn_count_7d"])
    _same(got, provider.lookup(rows))
    assert sdk_online_features(stored.store, rows[1:])[0]["card_txn_count_7d"] is not None  # the SDK has the row


def test_a_push_is_what_feast_reads_and_a_feast_write_is_what_the_fast_path_reads(stored: Stored) -> None:
    fast = OnlineFeatures(stored.store, FEATURE_SERVICE)
    provider = OnlineFeatures(stored.store, FEATURE_SERVICE, io=FeastOnlineIO(stored.store))
    ours, theirs = f"C_OURS_{uuid.uuid4().hex[:8]}", f"C_THEIRS_{uuid.uuid4().hex[:8]}"
    a, b = CardState((NOON_DAY10 - 5,), (1.25,)), CardState((NOON_DAY10 - 9, NOON_DAY10 - 3), (7.0, 8.5))
    at = DAY10 + timedelta(hours=11, seconds=30, microseconds=123_456)
    fast.push([ours], [a], [at])
    provider.push([theirs], [b], [at])  # Feast's online_write_batch
    rows = [row(ours), row(theirs)]
    sdk = sdk_online_features(stored.store, rows)
    assert [CardState(tuple(r["recent_event_us"]), tuple(r["recent_amounts"])) for r in sdk] == [a, b]
    _same(fast.lookup(rows), provider.lookup(rows))
    assert fast.lookup(rows)[1] == [a, b]
    # the state view's timestamp as Feast reads it back (sqlite keeps whole seconds, Redis microseconds)
    keyed = fast._state  # the state view as OnlineFeatures resolved it
    stamps = [FeastOnlineIO(stored.store).read_view(keyed.view, keyed.join_key, [c])[c][0] for c in (ours, theirs)]
    ours_ts = fast._io.read([(keyed, [ours, theirs])])[0]
    assert [ours_ts[ours][0], ours_ts[theirs][0]] == stamps
    assert stamps[0] in (epoch_us(at), epoch_us(at.replace(microsecond=0)))


def test_a_later_push_replaces_the_state(stored: Stored) -> None:
    """Last writer wins, as Feast's sqlite store and Redis' skip_dedup mode (see riskloop.features.online)."""
    fast = OnlineFeatures(stored.store, FEATURE_SERVICE)
    card = f"C_TWICE_{uuid.uuid4().hex[:8]}"
    first, second = CardState((NOON_DAY10 - 5,), (1.0,)), CardState((NOON_DAY10 - 5, NOON_DAY10 - 2), (1.0, 2.0))
    fast.push([card], [first], [DAY10 + timedelta(hours=11)])
    fast.push([card], [second], [DAY10 + timedelta(hours=11, seconds=1)])
    assert fast.lookup([row(card)])[1] == [second]


def test_other_redis_deployments_keep_feasts_provider_path(tmp_path: Path) -> None:
    """A Redis Cluster or Sentinel is read through the provider (constructing it connects to nothing)."""
    from feast import FeatureStore, RepoConfig

    for redis_type in ("redis_cluster", "redis_sentinel"):
        config = RepoConfig(
            project="riskloop",
            provider="local",
            registry=str(tmp_path / "registry.db"),
            offline_store={"type": "duckdb"},
            online_store={"type": "redis", "redis_type": redis_type, "connection_string": "127.0.0.1:1"},
            entity_key_serialization_version=3,
        )
        assert isinstance(online_io(FeatureStore(config=config), timeout_seconds=1.0), FeastOnlineIO)
    assert isinstance(online_io(open_store(StoreConfig.local(tmp_path / "s")), timeout_seconds=1.0), SqliteOnlineIO)


def test_sqlite_lookup_is_one_statement_and_push_one_transaction(sqlite_stored: Stored) -> None:
    fast = OnlineFeatures(sqlite_stored.store, FEATURE_SERVICE)
    statements: list[str] = []
    fast._io._conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]  # sqlite's own trace hook
    fast.lookup(_rows(sqlite_stored.cards))
    assert len(statements) == 1 and statements[0].count("UNION ALL") == 2, statements
    statements.clear()
    fast.push(["C_X", "C_Y"], [CardState((1,), (2.0,))] * 2, [DAY10] * 2)
    assert [s.split()[0] for s in statements] == ["BEGIN", *["INSERT"] * 4, "COMMIT"], statements


# --- a throwaway redis-server: command and round-trip counts, a server that stops answering ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Throwaway:
    port: int
    process: subprocess.Popen[bytes]
    observer: Any = None  # one connection of its own, for INFO

    def info(self) -> dict[str, Any]:
        """Redis's counters, in one INFO command."""
        import redis

        if self.observer is None:
            self.observer = redis.Redis(port=self.port, single_connection_client=True)
        got: dict[str, Any] = self.observer.info("everything")
        return got


@pytest.fixture
def throwaway_redis(redis_url: str, tmp_path: Path) -> Iterator[Throwaway]:
    """A redis-server of this test's own (``redis_url`` only makes a missing Redis fail under CI=true)."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not on PATH; install redis (scripts/services.sh uses it)")
    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        server = Throwaway(port, process)
        yield server
        if server.observer is not None:
            server.observer.close()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(timeout=10)


def _redis_store(tmp_path: Path, port: int, tx: pd.DataFrame) -> Any:
    cfg = StoreConfig.local(tmp_path / "feast", online_store="redis", redis_connection=f"127.0.0.1:{port}")
    write_feature_tables(tx.head(200), cfg.offline_dir)
    store = open_store(cfg)
    apply_definitions(store, cfg.offline_dir)
    return store


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    keys = ("total_reads_processed", "total_writes_processed")
    out = {k: int(after[k]) - int(before[k]) for k in keys}
    for name, stats in after.items():
        if name.startswith("cmdstat_") and name != "cmdstat_info":
            calls = int(stats["calls"]) - int(before.get(name, {"calls": 0})["calls"])
            if calls:
                out[name.removeprefix("cmdstat_")] = calls
    return out


def test_redis_lookup_and_push_are_one_round_trip_each(throwaway_redis: Throwaway, tx: pd.DataFrame, tmp_path: Path):
    """Redis's own counters: a lookup is one read of a pipeline of HMGETs (one per entity key), a push one HSET."""
    store = _redis_store(tmp_path, throwaway_redis.port, tx)
    store.config.online_store.key_ttl_seconds = 3600  # Feast then EXPIREs every written key: so must a push
    fast = OnlineFeatures(store, FEATURE_SERVICE)
    state = CardState((NOON_DAY10 - 5,), (3.0,))
    fast.push(["C_WARM"], [state], [DAY10])  # connects (redis-py's CLIENT SETINFO round trips) before counting
    idle = _delta(throwaway_redis.info(), throwaway_redis.info())  # what two INFO calls alone count
    assert idle == {"total_reads_processed": 1, "total_writes_processed": 1}, idle

    before = throwaway_redis.info()
    fast.push(["C_A", "C_B"], [state, state], [DAY10, DAY10])
    pushed = _delta(before, throwaway_redis.info())
    assert pushed == {"total_reads_processed": 2, "total_writes_processed": 2, "hset": 2, "expire": 2}, pushed

    before = throwaway_redis.info()
    got = fast.lookup([row("C_A"), row("C_B", "M00002"), row("C_NONE")])
    looked = _delta(before, throwaway_redis.info())
    # card and merchant views share nothing; the card's batch and state views share its hash: 3 cards + 2 merchants
    assert looked == {"total_reads_processed": 2, "total_writes_processed": 2, "hmget": 5}, looked
    assert got[1] == [state, state, CardState()]

    import redis

    with redis.Redis(port=throwaway_redis.port) as r:
        assert 0 < int(r.ttl(fast._io._key("card_id", "C_A"))) <= 3600  # type: ignore[attr-defined]


def test_a_dead_or_hung_redis_is_a_fast_feature_store_error(
    throwaway_redis: Throwaway, tx: pd.DataFrame, tmp_path: Path
) -> None:
    store = _redis_store(tmp_path, throwaway_redis.port, tx)
    fast = OnlineFeatures(store, FEATURE_SERVICE, timeout_seconds=0.5)
    assert isinstance(fast._io, RedisOnlineIO)
    fast.lookup([row("C_1")])  # connected
    os.kill(throwaway_redis.process.pid, signal.SIGSTOP)  # hung: the kernel still accepts, nobody answers
    try:
        for call in (lambda: fast.lookup([row("C_1")]), lambda: fast.push(["C_1"], [CardState()], [DAY10])):
            t0 = time.monotonic()
            with pytest.raises(FeatureStoreError, match="Timeout") as err:
                call()
            assert 0.4 < time.monotonic() - t0 < 1.5, time.monotonic() - t0
            assert f"127.0.0.1:{throwaway_redis.port}" in str(err.value)
    finally:
        os.kill(throwaway_redis.process.pid, signal.SIGCONT)
    assert fast.lookup([row("C_1")])[2] == [False]  # back once Redis answers again, no restart
    throwaway_redis.process.terminate()
    throwaway_redis.process.wait(timeout=10)
    t0 = time.monotonic()
    with pytest.raises(FeatureStoreError, match="ConnectionError"):  # down: refused at once, not retried
        fast.lookup([row("C_1")])
    with pytest.raises(FeatureStoreError, match="ConnectionError"):
        fast.push(["C_1"], [CardState()], [DAY10])
    assert time.monotonic() - t0 < 0.5
