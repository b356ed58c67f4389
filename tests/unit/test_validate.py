from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskloop.data.io import read_file, validate_partitions
from riskloop.data.spec import load_spec
from riskloop.data.synthetic import GeneratorParams, generate, write_partitions
from riskloop.data.validate import REASON_COLUMN, split_batch, validate_batch
from riskloop.errors import DataContractError, QualityGateFailed

SPEC = load_spec("synthetic-fraud")


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return generate(GeneratorParams(days=2, n_cards=100, n_merchants=20))


def corrupt(df: pd.DataFrame) -> pd.DataFrame:
    bad = df.copy()
    for c in bad.select_dtypes("category"):
        bad[c] = bad[c].astype(object)
    bad["amount"] = bad["amount"].astype(object)
    bad.loc[0, "amount"] = -5.0
    bad.loc[1, "channel"] = "telepathy"
    bad.loc[2, "transaction_id"] = bad.loc[3, "transaction_id"]
    bad.loc[5, "amount"] = "abc"
    bad.loc[6, "event_timestamp"] = pd.Timestamp("2099-01-01", tz="UTC")
    bad.loc[7, "card_id"] = None
    bad.loc[8, "distance_from_home_km"] = np.inf
    return bad


def test_clean_batch_passes(batch: pd.DataFrame) -> None:
    r = validate_batch(batch, SPEC.contract)
    assert len(r.valid) == len(batch) and r.quarantine.empty


def test_row_failures_are_quarantined_with_reasons(batch: pd.DataFrame) -> None:
    r = split_batch(corrupt(batch), SPEC.contract)
    assert len(r.valid) + len(r.quarantine) == len(batch)  # nothing lost
    reasons = dict(zip(r.quarantine["transaction_id"].astype(str), r.quarantine[REASON_COLUMN], strict=False))
    ids = batch["transaction_id"]
    assert reasons[ids[0]] == "amount:below_min"
    assert reasons[ids[1]] == "channel:unknown_category"
    assert reasons[ids[3]] == "transaction_id:duplicate"
    assert reasons[ids[5]] == "amount:type_float"
    assert reasons[ids[6]] == "event_timestamp:not_in_future"
    assert reasons[ids[7]] == "card_id:null"
    assert "distance_from_home_km" in reasons[ids[8]]
    assert str(r.valid["channel"].dtype) == "category"
    assert list(r.valid["channel"].cat.categories) == list(SPEC.categories["channel"])


def test_gate_fails_naming_worst_checks(batch: pd.DataFrame) -> None:
    with pytest.raises(QualityGateFailed) as err:
        validate_batch(corrupt(batch), SPEC.contract, max_bad_fraction=0.001)
    msg = str(err.value)
    assert "transaction_id:duplicate (2 rows)" in msg and "how to fix" in msg


def test_batch_level_errors(batch: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="missing column"):
        split_batch(batch.drop(columns=["amount"]), SPEC.contract)
    with pytest.raises(DataContractError, match="wrong type"):
        split_batch(batch.assign(amount="x"), SPEC.contract)
    with pytest.raises(DataContractError, match="empty"):
        split_batch(batch.head(0), SPEC.contract)
    empty = tmp_path / "empty.parquet"
    empty.touch()
    with pytest.raises(DataContractError, match="empty"):
        read_file(empty)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataContractError, match="cannot read"):
        read_file(garbage)


def test_failing_day_writes_quarantine_and_keeps_earlier_days(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    params = GeneratorParams(days=2, n_cards=100, n_merchants=20)
    paths = [p.local_path for p in write_partitions(params, landing)]
    assert paths[1] is not None
    day2 = pd.read_parquet(paths[1])
    day2 = corrupt(day2)
    day2["amount"] = day2["amount"].astype(str)
    day2.loc[10:40, "amount"] = "-1"
    day2.to_parquet(paths[1], index=False)
    done = []
    with pytest.raises(QualityGateFailed):
        for dv in validate_partitions(SPEC, landing, tmp_path):
            done.append(dv)
    assert len(done) == 1 and done[0].valid_path.exists()
    q = pd.read_parquet(tmp_path / "data/synthetic-fraud/quarantine/date=2026-01-02/part-0.parquet")
    assert len(q) >= 31 and q[REASON_COLUMN].str.contains("amount:below_min").sum() >= 31
    assert not (tmp_path / "data/synthetic-fraud/validated/date=2026-01-02").exists()
