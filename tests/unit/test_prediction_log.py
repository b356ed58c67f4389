"""The prediction log: round trip, date partitions, concurrency, back-pressure, write failures."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from riskloop.errors import ConfigError
from riskloop.serving.prediction_log import _WRITER, PREDICTION_COLUMNS, PredictionLog, read_prediction_log
from riskloop.storage import Location

NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 15, tzinfo=UTC)
NAME = re.compile(rf"part-{os.getpid()}-\d+-{re.escape(_WRITER)}\.parquet")


def make_row(i: int, *, at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{i // 2}",
        "transaction_id": f"tx-{i}",
        "time": at if at is not None else NOON + timedelta(milliseconds=i),
        "model": "fraud-detector",
        "model_version": "7",
        "role": "champion" if i % 3 else "shadow",
        "score": i / 10_000,
        "decision": "flagged" if i % 5 == 0 else "passed",
        "threshold": 0.42,
        "latency_ms": 1.25 + i,
        "unknown_card": i % 2 == 0,
        "reasons": '[{"feature": "amount", "text": "amount", "value": 10.5, "contribution": 0.3}]' if i % 4 else None,
        "inputs": {"amount": 10.5 + i, "country": "DE", "card_id": f"c{i % 7}"},
        "features": {"amount": 10.5 + i, "card_tx_count_1h": float(i % 3)},
        **extra,
    }


class GatedLog(PredictionLog):
    """A log whose real writes wait for ``gate``: a writer slowed down on purpose."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        super().__init__(root, **kwargs)

    def _write_partition(self, directory: Location, table: pa.Table) -> Location:
        self.entered.set()
        if not self.gate.wait(60):
            raise RuntimeError("test gate never opened")
        return super()._write_partition(directory, table)


@pytest.fixture()
def open_log(tmp_path: Path) -> Iterator[Callable[..., PredictionLog]]:
    """Make logs under tmp_path/log; every one is released and closed at teardown."""
    made: list[PredictionLog] = []

    def make(cls: type[PredictionLog] = PredictionLog, **kwargs: Any) -> PredictionLog:
        made.append(cls(tmp_path / "log", **kwargs))
        return made[-1]

    yield make
    for plog in made:
        if isinstance(plog, GatedLog):
            plog.gate.set()
        plog.close()


def wait_until(condition: Callable[[], bool], timeout_seconds: float = 10) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_round_trip_keeps_every_field(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    plog = open_log(flush_rows=7)
    rows = [make_row(i) for i in range(50)]
    plog.append(rows[:20])
    plog.append(rows[20:])
    plog.close()

    assert (plog.written, plog.dropped, plog.write_errors, plog.pending) == (50, 0, 0, 0)
    frame = read_prediction_log(tmp_path / "log")
    assert list(frame.columns) == [
        *PREDICTION_COLUMNS,
        "input_amount",
        "input_country",
        "input_card_id",
        "feature_amount",
        "feature_card_tx_count_1h",
    ]
    assert str(frame["time"].dt.tz) == "UTC"
    assert len(frame) == 50
    for row, got in zip(rows, frame.to_dict("records"), strict=True):
        for column in PREDICTION_COLUMNS:
            assert got[column] == row[column], column
        for name, value in row["inputs"].items():
            assert got[f"input_{name}"] == value
        for name, value in row["features"].items():
            assert got[f"feature_{name}"] == value

    files = files_under(tmp_path / "log")
    assert files and all(NAME.fullmatch(f.name) for f in files)  # no temporary file left
    assert {f.parent.name for f in files} == {"date=2026-03-14"}


def test_rows_over_midnight_land_in_two_partitions(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    plog = open_log(flush_rows=10_000, flush_seconds=60)
    before = [make_row(i, at=MIDNIGHT - timedelta(milliseconds=500 - i)) for i in range(3)]
    after = [make_row(10 + i, at=MIDNIGHT + timedelta(milliseconds=i)) for i in range(2)]
    # 01:30 at UTC+2 is 23:30 UTC of the day before: partitions follow UTC
    local = [make_row(20, at=datetime(2026, 3, 15, 1, 30, tzinfo=timezone(timedelta(hours=2))))]
    plog.append(after + before + local)
    plog.close()

    by_day = {d.name: len(list(d.glob("part-*.parquet"))) for d in (tmp_path / "log").iterdir()}
    assert by_day == {"date=2026-03-14": 1, "date=2026-03-15": 1}
    root = tmp_path / "log"
    day_one = read_prediction_log(root, end=MIDNIGHT)
    day_two = read_prediction_log(root, start=MIDNIGHT)
    assert list(day_one["transaction_id"]) == ["tx-20", "tx-0", "tx-1", "tx-2"]
    assert list(day_two["transaction_id"]) == ["tx-10", "tx-11"]
    everything = read_prediction_log(root)
    assert everything["time"].is_monotonic_increasing and len(everything) == 6
    window = read_prediction_log(
        root, start=MIDNIGHT - timedelta(milliseconds=499), end=MIDNIGHT + timedelta(milliseconds=1)
    )
    assert list(window["transaction_id"]) == ["tx-1", "tx-2", "tx-10"]


def test_flush_makes_rows_readable_before_close(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    plog = open_log(flush_rows=10_000, flush_seconds=3600)
    plog.append([make_row(i) for i in range(5)])
    plog.flush()
    assert len(read_prediction_log(tmp_path / "log")) == 5
    plog.flush()  # nothing pending: returns at once
    assert plog.written == 5


def test_rows_are_written_after_flush_seconds_without_a_flush(open_log: Callable[..., PredictionLog]) -> None:
    plog = open_log(flush_rows=10_000, flush_seconds=0.05)
    plog.append([make_row(1)])
    wait_until(lambda: plog.written == 1)


def test_four_threads_appending_lose_nothing(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    plog = open_log(flush_rows=100, flush_seconds=0.01)

    def producer(k: int) -> None:
        for i in range(500):
            plog.append([make_row(k * 1000 + i, at=NOON + timedelta(microseconds=k * 1000 + i))])

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plog.close()

    frame = read_prediction_log(tmp_path / "log")
    assert len(frame) == 2000 and frame["transaction_id"].is_unique
    assert frame["time"].is_monotonic_increasing
    assert (plog.written, plog.dropped) == (2000, 0)


def test_two_logs_in_one_process_never_share_a_file_name(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    first, second = open_log(), open_log()
    for k in range(5):
        first.append([make_row(k)])
        second.append([make_row(100 + k)])
        first.flush()
        second.flush()
    assert len(files_under(tmp_path / "log")) == 10
    assert len(read_prediction_log(tmp_path / "log")) == 10


def test_full_queue_drops_and_counts_instead_of_blocking(
    open_log: Callable[..., PredictionLog], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plog = open_log(GatedLog, flush_rows=1, max_queue_rows=10)
    assert isinstance(plog, GatedLog)
    plog.append([make_row(i) for i in range(4)])
    assert plog.entered.wait(10)  # the writer holds 4 rows and is stuck
    plog.append([make_row(i) for i in range(4, 10)])  # 10 held: still accepted

    with caplog.at_level(logging.WARNING, logger="riskloop.serving.prediction_log"):

        def three_appends() -> None:
            for i in range(3):
                plog.append([make_row(10 + i)])

        appender = threading.Thread(target=three_appends)
        appender.start()
        appender.join(10)
        assert not appender.is_alive(), "append blocked on a full queue"
    assert plog.dropped == 3 and plog.pending == 10
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1  # once, not once per dropped call

    plog.gate.set()
    plog.close()
    assert (plog.written, plog.dropped) == (10, 3)
    assert sorted(read_prediction_log(tmp_path / "log")["transaction_id"]) == sorted(f"tx-{i}" for i in range(10))


def test_flush_times_out_while_the_writer_is_stuck(open_log: Callable[..., PredictionLog]) -> None:
    plog = open_log(GatedLog, flush_rows=1)
    assert isinstance(plog, GatedLog)
    plog.append([make_row(0)])
    assert plog.entered.wait(10)
    with pytest.raises(TimeoutError, match="1 rows still pending"):
        plog.flush(timeout_seconds=0.05)
    plog.gate.set()
    plog.flush()
    assert plog.written == 1


def test_close_is_idempotent_and_later_appends_are_counted(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    plog = open_log()
    plog.append([make_row(0), make_row(1)])
    plog.close()
    plog.close()
    plog.append([make_row(2), make_row(3), make_row(4)])
    plog.append(None)  # type: ignore[arg-type]  # nonsense is logged, never raised into the request path
    plog.flush()
    plog.close()
    assert (plog.written, plog.dropped, plog.pending) == (2, 3, 0)
    assert len(read_prediction_log(tmp_path / "log")) == 2


def test_a_failing_write_is_retried(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log directory should be")  # unwritable, even for root
    plog = open_log(flush_rows=1, write_attempts=6, retry_seconds=0.1)
    plog.append([make_row(i) for i in range(3)])
    wait_until(lambda: plog.write_errors >= 1)
    blocker.unlink()
    plog.flush()
    assert (plog.written, plog.dropped) == (3, 0)
    assert len(read_prediction_log(tmp_path / "log")) == 3


def test_a_write_that_keeps_failing_is_dropped_and_the_writer_lives_on(
    open_log: Callable[..., PredictionLog], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log directory should be")
    plog = open_log(flush_rows=1, write_attempts=2, retry_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="riskloop.serving.prediction_log"):
        plog.append([make_row(i) for i in range(4)] + [make_row(9, at=MIDNIGHT)])
        plog.flush()
    assert (plog.written, plog.dropped, plog.write_errors) == (0, 5, 4)  # 2 partitions x 2 attempts
    assert any(r.levelno == logging.ERROR and "gave up on" in r.getMessage() for r in caplog.records)

    blocker.unlink()
    plog.append([make_row(i) for i in range(10, 13)])
    plog.close()
    assert (plog.written, plog.dropped) == (3, 5)
    assert sorted(read_prediction_log(tmp_path / "log")["transaction_id"]) == ["tx-10", "tx-11", "tx-12"]


def test_a_config_error_on_write_is_not_retried(
    open_log: Callable[..., PredictionLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misconfigured root fails every attempt alike; retried, this write would wait 10 + 20 + 40 + 80 s."""
    plog = open_log(flush_rows=1, write_attempts=5, retry_seconds=10.0)

    def refuse(directory: Location, table: pa.Table) -> Location:
        raise ConfigError("storage root misconfigured", where=str(directory), fix="fix the root")

    monkeypatch.setattr(plog, "_write_partition", refuse)  # no real root raises it on write: injected
    plog.append([make_row(i) for i in range(3)])
    plog.flush(timeout_seconds=5)
    assert (plog.written, plog.dropped, plog.write_errors) == (0, 3, 1)


def test_rows_breaking_the_contract_are_dropped_alone(open_log: Callable[..., PredictionLog], tmp_path: Path) -> None:
    plog = open_log()
    bad = [
        make_row(100, at=datetime(2026, 3, 14, 12)),  # naive time
        make_row(101, score="0.3"),
        make_row(102, features=[1.0, 2.0]),
        make_row(103, unknown_card="no"),
        {"request_id": "req-x"},  # no time at all
    ]
    plog.append([make_row(0), *bad, make_row(1)])
    plog.close()
    assert (plog.written, plog.dropped) == (2, 5)
    assert list(read_prediction_log(tmp_path / "log")["transaction_id"]) == ["tx-0", "tx-1"]


def test_columns_are_the_union_over_files_and_mixed_inputs_survive(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    plog = open_log()
    plog.append([make_row(0, features={"a": 1.0}, inputs={"zip": 10115})])
    plog.flush()
    plog.append([make_row(1, features={"b": 2.0}, inputs={"zip": "SW1A"})])
    plog.flush()
    plog.append(
        [
            make_row(2, features={"a": 3.0}, inputs={"zip": 75001}),
            make_row(3, features={"a": 4.0}, inputs={"zip": "K1A"}),
        ]
    )  # one file, mixed types
    plog.close()

    frame = read_prediction_log(tmp_path / "log")
    assert list(frame["feature_a"][[0, 2, 3]]) == [1.0, 3.0, 4.0] and math.isnan(frame["feature_a"][1])
    assert frame["feature_b"][1] == 2.0 and frame["feature_b"].isna().sum() == 3
    assert list(frame["input_zip"]) == ["10115", "SW1A", "75001", "K1A"]


def test_nanosecond_timestamps_are_kept_to_the_microsecond(
    open_log: Callable[..., PredictionLog], tmp_path: Path
) -> None:
    plog = open_log()
    plog.append([make_row(0, at=pd.Timestamp("2026-03-14 12:00:00.123456789", tz="UTC"))])
    plog.close()
    assert plog.written == 1
    assert read_prediction_log(tmp_path / "log")["time"][0] == pd.Timestamp("2026-03-14 12:00:00.123456", tz="UTC")


def test_reading_nothing_and_bad_arguments(tmp_path: Path) -> None:
    empty = read_prediction_log(tmp_path / "nowhere")
    assert list(empty.columns) == list(PREDICTION_COLUMNS) and empty.empty
    with pytest.raises(ConfigError, match="timezone"):
        read_prediction_log(tmp_path, start=datetime(2026, 3, 14))
    with pytest.raises(ConfigError, match="max_queue_rows"):
        PredictionLog(tmp_path, max_queue_rows=0)
    with pytest.raises(ConfigError, match="flush_seconds"):
        PredictionLog(tmp_path, flush_seconds=0)
