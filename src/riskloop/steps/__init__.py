"""The library functions behind each pipeline step, one per KFP component, same names.

One module per pipeline (``training``, ``features``, ``scoring``), and ``reproduce``, which reruns the training
steps; they run identically in tests, under kfp.local and in the cluster. The names below are what components,
the CLI and tests import.
"""

from riskloop.steps.features import build_features, materialize
from riskloop.steps.reproduce import ReproduceReport, reproduce_version
from riskloop.steps.scoring import batch_score
from riskloop.steps.training import (
    RECIPE_TAG,
    RUN_STATUS_OK,
    build_training_set,
    evaluate,
    gate,
    ingest,
    model_card,
    record_run_outcome,
    register,
    train,
    validate,
)

__all__ = [
    "RECIPE_TAG",
    "RUN_STATUS_OK",
    "ReproduceReport",
    "batch_score",
    "build_features",
    "build_training_set",
    "evaluate",
    "gate",
    "ingest",
    "materialize",
    "model_card",
    "record_run_outcome",
    "register",
    "reproduce_version",
    "train",
    "validate",
]
