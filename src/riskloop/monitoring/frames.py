"""Reference and current data in one representation, so a drift test compares like with like.

The two sides come from different places:

* the **reference** (``reference/reference.parquet`` of the model version's MLflow
  run, written by ``riskloop.training.train.reference_sample``) holds the raw
  training values: numbers as float64, categoricals as their labels (``"online"``);
* the **current** window is the prediction log, whose ``feature_<name>`` columns
  hold what the model was fed (``riskloop.serving.predictor.assemble_row``):
  float32 values widened to float64, categoricals as the *index* into the
  category list of ``model.json``, NaN when missing or unknown.

Both are turned into what the model sees, written readably: numbers rounded
through float32 exactly as ``riskloop.model.matrix`` does,
categoricals as the label of their code, and every missing or unknown category
as :data:`MISSING` (its own level, so a surge of unknown values is drift too,
not rows silently dropped).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from riskloop.errors import DataContractError
from riskloop.model import FeatureSpec

MISSING: Final = "<missing>"
FEATURE_PREFIX: Final = "feature_"  # as written by riskloop.serving.prediction_log
SCORE: Final = "score"


def feature_kinds(features: FeatureSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(numeric, categorical)`` feature names in model order."""
    numeric = tuple(n for n in features.names if n not in features.categories)
    categorical = tuple(n for n in features.names if n in features.categories)
    return numeric, categorical


def reference_frame(
    reference: pd.DataFrame, features: FeatureSpec, *, score_column: str | None = SCORE
) -> pd.DataFrame:
    """The reference sample as the model saw it: one column per feature (model order), then the score.

    ``reference`` holds raw training values (``reference_sample``); a category
    outside ``model.json``'s list becomes :data:`MISSING`, as it did for the model.
    """
    _require(
        reference,
        features.names,
        score_column,
        where="reference sample",
        fix="use the reference.parquet logged with this model version (training's reference_sample)",
    )
    out: dict[str, pd.Series] = {}
    for name in features.names:
        s = reference[name]
        if name in features.categories:
            cats = list(features.categories[name])
            codes = pd.Categorical(s.astype("string").astype(object), categories=cats).codes
            out[name] = _labels(codes.astype(np.float64), cats)
        else:
            out[name] = _as_model_float(s, name, "reference sample")
    if score_column is not None:
        out[score_column] = pd.to_numeric(reference[score_column], errors="coerce").astype(np.float64)
    return pd.DataFrame(out, index=reference.index).reset_index(drop=True)


def current_frame(log: pd.DataFrame, features: FeatureSpec, *, score_column: str | None = SCORE) -> pd.DataFrame:
    """Prediction-log rows in the reference's representation: ``feature_<name>`` columns decoded, then the score.

    Category codes are mapped back to their labels with ``model.json``'s list; a
    code outside that list breaks the contract (the log was written by another
    model) and raises :class:`~riskloop.errors.DataContractError`.
    """
    columns = [f"{FEATURE_PREFIX}{n}" for n in features.names]
    _require(
        log,
        columns,
        score_column,
        where="prediction log",
        fix="read the log of the model version this reference belongs to (feature_<name> columns)",
    )
    out: dict[str, pd.Series] = {}
    for name, column in zip(features.names, columns, strict=True):
        values = pd.to_numeric(log[column], errors="coerce").to_numpy(np.float64)
        if name in features.categories:
            cats = list(features.categories[name])
            known = ~np.isnan(values)
            bad = known & ((values < 0) | (values >= len(cats)) | (values != np.round(values)))
            if bad.any():
                raise DataContractError(
                    f"feature {name!r} holds {int(bad.sum())} category codes outside 0..{len(cats) - 1}",
                    where=f"prediction log column {column!r}",
                    fix="the rows were scored by a model with another category list; filter the log by model_version",
                )
            out[name] = _labels(values, cats)
        else:
            out[name] = pd.Series(values)
    if score_column is not None:
        out[score_column] = pd.Series(pd.to_numeric(log[score_column], errors="coerce").to_numpy(np.float64))
    return pd.DataFrame(out)


def _labels(codes: np.ndarray, categories: list[str]) -> pd.Series:
    """Category labels of float codes (NaN or negative = :data:`MISSING`), as a categorical Series."""
    levels = [*categories, MISSING]
    idx = np.where(np.isnan(codes) | (codes < 0), len(categories), np.nan_to_num(codes, nan=0.0)).astype(np.int64)
    return pd.Series(pd.Categorical.from_codes(idx, categories=pd.Index(levels)))


def _as_model_float(s: pd.Series, name: str, where: str) -> pd.Series:
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise DataContractError(
            f"numeric feature {name!r} has dtype {s.dtype}",
            where=where,
            fix="store numeric features as numbers (the training frame's values)",
        )
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float32, na_value=np.nan).astype(np.float64)
    return pd.Series(np.where(np.isinf(values), np.nan, values))


def _require(
    frame: pd.DataFrame, columns: tuple[str, ...] | list[str], score_column: str | None, *, where: str, fix: str
) -> None:
    wanted = [*columns, *([score_column] if score_column is not None else [])]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataContractError(f"{len(missing)} column(s) missing: {missing[:10]}", where=where, fix=fix)


__all__ = ["MISSING", "current_frame", "feature_kinds", "reference_frame"]
