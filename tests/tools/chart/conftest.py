"""Renders shared by the chart tests: each values set is rendered once per session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.chart.chart import (
    VALUES_FILES,
    ClusterSettings,
    load_values,
    pipeline_cluster_settings,
    render,
    render_objects,
)


@pytest.fixture(scope="session")
def rendered() -> dict[str, dict[str, str]]:
    """values set name -> template path -> rendered text."""
    return {name: render(load_values(files)) for name, files in VALUES_FILES.items()}


@pytest.fixture(scope="session")
def objects_by_set() -> dict[str, list[dict[str, Any]]]:
    return {name: render_objects(load_values(files)) for name, files in VALUES_FILES.items()}


@pytest.fixture(scope="session")
def default_objects(objects_by_set: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return objects_by_set["default"]


@pytest.fixture(scope="session")
def cluster_settings() -> ClusterSettings:
    """What pipelines/cluster.py maps into every step: ConfigMap keys and Secret keys."""
    return pipeline_cluster_settings()
