"""The shared storage root on a cluster: every riskloop pod gets it, and the predictor may reach the object store."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.chart.chart import (
    NAMESPACE,
    VALUES_FILES,
    load_chart,
    load_values,
    one,
    render_objects,
)


def _values(values_set: str) -> dict[str, Any]:
    return load_chart().merge_values(load_values(VALUES_FILES[values_set]))


def test_configmap_carries_the_storage_root(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """In every namespace a riskloop process runs in (steps, predictor, platform), for every values set."""
    for values_set, objs in objects_by_set.items():
        values = _values(values_set)
        namespaces = {NAMESPACE, values["namespaces"]["pipelines"]["name"], values["namespaces"]["models"]["name"]}
        for ns in namespaces:
            data = one(objs, "ConfigMap", "riskloop-config", ns)["data"]
            assert data["RISKLOOP_STORAGE__URI"] == values["s3"]["storageUri"], f"{values_set}: {ns}"
    assert _values("env-cloud")["s3"]["storageUri"] != _values("default")["s3"]["storageUri"]
    objs = render_objects({"s3": {"storageUri": "gs://team-bucket/riskloop/state"}})
    assert one(objs, "ConfigMap", "riskloop-config", NAMESPACE)["data"]["RISKLOOP_STORAGE__URI"] == (
        "gs://team-bucket/riskloop/state")


def _s3_rule(values: dict[str, Any]) -> dict[str, Any]:
    egress = values["networkPolicy"]["s3Egress"]
    return {"to": [{"ipBlock": {"cidr": egress["cidr"]}}],
            "ports": [{"protocol": "TCP", "port": p} for p in egress["ports"]]}


@pytest.mark.parametrize("values_set", ["default", "env-kind", "env-cloud", "external-services"])
def test_predictor_may_reach_the_object_store(values_set: str,
                                              objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    values = _values(values_set)
    objs = objects_by_set[values_set]
    models = values["namespaces"]["models"]["name"]
    predictor = one(objs, "NetworkPolicy", "riskloop-predictor", models)
    assert "Egress" in predictor["spec"]["policyTypes"]
    assert _s3_rule(values) in predictor["spec"]["egress"]
    # the model namespace denies everything else by default, and allows DNS (the object store's host name)
    one(objs, "NetworkPolicy", "riskloop-default-deny", models)
    dns = one(objs, "NetworkPolicy", "riskloop-dns", models)["spec"]
    assert dns["podSelector"] == {} and {"protocol": "UDP", "port": 53} in dns["egress"][0]["ports"]


def test_s3_rule_check_catches_a_missing_allow(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """Test the test: with the object store on another port, the rendered rule is not the one looked for."""
    values = _values("env-kind")
    predictor = one(objects_by_set["env-kind"], "NetworkPolicy", "riskloop-predictor",
                    values["namespaces"]["models"]["name"])
    moved = {**values, "networkPolicy": {**values["networkPolicy"], "s3Egress": {"cidr": "10.244.0.0/16",
                                                                                 "ports": [9443]}}}
    assert _s3_rule(moved) not in predictor["spec"]["egress"]
