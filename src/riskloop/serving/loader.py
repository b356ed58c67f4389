"""Find the model directory to serve and check it before anything loads it.

Locally a model is named by registry alias or version (downloaded from MLflow,
hash from the version's ``model_sha256`` tag); on the cluster KServe's storage
initializer has put it at ``/mnt/models`` and the expected hash comes in through
the InferenceService's env (``RISKLOOP_EXPECTED_MODEL_SHA256``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from riskloop.errors import ConfigError, ModelIntegrityError
from riskloop.model import ModelBundle, load_model
from riskloop.settings import ENV_EXPECTED_MODEL_SHA256, ENV_MODEL_VERSION, Settings

EXPECTED_SHA_ENV = ENV_EXPECTED_MODEL_SHA256
VERSION_ENV = ENV_MODEL_VERSION


@dataclass(frozen=True)
class ServedModel:
    bundle: ModelBundle
    version: str
    source: str


def resolve_model(
    s: Settings, *, model_name: str, alias: str | None = None, version: str | None = None, model_dir: Path | None = None
) -> ServedModel:
    """Load exactly one model: from a directory (cluster) or the registry (alias → immutable version)."""
    if sum(x is not None for x in (alias, version, model_dir)) != 1:
        raise ConfigError("name exactly one of --model-alias, --model-version, --model-dir")
    if model_dir is not None:
        expected = os.environ.get(EXPECTED_SHA_ENV)
        if not expected:
            raise ModelIntegrityError(
                f"{EXPECTED_SHA_ENV} is not set: refusing to serve an unchecked model",
                where=str(model_dir),
                fix="the InferenceService sets it; locally pass it in env",
            )
        bundle = load_model(model_dir, expected_sha256=expected)
        return ServedModel(bundle, os.environ.get(VERSION_ENV, "unknown"), str(model_dir))
    from riskloop.registry.mlflow_registry import download_model_dir, resolve_version

    info = resolve_version(s.tracking_uri, model_name, alias=alias, version=version)
    expected = info.tags["model_sha256"]
    target = s.root / "serving" / f"{model_name}-v{info.version}"
    path = download_model_dir(s.tracking_uri, info.run_id, target)
    return ServedModel(load_model(path, expected_sha256=expected), info.version, f"models:/{model_name}/{info.version}")
