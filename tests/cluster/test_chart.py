"""helm/riskloop on the real node, installed with envs/node.yaml (tests/cluster/conftest.py ``chart``).

Every pod of the release is Ready under Pod Security `restricted`; the chart's own `helm test` passes
(MLflow and Feast health, Redis PING); a pod reaches MLflow, PostgreSQL and Redis by their Service names
(cluster DNS and kube-proxy, not pod addresses). The bridge network enforces no NetworkPolicy: the chart's
policies are applied here, and nothing about them is claimed as tested.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.conftest import (
    MODELS_NAMESPACE,
    PIPELINES_NAMESPACE,
    PLATFORM_NAMESPACE,
    RELEASE,
    Node,
    kubectl,
    kubectl_json,
)

pytestmark = pytest.mark.timeout(600, func_only=True)
# what the release runs with envs/node.yaml: one pod each, all long-running
COMPONENTS = {"mlflow", "postgresql", "redis", "feast"}


def release_pods() -> list[dict[str, Any]]:
    pods = []
    for ns in (PLATFORM_NAMESPACE, MODELS_NAMESPACE, PIPELINES_NAMESPACE):
        pods += kubectl_json("-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    return pods


def not_ready(pod: dict[str, Any]) -> str | None:
    status = pod["status"]
    if status.get("phase") == "Succeeded":  # a Job's pod that finished its work
        return None
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if status.get("phase") == "Running" and conditions.get("Ready") == "True":
        return None
    waiting = [f"{c['name']}: {c.get('state')} last={c.get('lastState')}" for c in status.get("containerStatuses", [])]
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']} {status.get('phase')} {waiting}"


def test_every_pod_of_the_release_is_ready(chart: dict[str, Any]) -> None:
    pods = release_pods()
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert components >= COMPONENTS, components
    problems = [msg for p in pods if (msg := not_ready(p))]
    assert not problems, problems
    # and none was restarted on the way (an OOM kill or a failing probe would show here)
    restarts = {
        p["metadata"]["name"]: sum(c.get("restartCount", 0) for c in p["status"]["containerStatuses"]) for p in pods
    }
    assert not any(restarts.values()), restarts


def test_namespaces_enforce_restricted(chart: dict[str, Any]) -> None:
    for ns in (PLATFORM_NAMESPACE, MODELS_NAMESPACE, PIPELINES_NAMESPACE):
        labels = kubectl_json("get", "namespace", ns)["metadata"]["labels"]
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", (ns, labels)
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": MODELS_NAMESPACE},
        "spec": {
            "containers": [{"name": "c", "image": "riskloop.local/pause:any", "securityContext": {"privileged": True}}]
        },
    }
    r = kubectl("apply", "-f", "-", check=False, stdin=json.dumps(privileged))
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr, r.stderr


def test_helm_test_passes(node: Node, chart: dict[str, Any]) -> None:
    import helm_python as helm

    # The chart's test is a Job that exits non-zero if any check fails; helm waits for it and raises then.
    # (logs=True is not usable: helm looks for a pod named after the Job.)
    with helm.Config(kubeconfig_path=str(node.kubeconfig), namespace=PLATFORM_NAMESPACE) as cfg:
        try:
            cfg.test(RELEASE, timeout=300)
        except helm.HelmError as exc:
            jobs = kubectl(
                "-n", PLATFORM_NAMESPACE, "logs", "-l", "app.kubernetes.io/component=test", "--tail=50", check=False
            )
            pytest.fail(f"helm test {RELEASE} failed: {exc}\n{jobs.stdout}{jobs.stderr}", pytrace=False)


def test_a_pod_reaches_the_platform_services_by_name(chart: dict[str, Any]) -> None:
    """From the MLflow pod (the riskloop image): each Service name resolves to its ClusterIP and its port
    accepts a connection there."""
    services = {"mlflow": 5000, "postgresql": 5432, "redis": 6379}
    cluster_ips = {
        name: kubectl_json("-n", PLATFORM_NAMESPACE, "get", "service", f"{RELEASE}-{name}")["spec"]["clusterIP"]
        for name in services
    }
    script = "\n".join(
        [
            "import json, socket",
            "out = {}",
            f"for name, port in {json.dumps({f'{RELEASE}-{n}': p for n, p in services.items()})}.items():",
            "    address = socket.gethostbyname(name)",
            "    socket.create_connection((name, port), timeout=10).close()",
            "    out[name] = address",
            "print(json.dumps(out))",
        ]
    )
    r = kubectl("-n", PLATFORM_NAMESPACE, "exec", f"deploy/{RELEASE}-mlflow", "--", "python", "-c", script, timeout=120)
    resolved = json.loads(r.stdout.strip().splitlines()[-1])
    assert resolved == {f"{RELEASE}-{n}": ip for n, ip in cluster_ips.items()}
