"""The library functions behind each pipeline step, one per KFP component, same names.

One module per pipeline (``training``, ``features``, ``scoring``); they run identically in tests,
under kfp.local and in the cluster. The names below are what components, the CLI and tests import.
"""

from riskloop.steps.features import build_features, materialize
from riskloop.steps.scoring import batch_score
from riskloop.steps.training import (
    RECIPE_TAG,
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

__all__ = ["RECIPE_TAG", "batch_score", "build_features", "build_training_set", "evaluate", "gate", "ingest",
           "materialize", "model_card", "record_run_outcome", "register", "train", "validate"]
