"""Training: a deterministic model directory, its threshold, integrity checks on load, refusals."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from riskloop.errors import ModelIntegrityError, TrainingError
from riskloop.hashing import sha256_file
from riskloop.model import (
    LABEL,
    META_FILE,
    MODEL_FILE,
    SPLIT,
    UNLABELLED,
    FeatureSpec,
    ModelBundle,
    feature_spec,
    load_model,
    matrix,
)
from riskloop.training.dataset import assemble
from riskloop.training.evaluate import evaluate_scores
from riskloop.training.train import TrainParams, reference_sample, train_model
from tests.unit.test_training_dataset import toy_params, toy_spec, toy_transactions

PARAMS = TrainParams(
    n_estimators=30, max_depth=3, learning_rate=0.2, early_stopping_rounds=10, target_fpr=0.05, seed=3, nthread=2
)
META = {"dataset_spec": "toy-fraud", "label_cutoff": datetime(2026, 1, 31, tzinfo=UTC)}


def toy_frame() -> pd.DataFrame:
    return assemble(toy_transactions(n=4000), None, toy_spec(), toy_params())


def toy_features() -> FeatureSpec:
    return feature_spec(toy_spec())


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return toy_frame()


@pytest.fixture(scope="module")
def trained(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelBundle]:
    out = tmp_path_factory.mktemp("model")
    return out, train_model(frame, toy_features(), PARAMS, out, meta=META)


def test_model_directory_holds_model_and_metadata(trained: tuple[Path, ModelBundle]) -> None:
    out, bundle = trained
    assert sorted(p.name for p in out.iterdir()) == [META_FILE, MODEL_FILE]
    meta = json.loads((out / META_FILE).read_text())
    assert meta == json.loads(json.dumps(bundle.meta, default=str))
    assert meta["model_sha256"] == sha256_file(out / MODEL_FILE)
    assert meta["features"] == [
        {"name": "x1", "type": "float"},
        {"name": "x2", "type": "float"},
        {"name": "kind", "type": "categorical", "categories": ["a", "b", "c"]},
    ]
    assert meta["train_params"]["nthread"] == 2
    assert meta["train_params"]["seed"] == 3
    assert meta["train_params"] == PARAMS.model_dump()
    assert 0.0 < meta["threshold"] < 1.0
    assert meta["target_fpr"] == 0.05
    assert meta["dataset_spec"] == "toy-fraud"
    assert meta["label_cutoff"] == "2026-01-31 00:00:00+00:00"
    assert 1 <= meta["best_iteration"] <= PARAMS.n_estimators
    assert meta["best_iteration"] == bundle.booster.num_boosted_rounds()


def test_row_and_positive_counts_recorded(frame: pd.DataFrame, trained: tuple[Path, ModelBundle]) -> None:
    meta = trained[1].meta
    for part in ("train", "validation", "test"):
        rows = frame[frame[SPLIT] == part]
        assert meta["rows"][part] == len(rows)
        assert meta["positives"][part] == int(rows[LABEL].sum())
    assert meta["positives"]["train"] > 0
    pos = meta["positives"]["train"]
    assert meta["scale_pos_weight"] == pytest.approx(np.sqrt((meta["rows"]["train"] - pos) / pos))


def test_same_inputs_give_a_byte_identical_model(
    frame: pd.DataFrame, trained: tuple[Path, ModelBundle], tmp_path: Path
) -> None:
    first, bundle = trained
    again = train_model(frame.copy(), toy_features(), PARAMS, tmp_path / "again", meta=META)
    assert sha256_file(tmp_path / "again" / MODEL_FILE) == sha256_file(first / MODEL_FILE)
    assert again.meta["model_sha256"] == bundle.meta["model_sha256"]
    assert (tmp_path / "again" / META_FILE).read_text() == (first / META_FILE).read_text()


def test_the_seed_is_used(frame: pd.DataFrame, trained: tuple[Path, ModelBundle], tmp_path: Path) -> None:
    # Guards the determinism test against hashing something that never changes.
    other = train_model(frame, toy_features(), PARAMS.model_copy(update={"seed": 4}), tmp_path, meta=META)
    assert other.meta["model_sha256"] != trained[1].meta["model_sha256"]


def test_threshold_meets_target_fpr_on_validation(frame: pd.DataFrame, trained: tuple[Path, ModelBundle]) -> None:
    bundle = trained[1]
    val = frame[frame[SPLIT] == "validation"]
    scores = bundle.predict_frame(val)
    y = val[LABEL].to_numpy()
    flagged = scores >= bundle.threshold
    fpr = (flagged & (y == 0)).sum() / (y == 0).sum()
    assert fpr <= PARAMS.target_fpr
    assert flagged.sum() > 0  # the threshold flags something: not a vacuous FPR of 0 by flagging nothing
    assert bundle.threshold in set(scores.tolist())


def test_model_learns_the_signal(frame: pd.DataFrame, trained: tuple[Path, ModelBundle]) -> None:
    bundle = trained[1]
    test = frame[frame[SPLIT] == "test"]
    ev = evaluate_scores(
        test[LABEL].to_numpy(), bundle.predict_frame(test), threshold=bundle.threshold, target_fpr=PARAMS.target_fpr
    )
    assert ev.roc_auc > 0.8


def test_shuffled_labels_give_a_markedly_worse_model(
    frame: pd.DataFrame, trained: tuple[Path, ModelBundle], tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    shuffled = frame.copy()
    fit = shuffled[SPLIT] != "test"  # the test window keeps its true labels
    shuffled.loc[fit, LABEL] = rng.permutation(shuffled.loc[fit, LABEL].to_numpy())
    worse = train_model(shuffled, toy_features(), PARAMS, tmp_path, meta=META)
    test = frame[frame[SPLIT] == "test"]
    y = test[LABEL].to_numpy()

    def pr_auc(bundle: ModelBundle) -> float:
        return evaluate_scores(
            y, bundle.predict_frame(test), threshold=bundle.threshold, target_fpr=PARAMS.target_fpr
        ).pr_auc

    good, bad = pr_auc(trained[1]), pr_auc(worse)
    # Prevalence in the test window is ~4 %, the base rate a no-skill model scores.
    assert good > 0.15
    assert bad < good / 2, (good, bad)


def test_load_model_round_trip(frame: pd.DataFrame, trained: tuple[Path, ModelBundle]) -> None:
    out, bundle = trained
    loaded = load_model(out, expected_sha256=bundle.meta["model_sha256"])
    assert loaded.features == bundle.features == toy_features()
    assert loaded.threshold == bundle.threshold
    assert loaded.meta == json.loads((out / META_FILE).read_text())
    test = frame[frame[SPLIT] == "test"]
    np.testing.assert_array_equal(loaded.predict_frame(test), bundle.predict_frame(test))


def test_the_direct_predict_equals_inplace_predict(frame: pd.DataFrame, trained: tuple[Path, ModelBundle]) -> None:
    """The serving path's C-API call gives XGBoost's own ``inplace_predict`` scores, bit for bit, for one row,
    many rows, missing values, and from two threads at once (its output buffer is per thread)."""
    import concurrent.futures

    from riskloop.model.bundle import predict_dense

    _, bundle = trained
    x = matrix(frame, bundle.features)
    x[::7, 0] = np.nan
    x[::5, -1] = np.nan
    assert x.dtype == np.float32 and x.flags.c_contiguous
    expected = bundle.booster.inplace_predict(x, validate_features=False)
    np.testing.assert_array_equal(predict_dense(bundle.booster, x), expected)
    for i in range(0, len(x), max(1, len(x) // 50)):
        np.testing.assert_array_equal(bundle.predict(x[i : i + 1]), expected[i : i + 1])
    halves = [np.ascontiguousarray(x[: len(x) // 2]), np.ascontiguousarray(x[len(x) // 2 :])]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(20):
            got = list(pool.map(lambda h: predict_dense(bundle.booster, h), halves))
            np.testing.assert_array_equal(np.concatenate(got), expected)


def _copy(out: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


def test_flipped_byte_is_a_model_integrity_error(trained: tuple[Path, ModelBundle], tmp_path: Path) -> None:
    d = _copy(trained[0], tmp_path)
    data = bytearray((d / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="recorded") as err:
        load_model(d)
    assert err.value.fix


def test_truncated_model_is_a_model_integrity_error(trained: tuple[Path, ModelBundle], tmp_path: Path) -> None:
    d = _copy(trained[0], tmp_path)
    (d / MODEL_FILE).write_bytes((d / MODEL_FILE).read_bytes()[:-10])
    with pytest.raises(ModelIntegrityError):
        load_model(d)


def test_expected_sha256_mismatch_is_a_model_integrity_error(trained: tuple[Path, ModelBundle]) -> None:
    with pytest.raises(ModelIntegrityError, match="registered"):
        load_model(trained[0], expected_sha256="0" * 64)


def test_tampered_recorded_hash_is_a_model_integrity_error(trained: tuple[Path, ModelBundle], tmp_path: Path) -> None:
    # The expected hash matches the file, but model.json records another: something was edited.
    d = _copy(trained[0], tmp_path)
    meta = json.loads((d / META_FILE).read_text())
    real = meta["model_sha256"]
    meta["model_sha256"] = "f" * 64
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelIntegrityError, match="recorded"):
        load_model(d, expected_sha256=real)


@pytest.mark.parametrize("missing", [META_FILE, MODEL_FILE])
def test_missing_file_is_a_model_integrity_error(
    trained: tuple[Path, ModelBundle], tmp_path: Path, missing: str
) -> None:
    d = _copy(trained[0], tmp_path)
    (d / missing).unlink()
    with pytest.raises(ModelIntegrityError, match=missing) as err:
        load_model(d)
    assert err.value.fix


def test_no_positives_in_train_is_a_training_error(frame: pd.DataFrame, tmp_path: Path) -> None:
    no_pos = frame.copy()
    no_pos.loc[no_pos[SPLIT] == "train", LABEL] = 0
    with pytest.raises(TrainingError, match="0 positives") as err:
        train_model(no_pos, toy_features(), PARAMS, tmp_path, meta=META)
    assert err.value.fix and "maturity_days" in err.value.fix
    assert not (tmp_path / MODEL_FILE).exists()


def test_no_positives_after_the_label_cutoff_is_a_training_error(tmp_path: Path) -> None:
    # Every chargeback arrives after the cutoff: labels as known are all 0.
    tx = toy_transactions(n=2000)
    tx["label_at"] = tx["label_at"] + pd.Timedelta(days=400)
    frame = assemble(tx, None, toy_spec(), toy_params())
    assert frame[LABEL].sum() == 0
    with pytest.raises(TrainingError) as err:
        train_model(frame, toy_features(), PARAMS, tmp_path, meta=META)
    assert err.value.fix


def test_single_class_validation_is_a_training_error(frame: pd.DataFrame, tmp_path: Path) -> None:
    one_class = frame.copy()
    one_class.loc[one_class[SPLIT] == "validation", LABEL] = 0
    with pytest.raises(TrainingError, match="validation") as err:
        train_model(one_class, toy_features(), PARAMS, tmp_path, meta=META)
    assert err.value.fix


def test_missing_feature_column_is_a_training_error(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="x2"):
        train_model(frame.drop(columns=["x2"]), toy_features(), PARAMS, tmp_path, meta=META)


def test_reference_sample_is_seeded_recent_rows_with_scores(
    frame: pd.DataFrame, trained: tuple[Path, ModelBundle]
) -> None:
    bundle = trained[1]
    ref = reference_sample(frame, bundle, n=300, seed=5)
    assert list(ref.columns) == ["x1", "x2", "kind", "score", LABEL]
    assert len(ref) == 300
    pd.testing.assert_frame_equal(ref, reference_sample(frame, bundle, n=300, seed=5))
    assert not ref.equals(reference_sample(frame, bundle, n=300, seed=6))
    np.testing.assert_array_equal(ref["score"].to_numpy(), bundle.predict_frame(ref))
    # the newest rows: the unlabelled tail (features need no label) when it is large enough
    tail = frame[SPLIT] == UNLABELLED
    assert tail.sum() >= 300
    assert set(ref["x1"]) <= set(frame.loc[tail, "x1"])
    # a tail shorter than 1,000 rows is topped up with test and validation, never the train split
    recent = frame[SPLIT].isin([UNLABELLED, "validation", "test"])
    short_tail = frame[~tail | (frame.index.isin(frame.index[tail][:500]))]
    everything = reference_sample(short_tail, bundle, n=10**6)
    assert len(everything) == int(recent.sum()) - int(tail.sum()) + 500


def test_train_params_are_validated() -> None:
    with pytest.raises(ValidationError):
        TrainParams(target_fpr=0)
    with pytest.raises(ValidationError):
        TrainParams(nthread=0)
    with pytest.raises(ValidationError):
        TrainParams.model_validate({"n_estimator": 10})
