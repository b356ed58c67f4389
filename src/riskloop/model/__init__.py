"""The model artifact: the model directory (:class:`ModelBundle`, :func:`load_model`, :func:`save_model`), what
the model is fed (:class:`FeatureSpec`, :func:`feature_spec`, :func:`matrix`) and the training set's columns.

Serving, monitoring, delivery and audit read models through this package; training writes them through it.
"""

from riskloop.model.bundle import META_FILE, MODEL_FILE, ModelBundle, load_model, save_model
from riskloop.model.features import FeatureSpec, feature_spec, matrix
from riskloop.model.frame import LABEL, LABELLED_SPLITS, SPLIT, UNLABELLED

__all__ = [
    "LABEL",
    "LABELLED_SPLITS",
    "META_FILE",
    "MODEL_FILE",
    "SPLIT",
    "UNLABELLED",
    "FeatureSpec",
    "ModelBundle",
    "feature_spec",
    "load_model",
    "matrix",
    "save_model",
]
