"""The model directory as an MLflow pyfunc model: rows in, positive-class scores out, prepared as the server does.

Training makes the model directory an MLflow model (:func:`save_mlflow_model`), so the registered version's
source loads with ``mlflow.pyfunc.load_model("models:/<model>@champion")``, ``mlflow models serve``, KServe's
``mlflow`` format or MLServer's MLflow runtime. Next to ``model.ubj``, ``model.json`` and ``dataset_spec.yaml``,
which stay where the server and ``riskloop serve --model-dir`` read them, it gets::

    MLmodel                      python_function flavor: loader module riskloop.model.pyfunc, signature
    requirements.txt             mlflow, numpy, pandas, xgboost pinned to the versions trained with
    python_env.yaml, conda.yaml  the same environment for MLflow's virtualenv / conda restorers
    code/riskloop/               the riskloop modules this loader imports (:data:`SHIPPED`)

riskloop is not on PyPI, and the pyfunc must load in an environment built only from the model's own
requirements: so the model ships riskloop's own code for the preparation (:func:`riskloop.model.load_model`,
which checks ``model.ubj`` against its sha256, and :func:`riskloop.model.matrix`) rather than a copy of it
that could drift from what the server runs. That code imports only numpy, pandas and xgboost, which keeps the
requirements to what scoring needs (no pydantic, yaml or pyarrow of the spec); the loader has no MLflow import.

The pyfunc's inputs are the model's inputs, named, in the types of the dataset spec's contract (categories as
strings, :func:`signature_inputs`). For a raw-column spec these are the raw columns a user brings. For a spec
whose features come from Feast (the fraud detector) they are the feature vector the model is fed: the
transaction's own fields plus the card and merchant aggregates and real-time features the server looks up
and computes for each request. The pyfunc scores a feature vector; it has no feature store, so an honest
signature cannot promise to score a bare transaction.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from riskloop.model.bundle import ModelBundle, load_model

if TYPE_CHECKING:  # types only: the shipped code must not need the spec's pydantic and yaml
    from riskloop.data.spec import DatasetSpec
    from riskloop.model.features import FeatureSpec

LOADER_MODULE = __name__
# paths under the riskloop package that the loader imports, and nothing else: each one shipped is code a model
# version carries for ever; the fresh-environment test (tests/integration/test_mlflow_model.py) fails when an
# import reaches outside them
SHIPPED = ("__init__.py", "errors.py", "hashing.py", "model", "features/__init__.py", "features/compute.py")
# the third-party packages the shipped code imports; MLflow adds itself (the loader's host)
REQUIREMENTS = ("numpy", "pandas", "xgboost")

InputType = Literal["string", "long", "double", "datetime"]


class RiskloopPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: the hash-checked bundle, scoring frames as the server does."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """The positive-class score of each row (the category codes and float32 matrix of :func:`matrix`)."""
        return self.bundle.predict_frame(model_input)


def _load_pyfunc(path: str) -> RiskloopPyfunc:
    """MLflow's entry point: ``path`` is the model directory itself (the flavor names no data subfolder)."""
    return RiskloopPyfunc(load_model(Path(path)))


def signature_inputs(spec: DatasetSpec, fspec: FeatureSpec) -> list[tuple[str, InputType]]:
    """The pyfunc's input columns in model order, each in its contract type.

    Categories are strings (their codes are the model's business). An integer column that may be missing is a
    double: MLflow cannot pass a missing value in an integer column, and the model reads numbers as float32
    anyway. A model input the contract does not describe (the Feast features) is a double.
    """
    from riskloop.data.spec import ColumnType

    types: dict[ColumnType, InputType] = {
        ColumnType.string: "string",
        ColumnType.category: "string",
        ColumnType.integer: "long",
        ColumnType.float: "double",
        ColumnType.timestamp: "datetime",
    }
    out: list[tuple[str, InputType]] = []
    for name in fspec.names:
        rule = spec.contract.columns.get(name)
        if name in fspec.categories:
            out.append((name, "string"))
        elif rule is None or (rule.type is ColumnType.integer and rule.nullable):
            out.append((name, "double"))
        else:
            out.append((name, types[rule.type]))
    return out


def pip_requirements() -> list[str]:
    """The shipped code's requirements, pinned to the installed versions (uv.lock's, in riskloop's images)."""
    return [f"{dist}=={version(dist)}" for dist in REQUIREMENTS]


def _stage_code(dest: Path) -> Path:
    """A copy of the :data:`SHIPPED` part of the riskloop package under ``dest/riskloop``."""
    package = Path(__file__).resolve().parents[1]
    root = dest / "riskloop"
    for rel in SHIPPED:
        src, target = package / rel, root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    return root


def save_mlflow_model(model_dir: Path, spec: DatasetSpec, fspec: FeatureSpec) -> None:
    """Make the model directory written by training an MLflow pyfunc model (see the module docstring)."""
    from riskloop.registry.mlflow_registry import write_pyfunc_model

    with tempfile.TemporaryDirectory(prefix="riskloop-pyfunc-code-") as tmp:
        write_pyfunc_model(
            model_dir,
            inputs=signature_inputs(spec, fspec),
            loader_module=LOADER_MODULE,
            code=_stage_code(Path(tmp)),
            pip_requirements=pip_requirements(),
        )
