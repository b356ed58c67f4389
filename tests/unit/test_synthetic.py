from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from riskloop.data.synthetic import GeneratorParams, Scenario, generate, write_partitions

SMALL = {"days": 8, "n_cards": 400, "n_merchants": 80}


def frame_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()).hexdigest()


def test_same_seed_same_frame_hash() -> None:
    a = generate(GeneratorParams(seed=3, **SMALL))
    b = generate(GeneratorParams(seed=3, **SMALL))
    assert frame_hash(a) == frame_hash(b)
    assert frame_hash(a) != frame_hash(generate(GeneratorParams(seed=4, **SMALL)))


def test_schema_and_ids() -> None:
    df = generate(GeneratorParams(**SMALL))
    assert df["transaction_id"].is_unique
    assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert df["event_timestamp"].is_monotonic_increasing
    assert (df["amount"] > 0).all()
    fraud = df[df["is_fraud"] == 1]
    assert fraud["chargeback_timestamp"].notna().all()
    assert (fraud["chargeback_timestamp"] > fraud["event_timestamp"]).all()
    assert df.loc[df["is_fraud"] == 0, "chargeback_timestamp"].isna().all()


def test_fraud_rate_and_history_signal() -> None:
    df = generate(GeneratorParams(days=20, n_cards=2000, n_merchants=300, seed=11))
    rate = df["is_fraud"].mean()
    assert 0.005 <= rate <= 0.02
    # fraud comes in bursts on the same card: its previous transaction is much closer in time
    df = df.sort_values(["card_id", "event_timestamp"])
    gap = df.groupby("card_id")["event_timestamp"].diff().dt.total_seconds()
    assert gap[df["is_fraud"] == 1].median() < gap[df["is_fraud"] == 0].median() / 10
    # and far above the card's usual amount
    usual = df.groupby("card_id")["amount"].transform("median")
    ratio = df["amount"] / usual
    assert ratio[df["is_fraud"] == 1].median() > 2 * ratio[df["is_fraud"] == 0].median()


@pytest.mark.parametrize("scenario", [Scenario.covariate_shift, Scenario.concept_drift])
def test_days_before_drift_identical_across_scenarios(scenario: Scenario) -> None:
    base = generate(GeneratorParams(drift_day=4, **SMALL))
    drifted = generate(GeneratorParams(drift_day=4, scenario=scenario, **SMALL))
    cut = pd.Timestamp("2026-01-05", tz="UTC")
    pd.testing.assert_frame_equal(base[base.event_timestamp < cut], drifted[drifted.event_timestamp < cut])
    assert frame_hash(base[base.event_timestamp >= cut]) != frame_hash(drifted[drifted.event_timestamp >= cut])


def test_covariate_shift_moves_inputs() -> None:
    p = {"days": 10, "n_cards": 1000, "n_merchants": 100, "drift_day": 5}
    base = generate(GeneratorParams(**p))
    shifted = generate(GeneratorParams(scenario="covariate_shift", **p))  # type: ignore[arg-type]
    late = pd.Timestamp("2026-01-06", tz="UTC")
    b, s = base[base.event_timestamp >= late], shifted[shifted.event_timestamp >= late]
    assert s["amount"].median() > 1.4 * b["amount"].median()
    assert (s["channel"] == "online").mean() > (b["channel"] == "online").mean() + 0.1


def test_concept_drift_keeps_inputs_alike_but_changes_fraud() -> None:
    p = {"days": 12, "n_cards": 2000, "n_merchants": 200, "drift_day": 6}
    base = generate(GeneratorParams(**p))
    drift = generate(GeneratorParams(scenario="concept_drift", **p))  # type: ignore[arg-type]
    late = pd.Timestamp("2026-01-07", tz="UTC")
    b, d = base[base.event_timestamp >= late], drift[drift.event_timestamp >= late]
    assert abs(np.log(d["amount"].median() / b["amount"].median())) < 0.05  # inputs look alike
    assert (d[d.is_fraud == 1]["device_type"] == "desktop").mean() > 0.95  # the new tell
    assert d[d.is_fraud == 1]["distance_from_home_km"].median() < b[b.is_fraud == 1]["distance_from_home_km"].median()


def test_params_reject_bad_values() -> None:
    with pytest.raises(ValidationError, match="drift_day"):
        GeneratorParams(days=5, drift_day=9)
    with pytest.raises(ValidationError):
        GeneratorParams(days=0)
    with pytest.raises(ValidationError):
        GeneratorParams(unknown=1)  # type: ignore[call-arg]


def test_write_partitions_one_file_per_day(tmp_path) -> None:  # type: ignore[no-untyped-def]
    paths = write_partitions(GeneratorParams(days=3, n_cards=50, n_merchants=20), tmp_path)
    assert [p.parent.name for p in paths] == ["date=2026-01-01", "date=2026-01-02", "date=2026-01-03"]
    back = pd.concat([p.read_table().to_pandas() for p in paths], ignore_index=True)
    assert len(back) == len(generate(GeneratorParams(days=3, n_cards=50, n_merchants=20)))
