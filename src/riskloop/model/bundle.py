"""The model directory: the artifact contract shared by training, the registry, serving and monitoring.

Locally and in the cluster (where KServe mounts it at ``/mnt/models``)::

    model.ubj    the booster in XGBoost's own binary format (never pickle)
    model.json   ordered features and types, decision threshold, feature service,
                 dataset spec, training window, label cutoff, versions, seeds,
                 and the sha256 of model.ubj

Written by :func:`save_model`, read only through :func:`load_model`, which checks the hash first. Training
then adds the spec it was trained under (``dataset_spec.yaml``) and makes the directory an MLflow pyfunc model
(``MLmodel``, requirements, ``code/``: :mod:`riskloop.model.pyfunc`) around these two files, which stay put.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from xgboost.core import _LIB, _check_call

from riskloop.errors import ModelIntegrityError
from riskloop.hashing import sha256_file
from riskloop.model.features import FeatureSpec, matrix

MODEL_FILE = "model.ubj"
META_FILE = "model.json"


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model directory."""

    booster: xgb.Booster
    meta: dict[str, Any]
    features: FeatureSpec

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``x`` (the model's feature order, categories as codes, NaN missing)."""
        if x.ndim == 2 and x.dtype == np.float32 and x.flags.c_contiguous:
            return predict_dense(self.booster, x)
        return np.asarray(self.booster.inplace_predict(x, validate_features=False), dtype=np.float64)

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        return self.predict(matrix(df, self.features))


# XGBoost's C API call that Booster.inplace_predict makes for a dense numpy array, with the same arguments:
# all trees, value (not margin) output, NaN missing, no proxy. Its Python wrapper spends ~100 µs per call
# on work that does not change between calls (two json.dumps, a class built per call in its array
# interface, type dispatch over a dozen input kinds), more than the trees of one row take.
_PREDICT_ARGS = json.dumps(
    {
        "type": 0,
        "training": False,
        "iteration_begin": 0,
        "iteration_end": 0,
        "strict_shape": False,
        "cache_id": 0,
        "missing": float("nan"),
    }
).encode()


def predict_dense(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """``booster.inplace_predict(x)`` for a C-contiguous 2-D float32 array, through XGBoost's C API directly.

    ``XGBoosterPredictFromDense`` (xgboost/c_api.h) with the array interface written here; the result is
    copied out of XGBoost's thread-local buffer before the next call can reuse it. A test holds it equal to
    ``inplace_predict`` (tests/unit/test_train.py), so an XGBoost upgrade that changes the call fails there.
    """
    rows, cols = x.shape
    iface = b'{"data":[%d,true],"shape":[%d,%d],"typestr":"<f4","version":3}' % (x.ctypes.data, rows, cols)
    shape = ctypes.POINTER(ctypes.c_uint64)()  # xgboost.core.c_bst_ulong
    dims = ctypes.c_uint64()
    preds = ctypes.POINTER(ctypes.c_float)()
    _check_call(
        _LIB.XGBoosterPredictFromDense(
            booster.handle, iface, _PREDICT_ARGS, None, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds)
        )
    )
    n = 1
    for i in range(dims.value):
        n *= int(shape[i])
    if n != rows:
        raise ValueError(f"the model gives {n} values for {rows} rows: a one-output model was expected")
    # a copy out of XGBoost's buffer (np.ctypeslib.as_array costs ~10 µs of ctypes type building per call)
    return np.frombuffer(ctypes.string_at(preds, 4 * n), dtype=np.float32).astype(np.float64)


def save_model(booster: xgb.Booster, fspec: FeatureSpec, meta: dict[str, Any], out_dir: Path) -> ModelBundle:
    """Write ``out_dir``: the booster, and ``meta`` plus the features and the booster's sha256 as model.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    booster.save_model(str(model_path))
    full_meta = {**meta, "features": fspec.to_dict(), "model_sha256": sha256_file(model_path)}
    (out_dir / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=str))
    return ModelBundle(booster, full_meta, fspec)


def load_model(model_dir: Path, *, expected_sha256: str | None = None) -> ModelBundle:
    """Load a model directory, checking ``model.ubj`` against its recorded (or expected) hash first."""
    model_path, meta_path = model_dir / MODEL_FILE, model_dir / META_FILE
    for p in (model_path, meta_path):
        if not p.is_file():
            raise ModelIntegrityError(
                f"{p.name} is missing from the model directory",
                where=str(model_dir),
                fix="point at a directory written by riskloop training (model.ubj, model.json)",
            )
    meta = json.loads(meta_path.read_text())
    actual = sha256_file(model_path)
    for label, want in (("registered", expected_sha256), ("recorded", meta.get("model_sha256"))):
        if want is not None and want != actual:
            raise ModelIntegrityError(
                f"model.ubj sha256 {actual[:12]}… does not match the {label} {want[:12]}…",
                where=str(model_path),
                fix="the file was altered or truncated; re-download the registered version",
            )
    booster = xgb.Booster()
    booster.load_model(str(model_path))
    booster.set_param({"nthread": 1})
    return ModelBundle(booster, meta, FeatureSpec.from_dict(meta["features"]))
