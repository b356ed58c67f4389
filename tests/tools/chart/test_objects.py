"""Every rendered core object is valid Kubernetes for the pinned version, and every pod meets Pod Security
`restricted` plus the chart's own rules (read-only root, bounded resources, probes, pinned images)."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.tools.chart.chart import KUBE_VERSION, pod_specs

CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
_ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_LONG_RUNNING = ("Deployment/", "StatefulSet/", "DaemonSet/")


def validate(o: dict[str, Any]) -> None:
    """kubernetes_validate.validate, with each schema compiled once (it re-reads them per call: 10x slower)."""
    _validator(o["apiVersion"], o["kind"]).validate(o)


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    from referencing import Registry, Resource

    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    version = KUBE_VERSION.rsplit(".", 1)[0]
    folder = f"kubernetes-json-schema/v{version}.0-local-strict"
    try:
        schema = kubernetes_validate.utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", KUBE_VERSION)
    except FileNotFoundError:
        raise kubernetes_validate.utils.SchemaNotFoundError(
            version=version, kind=kind, api_version=api_version
        ) from None
    defs = kubernetes_validate.utils.schema_contents(f"{folder}/_definitions.json", KUBE_VERSION)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_fast_validation_agrees_with_kubernetes_validate(default_objects: list[dict[str, Any]]) -> None:
    for o in default_objects[:5]:
        if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS:
            kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
            validate(o)


def test_core_objects_validate(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    problems = []
    for values_set, objs in objects_by_set.items():
        for o in objs:
            if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS:
                continue  # checked against their CRDs by the node's API server: tests/cluster/test_custom_resources.py
            try:
                validate(o)
            except jsonschema.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"{values_set}: {o['kind']}/{o['metadata']['name']}: {path}: {e.message}")
    assert not problems, "\n".join(problems)


def test_only_known_custom_kinds(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """A kind kubernetes-validate has no schema for would pass with a warning: every such kind is listed here."""
    for objs in objects_by_set.values():
        for o in objs:
            if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS:
                continue
            try:
                _validator(o["apiVersion"], o["kind"])
            except kubernetes_validate.utils.SchemaNotFoundError:
                pytest.fail(f"no schema for {o['apiVersion']} {o['kind']}: validate it like the CRDs")


def test_validation_refuses_a_mistake(default_objects: list[dict[str, Any]]) -> None:
    """The check above can fail: an unknown field and a wrong type are refused."""
    deployment = next(o for o in default_objects if o["kind"] == "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    for bad in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)


def restricted_violations(where: str, spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from Pod Security `restricted` (v1.36), plus this chart's stricter rules."""
    out = []
    pod_sc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if spec.get(host) and host != "hostUsers":
            out.append(f"{where}: {host}")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            out.append(f"{where}: volume {v['name']} of type {kinds - _ALLOWED_VOLUMES}")
    if spec.get("automountServiceAccountToken") is not False:
        out.append(f"{where}: mounts a service account token (none of the chart's pods calls the API)")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        at = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{at}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{at}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{at}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{at}: adds capabilities {caps['add']}")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            out.append(f"{at}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{at}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{at}: seccompProfile is {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{at}: hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{at}: root filesystem is writable")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(res.get(kind) or {})
            if missing:
                out.append(f"{at}: no {kind} for {sorted(missing)}")
        if where.startswith(_LONG_RUNNING) and not (c.get("readinessProbe") and c.get("livenessProbe")):
            out.append(f"{at}: missing a readiness or liveness probe")
        image = c["image"]
        if not re.search(r"@sha256:[0-9a-f]{64}$", image):
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                out.append(f"{at}: image {image} is not pinned")
    return out


def test_every_pod_is_restricted(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    problems = [
        p
        for values_set, objs in objects_by_set.items()
        for where, spec in pod_specs(objs)
        for p in restricted_violations(f"{values_set}: {where}", spec)
    ]
    assert not problems, "\n".join(problems)
    assert sum(1 for _ in pod_specs(objects_by_set["default"])) >= 6


@pytest.mark.parametrize(
    "mistake", ["privileged", "escalation", "root", "no-seccomp", "hostpath", "unbounded", "latest"]
)
def test_restricted_check_catches_mistakes(mistake: str, default_objects: list[dict[str, Any]]) -> None:
    """Test the test: each deliberate mistake in a rendered pod is reported."""
    where, spec = next((w, copy.deepcopy(s)) for w, s in pod_specs(default_objects) if w.startswith("Deployment/"))
    c = spec["containers"][0]
    if mistake == "privileged":
        c["securityContext"]["privileged"] = True
    elif mistake == "escalation":
        del c["securityContext"]["allowPrivilegeEscalation"]
    elif mistake == "root":
        c["securityContext"]["runAsUser"] = 0
    elif mistake == "no-seccomp":
        del c["securityContext"]["seccompProfile"]
        del spec["securityContext"]["seccompProfile"]
    elif mistake == "hostpath":
        spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    elif mistake == "unbounded":
        del c["resources"]["limits"]
    elif mistake == "latest":
        c["image"] = "ghcr.io/riskloop/riskloop:latest"
    assert restricted_violations(where, spec), mistake


def test_created_namespaces_enforce_restricted(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    namespaces = [o for objs in objects_by_set.values() for o in objs if o["kind"] == "Namespace"]
    assert namespaces
    for ns in namespaces:
        labels = ns["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", ns["metadata"]["name"]
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == f"v{KUBE_VERSION.rsplit('.', 1)[0]}"
