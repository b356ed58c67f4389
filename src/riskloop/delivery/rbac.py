"""The RBAC the delivery step needs, and nothing more: a Role and RoleBinding in the model namespace.

KFP runs every step as a pod in its own namespace under its pipeline runner's
service account (standalone KFP: ``pipeline-runner`` in ``kubeflow``; multi-user
Kubeflow: ``default-editor`` in the user's profile namespace). ``delivery/kube.py``
reads, creates and merge-patches InferenceServices in the model namespace, so
the Role there grants exactly ``get``, ``list``, ``watch``, ``create`` and
``patch`` on ``serving.kserve.io`` ``inferenceservices``: no ``delete``, no
``update`` (every change is a merge patch), no status subresource (the status
comes with ``get``), no other resource (no secrets), no wildcard. The
RoleBinding grants it to the runner's service account across namespaces, which
a RoleBinding may do: its subject names its own namespace.

Pure: the manifests are dicts for the chart's template to mirror and for
``kubectl apply`` (``to_yaml``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from riskloop.errors import ConfigError

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
ROLE_NAME = "riskloop-delivery"
KFP_SERVICE_ACCOUNT = "pipeline-runner"  # standalone KFP's default for every run
API_GROUP = "serving.kserve.io"
RESOURCE = "inferenceservices"
VERBS = ("create", "get", "list", "patch", "watch")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def delivery_rbac(
    model_namespace: str, pipeline_namespace: str, service_account: str = KFP_SERVICE_ACCOUNT, *, name: str = ROLE_NAME
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Role, RoleBinding) letting ``pipeline_namespace``'s ``service_account`` deliver models to ``model_namespace``.

    Both objects live in ``model_namespace`` and are called ``name``. Raises
    ``ConfigError`` for a value that cannot be a namespace or object name.
    """
    _check(_DNS_LABEL, 63, model_namespace, "model_namespace", "a namespace (DNS-1123 label)", "riskloop")
    _check(_DNS_LABEL, 63, pipeline_namespace, "pipeline_namespace", "a namespace (DNS-1123 label)", "kubeflow")
    _check(
        _DNS_SUBDOMAIN,
        253,
        service_account,
        "service_account",
        "a service account name (DNS-1123 subdomain)",
        KFP_SERVICE_ACCOUNT,
    )
    _check(_DNS_SUBDOMAIN, 253, name, "name", "a Role name (DNS-1123 subdomain)", ROLE_NAME)
    role = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": _metadata(name, model_namespace),
        "rules": [{"apiGroups": [API_GROUP], "resources": [RESOURCE], "verbs": list(VERBS)}],
    }
    binding = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": _metadata(name, model_namespace),
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": pipeline_namespace}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
    }
    return role, binding


def to_yaml(manifests: Iterable[Mapping[str, Any]]) -> str:
    """The manifests as one multi-document YAML stream, keys in the order built, ready for ``kubectl apply -f``."""
    return yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False)


def _metadata(name: str, namespace: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "riskloop", "app.kubernetes.io/component": "delivery"},
    }


def _check(pattern: re.Pattern[str], max_length: int, value: str, field: str, what: str, example: str) -> None:
    if not isinstance(value, str) or not pattern.match(value) or len(value) > max_length:
        raise ConfigError(
            f"{field} {value!r} is not {what}",
            where=field,
            fix=f"use lowercase letters, digits and '-', at most {max_length} characters, e.g. {example!r}",
        )
