"""Custom resources, offline: which ones the chart renders, and the kserve SDK's typed round trip of the
InferenceService riskloop's delivery code builds.

Their CRD schemas are checked by a real API server, not here: tests/cluster/test_custom_resources.py creates
every one (dry run, strict field validation) on the local node against CRDs made at run time from their
upstream Go modules (the InferenceService's generated from KServe's API types).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.chart.chart import inference_service_manifest
from tests.unit.kserve_schema import validate_manifest

CUSTOM_GROUPS = ("monitoring.coreos.com/", "serving.kserve.io/", "argoproj.io/")


def test_the_chart_renders_only_the_custom_resources_the_cluster_suite_validates(
    objects_by_set: dict[str, list[dict[str, Any]]],
) -> None:
    kinds = {
        (o["apiVersion"], o["kind"])
        for objs in objects_by_set.values()
        for o in objs
        if o["apiVersion"].startswith(CUSTOM_GROUPS)
    }
    assert kinds == {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
    # the operator's kinds only where asked for: a cluster without the operator would refuse the whole release
    assert any(o["kind"] == "ServiceMonitor" for o in objects_by_set["kind-bundled"])
    assert not any(o["apiVersion"].startswith(CUSTOM_GROUPS) for o in objects_by_set["default"])


@pytest.mark.parametrize("canary", [None, 10])
def test_inference_service_from_delivery_code_round_trips_the_sdk(canary: int | None) -> None:
    validate_manifest(inference_service_manifest(canary_percent=canary))


@pytest.mark.parametrize("mistake", ["unknown predictor field", "mistyped replicas", "unknown container field"])
def test_inference_service_mistakes_are_refused_by_the_sdk(mistake: str) -> None:
    manifest = inference_service_manifest()
    predictor = manifest["spec"]["predictor"]
    if mistake == "unknown predictor field":
        predictor["bogus"] = True
    elif mistake == "mistyped replicas":
        predictor["minReplicas"] = "1"
    else:
        predictor["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(Exception, match=r"bogus|minReplicas|imagePullPolicyy|min_replicas"):
        validate_manifest(manifest)
