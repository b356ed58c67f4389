"""Train XGBoost on a training frame and write the model directory (:mod:`riskloop.model` owns its format).

Same inputs give a byte-identical ``model.ubj``: rows are in a stable order,
categories in the contract's order, and ``nthread`` and ``seed`` are fixed and
recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field

from riskloop import __version__
from riskloop.data.policy import Policy, ThresholdRule
from riskloop.errors import TrainingError
from riskloop.model import LABEL, SPLIT, UNLABELLED, FeatureSpec, ModelBundle, matrix, save_model
from riskloop.training.evaluate import select_threshold

# the fraud policy's rule (a 1 % false-positive rate): what a caller without a dataset spec gets
FRAUD_THRESHOLD = Policy(use="fraud").threshold


class TrainParams(BaseModel):
    """Hyperparameters and determinism settings (a typed pipeline parameter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_estimators: int = Field(default=400, ge=1, le=5000)
    learning_rate: float = Field(default=0.08, gt=0, le=1)
    max_depth: int = Field(default=6, ge=1, le=16)
    min_child_weight: float = Field(default=1.0, ge=0)
    subsample: float = Field(default=0.9, gt=0, le=1)
    colsample_bytree: float = Field(default=0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    # Imbalance: weight positives by sqrt(neg/pos). Full neg/pos ruins calibration (Brier);
    # none under-fits the rare class. None = this default, a number = that weight.
    scale_pos_weight: float | None = Field(default=None, gt=0)
    target_fpr: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="an explicit override of the threshold rule: choose the threshold for this false-positive "
        "rate; None = the dataset spec's policy.threshold",
    )
    seed: int = 0
    nthread: int = Field(default=2, ge=1, le=64)


def train_model(
    frame: pd.DataFrame,
    fspec: FeatureSpec,
    params: TrainParams,
    out_dir: Path,
    *,
    meta: dict[str, Any],
    rule: ThresholdRule = FRAUD_THRESHOLD,
) -> ModelBundle:
    """Train on the ``train`` split, early-stop on ``validation``, write ``out_dir``.

    The decision threshold is chosen on the validation split by ``rule`` (the spec's ``policy.threshold``;
    default the fraud rule, a 1 % false-positive rate), unless ``params.target_fpr`` overrides it.
    ``model.json`` records the rule that chose it (``threshold_rule``). ``meta`` adds provenance fields
    (dataset spec, window, cutoff, feature service).
    """
    if params.target_fpr is not None:
        rule = ThresholdRule(target_fpr=params.target_fpr)
    parts = {p: frame[frame[SPLIT] == p] for p in ("train", "validation")}
    y_train = parts["train"][LABEL].to_numpy()
    pos = int(y_train.sum())
    if pos == 0 or pos == len(y_train):
        raise TrainingError(
            f"the train split has {pos} positives in {len(y_train)} rows",
            fix="widen the training window or lower maturity_days so labels exist",
        )
    if parts["validation"][LABEL].nunique() < 2:
        raise TrainingError(
            "the validation split has a single class", fix="lengthen validation_days so it holds both classes"
        )
    weight = params.scale_pos_weight or float(np.sqrt((len(y_train) - pos) / pos))
    dtrain = xgb.DMatrix(
        matrix(parts["train"], fspec),
        label=y_train,
        feature_names=list(fspec.names),
        feature_types=fspec.types,
        enable_categorical=True,
        nthread=params.nthread,
    )
    dval = xgb.DMatrix(
        matrix(parts["validation"], fspec),
        label=parts["validation"][LABEL].to_numpy(),
        feature_names=list(fspec.names),
        feature_types=fspec.types,
        enable_categorical=True,
        nthread=params.nthread,
    )
    booster_params = {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "tree_method": "hist",
        "learning_rate": params.learning_rate,
        "max_depth": params.max_depth,
        "min_child_weight": params.min_child_weight,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "scale_pos_weight": weight,
        "seed": params.seed,
        "nthread": params.nthread,
        "max_cat_to_onehot": 1,
    }
    booster = xgb.train(
        booster_params,
        dtrain,
        num_boost_round=params.n_estimators,
        evals=[(dval, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    booster = booster[: booster.best_iteration + 1]  # keep exactly the best trees
    booster.set_param({"nthread": 1})  # serving scores single rows: one thread per worker is fastest
    val_scores = booster.inplace_predict(matrix(parts["validation"], fspec), validate_features=False)
    try:
        threshold = select_threshold(parts["validation"][LABEL].to_numpy(), np.asarray(val_scores), rule)
        reaches_target = True
    except TrainingError:
        # a model too coarse to reach the target FPR (or flag rate) is a bad model, not a broken run: it flags
        # nothing, says so in model.json, and the gate judges it on its metrics
        threshold = float(np.nextafter(float(np.max(val_scores)), np.inf))
        reaches_target = False

    return save_model(
        booster,
        fspec,
        {
            **meta,
            "threshold": float(threshold),
            "threshold_rule": {"kind": rule.kind, "value": rule.value, "text": rule.describe()},
            "target_fpr": rule.target_fpr,
            "threshold_reaches_target_fpr": reaches_target,
            "train_params": params.model_dump(),
            "scale_pos_weight": weight,
            "best_iteration": int(booster.num_boosted_rounds()),
            "rows": {p: int((frame[SPLIT] == p).sum()) for p in ("train", "validation", "test")},
            "positives": {p: int(frame.loc[frame[SPLIT] == p, LABEL].sum()) for p in ("train", "validation", "test")},
            "riskloop_version": __version__,
            "xgboost_version": xgb.__version__,
        },
        out_dir,
    )


def reference_sample(frame: pd.DataFrame, bundle: ModelBundle, *, n: int = 5000, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of the window's newest rows with their scores: the drift monitor's reference.

    The newest rows are the ``unlabelled`` tail (younger than the label maturity at the cutoff: the inputs
    need no label), topped up with the test and validation splits when the tail is short. Not the train
    split: features with 7- and 30-day history windows fill up over a dataset's first weeks, and against a
    train-split reference a drift-free offline run found material drift in 29 % of the features every day;
    against validation + test (a week older than the tail) 30-day features still differed from the traffic
    served after the cutoff. ``label`` is as known at the cutoff (incomplete on the tail).
    """
    pool = frame[frame[SPLIT] == UNLABELLED]
    if len(pool) < min(n, 1000):
        pool = frame[frame[SPLIT].isin([UNLABELLED, "test", "validation"])]
    if len(pool) < min(n, 1000):
        pool = frame
    sample = pool.sample(n=min(n, len(pool)), random_state=seed).sort_index()
    out = sample[list(bundle.features.names)].copy()
    out["score"] = bundle.predict_frame(sample)
    out[LABEL] = sample[LABEL].to_numpy()
    return out.reset_index(drop=True)
