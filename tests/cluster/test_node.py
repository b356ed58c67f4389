"""The node itself (scripts/node.sh): Ready on the pinned version; pods run under Pod Security `restricted`
and a privileged one is refused; a Service is reached by its name from another pod (CoreDNS + kube-proxy);
pods reach nothing beyond the node's own networks, and the cluster DNS forwards nothing outside."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest

from tests.cluster.conftest import Node, kubectl, kubectl_json, restricted_pod_spec, versions

pytestmark = pytest.mark.timeout(300, func_only=True)


def apply(*objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def pod(namespace: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }


def wait_ready(namespace: str, *pods: str, timeout: int = 120) -> None:
    r = kubectl(
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        *[f"pod/{p}" for p in pods],
        f"--timeout={timeout}s",
        check=False,
        timeout=timeout + 30,
    )
    if r.returncode:
        described = kubectl("-n", namespace, "describe", "pods", check=False).stdout[-3000:]
        raise AssertionError(f"pods {pods} not Ready in {timeout} s: {r.stderr}\n{described}")


def exec_in(namespace: str, pod_name: str, script: str) -> subprocess.CompletedProcess[str]:
    return kubectl("-n", namespace, "exec", pod_name, "--", "/bin/busybox", "sh", "-c", script, check=False, timeout=60)


def test_node_is_ready_on_the_pinned_version(node: Node) -> None:
    want = versions()["KUBERNETES_VERSION"]
    assert kubectl_json("version")["serverVersion"]["gitVersion"] == want
    status = kubectl_json("get", "node", node.name)["status"]
    assert status["nodeInfo"]["kubeletVersion"] == want
    assert status["nodeInfo"]["kubeProxyVersion"] in (want, "")  # deprecated field, empty since 1.31
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True", status["conditions"]
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_restricted_refuses_a_privileged_pod(restricted_namespace: str, busybox_image: str) -> None:
    spec = restricted_pod_spec(busybox_image, ["/bin/busybox", "sleep", "60"])
    spec["containers"][0]["securityContext"] = {"privileged": True}
    r = kubectl("apply", "-f", "-", check=False, stdin=json.dumps(pod(restricted_namespace, "privileged", spec)))
    assert r.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in r.stderr, r.stderr
    assert "privileged" in r.stderr
    assert kubectl("-n", restricted_namespace, "get", "pod", "privileged", check=False).returncode != 0


def test_a_service_is_reached_by_name_from_another_pod(restricted_namespace: str, busybox_image: str) -> None:
    ns = restricted_namespace
    serve = (
        "mkdir -p /tmp/www && echo hello-from-$(hostname) > /tmp/www/index.html && "
        "exec /bin/busybox httpd -f -p 8080 -h /tmp/www"
    )
    web = restricted_pod_spec(
        busybox_image,
        ["/bin/busybox", "sh", "-c", serve],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )
    web["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    apply(
        pod(ns, "web", web, {"app": "web"}),
        pod(ns, "client", restricted_pod_spec(busybox_image, ["/bin/busybox", "sleep", "3600"])),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    wait_ready(ns, "web", "client")
    cluster_ip = kubectl_json("-n", ns, "get", "service", "web")["spec"]["clusterIP"]
    pod_ip = kubectl_json("-n", ns, "get", "pod", "web")["status"]["podIP"]
    assert cluster_ip != pod_ip

    # cluster DNS: the short name through the pod's search path, and the full name
    # (busybox's nslookup asks every search domain and exits 1 if any has no answer: read its output)
    looked_up = exec_in(ns, "client", "nslookup web").stdout
    assert re.search(rf"Name:\s*web\.{ns}\.svc\.cluster\.local\s+Address:\s*{re.escape(cluster_ip)}\b", looked_up), (
        looked_up
    )

    # kube-proxy: the Service's port 80 reaches the pod's 8080, by name
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 {} 80"
    deadline = time.monotonic() + 30  # kube-proxy syncs its rules within a second or so of the endpoint
    while True:
        got = exec_in(ns, "client", request.format("web"))
        if "hello-from-web" in got.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "200 OK" in got.stdout and "hello-from-web" in got.stdout, got.stdout + got.stderr
    # and a pod reaches itself through its own Service (hairpin)
    hairpin = exec_in(ns, "web", request.format(f"web.{ns}.svc.cluster.local"))
    assert "hello-from-web" in hairpin.stdout, hairpin.stdout + hairpin.stderr


def test_pods_reach_nothing_beyond_the_node(node: Node, restricted_namespace: str, busybox_image: str) -> None:
    ns = restricted_namespace
    apply(pod(ns, "client", restricted_pod_spec(busybox_image, ["/bin/busybox", "sleep", "3600"])))
    wait_ready(ns, "client")
    routes = exec_in(ns, "client", "ip route").stdout
    assert not re.search(r"^default", routes, re.M), routes
    destinations = {line.split()[0] for line in routes.splitlines() if line.strip()}
    assert destinations == {"10.244.0.0/24", "10.96.0.0/24"}, routes
    gateway = subprocess.run(
        ["ip", "route", "show", "default"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    outside = gateway[2] if len(gateway) > 2 else "192.0.2.1"
    reached = exec_in(ns, "client", f"/bin/busybox nc -w 3 {outside} 80 </dev/null")
    assert reached.returncode != 0
    assert "Network is unreachable" in reached.stdout + reached.stderr, reached.stdout + reached.stderr
    # names outside the cluster are not forwarded anywhere
    external = exec_in(ns, "client", f"nslookup example.com {node.dns_ip}")
    assert external.returncode != 0 and "Address: " not in external.stdout.split("example.com")[-1], external.stdout
