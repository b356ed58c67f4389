"""Where a registered model's bytes are, for readers that cannot ask MLflow (KServe's storage initializer)."""

from __future__ import annotations

import pytest

from riskloop.errors import ConfigError
from riskloop.registry.mlflow_registry import object_store_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mlflow-artifacts:/1/abc/artifacts", "s3://b/mlflow/1/abc/artifacts"),
        ("mlflow-artifacts://mlflow.riskloop:5000/1/abc/artifacts", "s3://b/mlflow/1/abc/artifacts"),
        ("s3://elsewhere/1/abc/artifacts", "s3://elsewhere/1/abc/artifacts"),
    ],
)
def test_proxied_uris_map_onto_the_destination(uri: str, expected: str) -> None:
    assert object_store_uri(uri, "s3://b/mlflow/") == expected


def test_a_proxied_uri_without_a_destination_says_which_setting_is_missing() -> None:
    with pytest.raises(ConfigError, match="RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION") as err:
        object_store_uri("mlflow-artifacts:/1/abc/artifacts", None)
    assert "s3.artifactsDestination" in str(err.value.fix)
