"""RBAC on the real API server: each service account may do exactly what riskloop grants it, nothing more.

For KFP's ``pipeline-runner`` (created by the ``chart`` fixture, as KFP's manifests would) and every
ServiceAccount the chart creates, in every namespace the release uses: what ``kubectl auth can-i --list``
allows it, minus what any service account with no binding of its own is allowed (discovery, self-reviews),
equals the rules of the Roles bound to it in the installed release, and for ``pipeline-runner`` those are
``riskloop.delivery.rbac.delivery_rbac``'s. One request beyond them is refused by the API server.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from riskloop.delivery.rbac import delivery_rbac
from tests.cluster.conftest import (
    MODELS_NAMESPACE,
    PIPELINE_RUNNER,
    PIPELINES_NAMESPACE,
    PLATFORM_NAMESPACE,
    kubectl,
)

pytestmark = pytest.mark.timeout(300, func_only=True)
NAMESPACES = (PLATFORM_NAMESPACE, MODELS_NAMESPACE, PIPELINES_NAMESPACE)
# a service account name nothing binds: what it may do, every service account may do
UNBOUND = "riskloop-rbac-unbound"

Permission = tuple[str, str, str, str]  # (resource.group, non-resource URL, resource name, verb)


def user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def can_i_list(as_user: str, namespace: str) -> set[Permission]:
    """``kubectl auth can-i --list`` as a set of single permissions (one verb each)."""
    out = kubectl("auth", "can-i", "--list", f"--as={as_user}", "-n", namespace).stdout.splitlines()
    header = out[0]
    starts = [header.index(col) for col in ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")]
    found: set[Permission] = set()
    for line in out[1:]:
        if not line.strip():
            continue
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        resource, urls, names, verbs = cells

        def items(cell: str) -> list[str]:
            return [x for x in cell.strip("[]").split() if x] or [""]

        for url in items(urls):
            for name in items(names):
                for verb in items(verbs):
                    found.add((resource, url, name, verb))
    return found


def granted(as_user: str, namespace: str) -> set[Permission]:
    return can_i_list(as_user, namespace) - can_i_list(user(namespace, UNBOUND), namespace)


def rule_permissions(rules: list[dict[str, Any]]) -> set[Permission]:
    found: set[Permission] = set()
    for rule in rules:
        for group in rule.get("apiGroups", [""]):
            for resource in rule.get("resources", []):
                for name in rule.get("resourceNames") or [""]:
                    for verb in rule["verbs"]:
                        found.add((f"{resource}.{group}" if group else resource, "", name, verb))
    return found


def release_rbac(chart: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        o
        for o in yaml.safe_load_all(chart["manifest"])
        if o and o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount")
    ]


def expected(objs: list[dict[str, Any]], namespace: str, sa_namespace: str, sa: str) -> set[Permission]:
    """What the release's Roles and bindings grant ``sa`` in ``namespace``."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    found: set[Permission] = set()
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if b["kind"] == "RoleBinding" and b["metadata"]["namespace"] != namespace:
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == sa and s.get("namespace") == sa_namespace
            for s in b["subjects"]
        ):
            continue
        ref = b["roleRef"]
        key = (ref["kind"], b["metadata"]["namespace"] if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{b['metadata']['name']} binds {key}, which the release does not create"
        found |= rule_permissions(roles[key]["rules"])
    return found


def accounts(chart: dict[str, Any]) -> list[tuple[str, str]]:
    created = [
        (o["metadata"].get("namespace", PLATFORM_NAMESPACE), o["metadata"]["name"])
        for o in release_rbac(chart)
        if o["kind"] == "ServiceAccount"
    ]
    assert created, "the release creates no ServiceAccount"
    return [(PIPELINES_NAMESPACE, PIPELINE_RUNNER), *created]


def test_the_release_grants_pipeline_runner_exactly_the_delivery_role(chart: dict[str, Any]) -> None:
    role, binding = delivery_rbac(MODELS_NAMESPACE, PIPELINES_NAMESPACE)
    assert expected(release_rbac(chart), MODELS_NAMESPACE, PIPELINES_NAMESPACE, PIPELINE_RUNNER) == rule_permissions(
        role["rules"]
    )
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": PIPELINE_RUNNER, "namespace": PIPELINES_NAMESPACE}
    ]


def test_every_account_may_do_exactly_what_the_release_grants(chart: dict[str, Any]) -> None:
    objs = release_rbac(chart)
    mismatches = {}
    for sa_namespace, sa in accounts(chart):
        for namespace in NAMESPACES:
            got = granted(user(sa_namespace, sa), namespace)
            want = expected(objs, namespace, sa_namespace, sa)
            if got != want:
                mismatches[f"{sa_namespace}/{sa} in {namespace}"] = {
                    "extra": sorted(got - want),
                    "missing": sorted(want - got),
                }
    assert not mismatches, mismatches
    # and the comparison can see a grant: pipeline-runner's delivery rights are there
    assert ("inferenceservices.serving.kserve.io", "", "", "patch") in granted(
        user(PIPELINES_NAMESPACE, PIPELINE_RUNNER), MODELS_NAMESPACE
    )


def test_one_request_beyond_the_grant_is_refused(chart: dict[str, Any]) -> None:
    runner = user(PIPELINES_NAMESPACE, PIPELINE_RUNNER)
    # delete is not granted (every change is a merge patch) ...
    r = kubectl(
        "auth",
        "can-i",
        "delete",
        "inferenceservices.serving.kserve.io",
        "-n",
        MODELS_NAMESPACE,
        f"--as={runner}",
        check=False,
    )
    assert r.stdout.strip() == "no", r.stdout + r.stderr
    # ... and a real request for the model namespace's Secrets is refused by the API server
    r = kubectl("get", "secrets", "-n", MODELS_NAMESPACE, f"--as={runner}", check=False)
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr
    for sa_namespace, sa in accounts(chart)[1:]:
        r = kubectl("get", "pods", "-n", sa_namespace, f"--as={user(sa_namespace, sa)}", check=False)
        assert r.returncode != 0 and "Forbidden" in r.stderr, (sa, r.stderr)
