"""What a first `make deploy` would have stopped at inside the chart (issue 15), checked offline.

MLflow's server flags against the installed MLflow (its optional exporter, its Host-header check), the Prometheus
operator's kinds only where the cluster serves them, DNS egress that also reaches NodeLocal DNSCache, the
predictor's pull secrets, and the kind object store's pod port.
"""

from __future__ import annotations

import importlib
import shlex
from typing import Any

import pytest

from tests.tools.chart.chart import VALUES_FILES, load_values, render, render_objects

NAMESPACE = "riskloop"
MLFLOW = "riskloop-mlflow"


def _mlflow_command(objs: list[dict[str, Any]]) -> list[str]:
    deployment = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == MLFLOW)
    script = deployment["spec"]["template"]["spec"]["containers"][0]["args"][0]
    line = script[script.index("exec mlflow server") :].replace("\\\n", " ").splitlines()[0]
    return shlex.split(line.replace('"$(cat /var/run/secrets/riskloop/db/mlflow-uri)"', "DB"))


def _flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.mark.parametrize("values_set", sorted(VALUES_FILES))
def test_mlflow_prometheus_exporter_is_in_the_image(
    values_set: str, objects_by_set: dict[str, list[dict[str, Any]]]
) -> None:
    """--expose-prometheus makes MLflow import prometheus_flask_exporter (mlflow[extras]); without it in uv.lock the
    server dies at start, never gets Ready, and `helm --wait` times out."""
    command = _mlflow_command(objects_by_set[values_set])
    if _flag(command, "--expose-prometheus") is not None:
        importlib.import_module("mlflow.server.prometheus_exporter")  # what mlflow.server does with the flag


@pytest.mark.parametrize("values_set", sorted(VALUES_FILES))
def test_mlflow_admits_the_hosts_that_call_it(values_set: str, objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """MLflow checks the Host header against --allowed-hosts (its own matcher, run here): pipeline steps and the
    predictor call the Service's names, Prometheus scrapes by pod IP; anything else stays refused."""
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = (_flag(_mlflow_command(objects_by_set[values_set]), "--allowed-hosts") or "").split(",")
    callers = [
        f"{MLFLOW}.{NAMESPACE}.svc.cluster.local:5000",
        f"{MLFLOW}.{NAMESPACE}.svc.cluster.local",
        f"{MLFLOW}.{NAMESPACE}:5000",
        f"{MLFLOW}:5000",
        "localhost:5000",
        "127.0.0.1:5000",
        "10.244.1.17:5000",
        "172.20.3.4:5000",
        "192.168.49.2:5000",
    ]
    refused = [c for c in callers if not is_allowed_host_header(allowed, c)]
    assert not refused, f"{values_set}: MLflow answers 403 to {refused}"
    for outsider in ("evil.example.com", f"{MLFLOW}.{NAMESPACE}.evil.example.com", "8.8.8.8:5000", ""):
        assert not is_allowed_host_header(allowed, outsider), outsider


def test_operator_kinds_render_only_where_the_cluster_serves_them() -> None:
    """Offline (no monitoring.coreos.com/v1 among the capabilities, as on a cluster without the Prometheus operator)
    the ServiceMonitors and the PrometheusRule are left out and NOTES says so; requireOperatorApi=false renders them."""
    operator_kinds = {"ServiceMonitor", "PrometheusRule"}
    rendered = render({})
    kinds = {o["kind"] for o in render_objects({})}
    assert not kinds & operator_kinds, "helm install would fail without the Prometheus operator's CRDs"
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "were NOT rendered" in notes and "monitoring.coreos.com/v1" in notes
    forced = {o["kind"] for o in render_objects({"monitoring": {"requireOperatorApi": False}})}
    assert operator_kinds <= forced
    off = render({"monitoring": {"serviceMonitor": False, "prometheusRule": False}})
    assert "were NOT rendered" not in next(t for p, t in off.items() if p.endswith("NOTES.txt"))


def test_dns_egress_also_reaches_node_local_dns_cache() -> None:
    """NodeLocal DNSCache (GKE, EKS add-on) answers on 169.254.20.10 from the host network: a namespace selector
    never matches it, so without an ipBlock every lookup of a pod in a default-deny namespace times out."""
    for values, expected in (
        ({}, [{"ipBlock": {"cidr": "169.254.20.10/32"}}]),
        ({"networkPolicy": {"nodeLocalDnsIp": ""}}, []),
    ):
        policies = [
            o
            for o in render_objects(values)
            if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "riskloop-dns"
        ]
        assert len(policies) == 2  # release and model namespace
        for policy in policies:
            (rule,) = policy["spec"]["egress"]
            assert rule["to"][1:] == expected
            assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_the_predictor_pulls_with_the_image_pull_secrets() -> None:
    """A private registry: the predictor's pods (and the storage initializer in them) pull with the secrets listed
    on its service account; the chart's own pods list them in their pod spec."""
    objs = render_objects({"imagePullSecrets": ["registry-creds"]})
    sa = next(o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "riskloop-predictor")
    assert sa["imagePullSecrets"] == [{"name": "registry-creds"}]
    mlflow = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == MLFLOW)
    assert mlflow["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]
    plain = next(
        o for o in render_objects({}) if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "riskloop-predictor"
    )
    assert "imagePullSecrets" not in plain


def test_kind_object_store_egress_is_seaweedfs_pod_port() -> None:
    """KFP >= 2.16 ships SeaweedFS, whose S3 API listens on pod port 8333; a NetworkPolicy matches the pod's port,
    not the Service's, so the kind values must allow 8333 (the old 9000 was MinIO's)."""
    values = load_values(VALUES_FILES["env-kind"])
    assert values["networkPolicy"]["s3Egress"]["ports"] == [8333]
    assert "storageInitializer" not in values.get("predictor", {})
