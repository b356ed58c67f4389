"""The training frame: labels as known at the cutoff, the maturity cut, the split, the model matrix.

The toy dataset below is built by hand (no Feast): raw numeric features, one
categorical, late labels. ``toy_spec`` / ``toy_transactions`` are reused by the
training and registry tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskloop.data.spec import DatasetSpec, load_spec, parse_spec
from riskloop.data.synthetic import GeneratorParams, generate
from riskloop.errors import RiskloopError, TrainingError
from riskloop.features.compute import REALTIME_FEATURES
from riskloop.features.store import STORE_FEATURES
from riskloop.model import LABEL, SPLIT, UNLABELLED, FeatureSpec, feature_spec, matrix
from riskloop.training.dataset import WindowParams, assemble, label_as_known

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOY_DAYS = 30
KINDS = ("a", "b", "c")

TOY_SPEC_YAML = """
name: toy-fraud
source: {kind: parquet, path: data/toy}
id_column: tx_id
timestamp_column: ts
label: {column: is_fraud, available_at: label_at}
features: {source: raw, raw_columns: [x1, x2, kind]}
split: {kind: time}
contract:
  columns:
    tx_id: {type: string, unique: true}
    ts: {type: timestamp}
    x1: {type: float}
    x2: {type: float, nullable: true}
    kind: {type: category, allowed: [a, b, c]}
    is_fraud: {type: integer, min: 0, max: 1}
    label_at: {type: timestamp, nullable: true}
"""

TIMELESS_SPEC_YAML = """
name: toy-credit
source: {kind: parquet, path: data/toy-credit}
id_column: tx_id
timestamp_column: null
label: {column: is_fraud}
features: {source: raw, raw_columns: [x1, x2, kind]}
split: {kind: stratified, validation_fraction: 0.2, test_fraction: 0.25}
contract:
  columns:
    tx_id: {type: string, unique: true}
    x1: {type: float}
    x2: {type: float, nullable: true}
    kind: {type: category, allowed: [a, b, c]}
    is_fraud: {type: integer, min: 0, max: 1}
"""


def toy_spec() -> DatasetSpec:
    return parse_spec(TOY_SPEC_YAML, where="toy spec")


def timeless_spec() -> DatasetSpec:
    return parse_spec(TIMELESS_SPEC_YAML, where="toy timeless spec")


def toy_transactions(n: int = 4000, *, days: int = TOY_DAYS, seed: int = 0) -> pd.DataFrame:
    """``n`` transactions spread over ``days`` from T0; fraud depends on x1, x2 and kind == "c".

    Labels arrive 1 to ~12 days after the transaction (``label_at``), like chargebacks.
    """
    rng = np.random.default_rng(seed)
    offset_us = rng.integers(0, days * 86_400 * 1_000_000, size=n)
    ts = pd.to_datetime(T0) + pd.to_timedelta(offset_us, unit="us")
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    kind = rng.choice(KINDS, size=n, p=(0.5, 0.3, 0.2))
    logit = -4.2 + 1.6 * x1 + 0.8 * x2 + 1.5 * (kind == "c")
    fraud = rng.random(n) < 1 / (1 + np.exp(-logit))
    x2[rng.random(n) < 0.05] = np.nan  # missing values the model must tolerate
    delay = pd.to_timedelta((1 + rng.gamma(2.0, 1.5, size=n)) * 86_400 * 1_000_000, unit="us")
    return pd.DataFrame(
        {
            "tx_id": [f"T{i:06d}" for i in range(n)],
            "ts": ts,
            "x1": x1,
            "x2": x2,
            "kind": kind,
            "is_fraud": fraud.astype(np.int8),
            "label_at": pd.Series(ts + delay).where(fraud),
        }
    )


def toy_params(**overrides: object) -> WindowParams:
    base: dict[str, object] = {
        "cutoff": T0 + timedelta(days=TOY_DAYS),
        "maturity_days": 5,
        "validation_days": 5,
        "test_days": 5,
    }
    return WindowParams.model_validate({**base, **overrides})


# ---------------------------------------------------------------- labels as known


def test_label_counts_only_if_known_strictly_before_cutoff() -> None:
    spec = load_spec("synthetic-fraud")
    cutoff = datetime(2026, 1, 20, tzinfo=UTC)
    at = pd.Timestamp(cutoff)
    df = pd.DataFrame(
        {
            "is_fraud": [1, 1, 1, 1, 0, 0],
            "chargeback_timestamp": pd.Series(
                [
                    at - pd.Timedelta(microseconds=1),
                    at,
                    at + pd.Timedelta(days=1),
                    pd.NaT,
                    pd.NaT,
                    at - pd.Timedelta(days=1),
                ],
                dtype="datetime64[us, UTC]",
            ),
        }
    )
    assert label_as_known(df, spec, cutoff).tolist() == [1, 0, 0, 0, 0, 0]


def test_label_without_available_at_is_the_label() -> None:
    spec = load_spec("ulb-creditcard")
    df = pd.DataFrame({"is_fraud": np.array([0, 1, 1, 0], dtype=np.int8)})
    y = label_as_known(df, spec, datetime(2000, 1, 1, tzinfo=UTC))
    assert y.tolist() == [0, 1, 1, 0]
    assert y.dtype == np.int64


def test_assembled_labels_on_synthetic_data_are_as_known_at_cutoff() -> None:
    spec = load_spec("synthetic-fraud")
    tx = generate(GeneratorParams(days=20, n_cards=200, n_merchants=40, seed=3))
    cutoff = datetime(2026, 1, 21, tzinfo=UTC)
    params = WindowParams(cutoff=cutoff, maturity_days=2, validation_days=3, test_days=3)
    frame = assemble(tx, None, spec, params)
    fraud = frame["is_fraud"] == 1
    known = frame["chargeback_timestamp"] < pd.Timestamp(cutoff)
    assert (frame[LABEL] == (fraud & known).astype(int)).all()
    # Non-vacuous: the window holds frauds both before and after their chargeback arrived.
    assert (fraud & known).sum() > 0
    assert (fraud & ~known).sum() > 0
    assert (frame.loc[fraud & ~known, LABEL] == 0).all()
    assert "event_hour" in frame.columns


# ---------------------------------------------------------------- maturity cut and split


@pytest.mark.parametrize(("maturity_days", "cutoff_day"), [(0, 30), (5, 30), (7, 25), (2.5, 28)])
def test_immature_rows_never_reach_any_split(maturity_days: float, cutoff_day: int) -> None:
    tx = toy_transactions()
    cutoff = T0 + timedelta(days=cutoff_day)
    params = toy_params(cutoff=cutoff, maturity_days=maturity_days, validation_days=3, test_days=3)
    frame = assemble(tx, None, toy_spec(), params)
    mature_before = pd.Timestamp(cutoff) - pd.Timedelta(days=maturity_days)
    for part in ("train", "validation", "test"):
        assert (frame.loc[frame[SPLIT] == part, "ts"] < mature_before).all(), part
    # Nothing mature was dropped on the way; the immature rows before the cutoff are kept, marked unlabelled.
    labelled = frame[SPLIT] != UNLABELLED
    assert int(labelled.sum()) == int((tx["ts"] < mature_before).sum())
    assert (frame.loc[~labelled, "ts"] >= mature_before).all() and (frame["ts"] < pd.Timestamp(cutoff)).all()
    assert int((~labelled).sum()) == int(((tx["ts"] >= mature_before) & (tx["ts"] < pd.Timestamp(cutoff))).sum())


@settings(max_examples=25, deadline=None)
@given(
    cutoff_hours=st.integers(10 * 24, 40 * 24),
    maturity=st.floats(0, 10),
    validation=st.floats(0.5, 4),
    test=st.floats(0.5, 4),
)
def test_maturity_cut_and_time_order_hold_for_any_window(
    cutoff_hours: int, maturity: float, validation: float, test: float
) -> None:
    tx = toy_transactions(n=1500)
    cutoff = T0 + timedelta(hours=cutoff_hours)
    params = toy_params(cutoff=cutoff, maturity_days=maturity, validation_days=validation, test_days=test)
    try:
        frame = assemble(tx, None, toy_spec(), params)
    except TrainingError:
        return  # a window too short for its splits is refused, which is the contract
    labelled = frame[SPLIT] != UNLABELLED
    assert frame.loc[labelled, "ts"].max() < pd.Timestamp(cutoff) - pd.Timedelta(days=maturity)
    assert frame["ts"].max() < pd.Timestamp(cutoff)
    _assert_time_ordered(frame)


def _assert_time_ordered(frame: pd.DataFrame, ts_col: str = "ts") -> None:
    ts = {p: frame.loc[frame[SPLIT] == p, ts_col] for p in ("train", "validation", "test", UNLABELLED)}
    assert ts["train"].max() < ts["validation"].min() <= ts["validation"].max() < ts["test"].min()
    assert ts[UNLABELLED].empty or ts["test"].max() < ts[UNLABELLED].min()


def test_split_is_by_time_with_the_window_lengths() -> None:
    params = toy_params()
    frame = assemble(toy_transactions(), None, toy_spec(), params)
    _assert_time_ordered(frame)
    end = pd.Timestamp(params.cutoff) - pd.Timedelta(days=params.maturity_days)
    test_start = end - pd.Timedelta(days=params.test_days)
    val_start = test_start - pd.Timedelta(days=params.validation_days)
    split = frame[SPLIT]
    assert (((frame["ts"] >= test_start) & (frame["ts"] < end)) == (split == "test")).all()
    assert (((frame["ts"] >= val_start) & (frame["ts"] < test_start)) == (split == "validation")).all()
    assert ((frame["ts"] >= end) == (split == UNLABELLED)).all()
    assert set(split) == {"train", "validation", "test", UNLABELLED}


def test_rows_sorted_by_time_then_id_whatever_the_input_order() -> None:
    tx = toy_transactions(n=1500)
    tie = pd.Timestamp(T0 + timedelta(days=1))
    tx["ts"] = tx["ts"].mask(tx.index.isin([6, 5]), tie)  # a tie on the timestamp: the id decides
    a = assemble(tx, None, toy_spec(), toy_params())
    b = assemble(tx.sample(frac=1.0, random_state=1), None, toy_spec(), toy_params())
    pd.testing.assert_frame_equal(a, b)
    keys = list(zip(a["ts"], a["tx_id"], strict=True))
    assert keys == sorted(keys)
    assert a.loc[a["ts"] == tie, "tx_id"].tolist() == ["T000005", "T000006"]


def test_input_frame_is_not_modified() -> None:
    tx = toy_transactions(n=500)
    before = tx.copy()
    assemble(tx, None, toy_spec(), toy_params())
    pd.testing.assert_frame_equal(tx, before)


def test_features_are_joined_by_id() -> None:
    tx = toy_transactions(n=800)
    feats = pd.DataFrame({"tx_id": tx["tx_id"][::-1], "card_rate": np.arange(len(tx), dtype=float)[::-1], "x1": 99.0})
    frame = assemble(tx, feats, toy_spec(), toy_params())
    by_id = frame.set_index("tx_id")
    assert (by_id["card_rate"] == by_id.index.str[1:].astype(int).astype(float)).all()
    # A column already in the transactions is kept, not overwritten by the feature frame.
    assert (frame["x1"] != 99.0).all()


def test_no_rows_after_maturity_cut_is_a_training_error() -> None:
    with pytest.raises(TrainingError) as err:
        assemble(toy_transactions(n=200), None, toy_spec(), toy_params(cutoff=T0 + timedelta(days=3), maturity_days=5))
    assert err.value.fix


def test_empty_split_is_a_training_error() -> None:
    # The window after the cut is 10 days; validation + test take all of it.
    with pytest.raises(TrainingError, match="train split is empty") as err:
        assemble(
            toy_transactions(n=500, days=10),
            None,
            toy_spec(),
            toy_params(cutoff=T0 + timedelta(days=10), maturity_days=0, validation_days=4, test_days=6),
        )
    assert err.value.fix


def test_naive_cutoff_is_read_as_utc_or_refused_clearly() -> None:
    # A KFP string parameter like "2026-01-31" validates into a naive datetime; the data is UTC.
    tx = toy_transactions(n=500)
    aware = toy_params(cutoff=T0 + timedelta(days=TOY_DAYS))
    naive = toy_params(cutoff="2026-01-31T00:00:00")
    try:
        frame = assemble(tx, None, toy_spec(), naive)
    except RiskloopError as exc:
        assert exc.fix
        return
    pd.testing.assert_frame_equal(frame, assemble(tx, None, toy_spec(), aware))


def test_stratified_split_is_seeded_and_keeps_class_proportions() -> None:
    spec = timeless_spec()
    tx = toy_transactions(n=3000).drop(columns=["ts", "label_at"])
    params = WindowParams(cutoff=T0, seed=11)
    a = assemble(tx, None, spec, params)
    b = assemble(tx.sample(frac=1.0, random_state=2), None, spec, params)
    assert a[SPLIT].tolist() == b[SPLIT].tolist()
    assert len(a) == len(tx)  # no time axis, so no maturity cut
    other = assemble(tx, None, spec, WindowParams(cutoff=T0, seed=12))
    assert other[SPLIT].tolist() != a[SPLIT].tolist()

    for cls in (0, 1):
        in_cls = a[a[LABEL] == cls]
        counts = in_cls[SPLIT].value_counts()
        assert counts["test"] == round(len(in_cls) * spec.split.test_fraction)
        assert counts["validation"] == round(len(in_cls) * spec.split.validation_fraction)
        assert counts["train"] == len(in_cls) - counts["test"] - counts["validation"]
    rates = a.groupby(SPLIT)[LABEL].mean()
    assert rates.max() - rates.min() < 0.01
    assert a[LABEL].sum() > 100


def test_raw_spec_with_fractional_windows_like_ulb() -> None:
    # ULB spans two days; its spec asks for 0.3 / 0.5 day windows and no maturity.
    spec = load_spec("ulb-creditcard")
    rng = np.random.default_rng(5)
    n = 2000
    cols = [*spec.features.raw_columns]
    df = pd.DataFrame(rng.normal(size=(n, len(cols))), columns=cols)
    df["Amount"] = df["Amount"].abs() * 50
    df["Time"] = np.sort(rng.uniform(0, 172_800, size=n))
    df["event_timestamp"] = pd.Timestamp("2013-09-01", tz="UTC") + pd.to_timedelta(df["Time"], unit="s")
    df["transaction_id"] = [f"U{i:06d}" for i in range(n)]
    df["is_fraud"] = (rng.random(n) < 0.05).astype(np.int8)
    params = WindowParams(
        cutoff=datetime(2013, 9, 3, tzinfo=UTC),
        maturity_days=spec.label.maturity_days,
        validation_days=spec.split.validation_days,
        test_days=spec.split.test_days,
    )
    frame = assemble(df, None, spec, params)
    assert len(frame) == n
    _assert_time_ordered(frame, "event_timestamp")
    assert (frame[LABEL] == frame["is_fraud"]).all()
    x = matrix(frame, feature_spec(spec))
    assert x.shape == (n, 29)
    assert np.allclose(x[:, -1], frame["Amount"].to_numpy(np.float32))


# ---------------------------------------------------------------- feature spec and matrix


def test_feature_spec_of_raw_spec_is_its_columns_with_contract_categories() -> None:
    fs = feature_spec(toy_spec())
    assert fs.names == ("x1", "x2", "kind")
    assert fs.categories == {"kind": KINDS}
    assert fs.types == ["q", "q", "c"]
    ulb = feature_spec(load_spec("ulb-creditcard"))
    assert ulb.names[0] == "V1" and ulb.names[-1] == "Amount" and len(ulb.names) == 29
    assert ulb.categories == {}


def test_feature_spec_of_feast_spec_lists_every_tier() -> None:
    spec = load_spec("synthetic-fraud")
    fs = feature_spec(spec)
    assert fs.names[:4] == ("amount", "distance_from_home_km", "card_age_days", "event_hour")
    assert set(STORE_FEATURES) <= set(fs.names) and set(REALTIME_FEATURES) <= set(fs.names)
    assert len(set(fs.names)) == len(fs.names)
    assert set(fs.categories) == {"merchant_category", "channel", "device_type", "country"}
    assert fs.categories["channel"] == spec.categories["channel"]
    assert "currency" not in fs.categories  # a contract category that is not a model input


def test_feature_spec_round_trips_through_dict() -> None:
    fs = FeatureSpec(("b", "kind", "a"), {"kind": ("z", "y")})
    d = fs.to_dict()
    assert d == [
        {"name": "b", "type": "float"},
        {"name": "kind", "type": "categorical", "categories": ["z", "y"]},
        {"name": "a", "type": "float"},
    ]
    assert FeatureSpec.from_dict(d) == fs


def test_matrix_codes_follow_the_contract_order() -> None:
    fs = FeatureSpec(("kind",), {"kind": ("c", "a", "b")})
    df = pd.DataFrame({"kind": ["a", "b", "c", "a"]})
    assert matrix(df, fs)[:, 0].tolist() == [1.0, 2.0, 0.0, 1.0]
    # A pandas Categorical with its own category order is mapped by value, not by its codes.
    cat = pd.DataFrame({"kind": pd.Categorical(["a", "b", "c"], categories=["a", "b", "c"])})
    assert matrix(cat, fs)[:, 0].tolist() == [1.0, 2.0, 0.0]


def test_matrix_unknown_or_missing_category_is_nan() -> None:
    fs = FeatureSpec(("kind",), {"kind": ("a", "b")})
    df = pd.DataFrame({"kind": ["a", "zzz", None, "b", "A"]})
    col = matrix(df, fs)[:, 0]
    assert col[0] == 0.0 and col[3] == 1.0
    assert np.isnan(col[[1, 2, 4]]).all()


def test_matrix_columns_follow_feature_order_as_float32() -> None:
    fs = FeatureSpec(("x2", "kind", "x1"), {"kind": KINDS})
    df = pd.DataFrame({"x1": [1.5, 2.5], "kind": ["b", "c"], "x2": [None, "7"], "unused": [0, 0]})
    x = matrix(df, fs)
    assert x.dtype == np.float32
    assert x.shape == (2, 3)
    assert np.isnan(x[0, 0]) and x[1, 0] == 7.0
    assert x[:, 1].tolist() == [1.0, 2.0]
    assert x[:, 2].tolist() == [1.5, 2.5]


def test_matrix_missing_feature_column_is_a_training_error() -> None:
    fs = FeatureSpec(("x1", "card_rate"), {})
    with pytest.raises(TrainingError, match="card_rate") as err:
        matrix(pd.DataFrame({"x1": [1.0]}), fs)
    assert err.value.fix


def test_window_params_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        WindowParams(cutoff=T0, maturity_days=-1)
    with pytest.raises(ValueError):
        WindowParams(cutoff=T0, test_days=0)
    with pytest.raises(ValueError):
        WindowParams.model_validate({"cutoff": T0, "typo_days": 1})
