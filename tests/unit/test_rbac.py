"""The delivery step's RBAC: exactly what delivery/kube.py needs on InferenceServices, nothing else.

Regenerate the golden file after an intended change with
``RISKLOOP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_rbac.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from riskloop.delivery.rbac import delivery_rbac, to_yaml
from riskloop.errors import ConfigError

GOLDEN_DIR = Path(__file__).parent / "golden"
VERBS = {"get", "list", "watch", "create", "patch"}


def _strings(value: Any) -> list[str]:
    """Every key and string value in ``value``, at any depth."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def test_golden() -> None:
    text = to_yaml(delivery_rbac("riskloop", "kubeflow", "pipeline-runner"))
    path = GOLDEN_DIR / "delivery_rbac.yaml"
    if os.environ.get("RISKLOOP_UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text)
        pytest.skip(f"regenerated {path.name}; review its diff before committing")
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing; create it with RISKLOOP_UPDATE_GOLDEN=1")
    assert text == path.read_text(), (
        f"output differs from {path.name}; if the change is intended, rerun with RISKLOOP_UPDATE_GOLDEN=1 "
        "and review the diff"
    )


def test_the_role_grants_exactly_the_delivery_verbs_on_inferenceservices() -> None:
    role, _ = delivery_rbac("models", "kubeflow", "pipeline-runner")
    assert (role["apiVersion"], role["kind"]) == ("rbac.authorization.k8s.io/v1", "Role")
    assert role["metadata"]["namespace"] == "models"
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["serving.kserve.io"]
    assert rule["resources"] == ["inferenceservices"]
    assert set(rule["verbs"]) == VERBS and len(rule["verbs"]) == len(VERBS)
    assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames, no nonResourceURLs"


def test_nothing_more_is_granted() -> None:
    manifests = delivery_rbac("models", "kubeflow", "pipeline-runner")
    strings = _strings(list(manifests))
    assert not any("*" in s for s in strings), "no wildcard anywhere"
    for forbidden in (
        "delete",
        "deletecollection",
        "update",
        "escalate",
        "bind",
        "impersonate",
        "secrets",
        "inferenceservices/status",
        "ClusterRole",
    ):
        assert forbidden not in strings
    assert "ClusterRoleBinding" not in {m["kind"] for m in manifests}


def test_the_binding_names_the_pipeline_runner_across_namespaces() -> None:
    role, binding = delivery_rbac("models", "kubeflow", "pipeline-runner")
    assert (binding["apiVersion"], binding["kind"]) == ("rbac.authorization.k8s.io/v1", "RoleBinding")
    assert binding["metadata"]["namespace"] == "models", "a RoleBinding grants in its own namespace"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["metadata"] is not role["metadata"], "the two manifests share no mutable parts"


def test_defaults_are_kfp_standalone_and_names_are_configurable() -> None:
    role, binding = delivery_rbac("riskloop", "team-a")
    assert binding["subjects"][0]["name"] == "pipeline-runner"
    role, binding = delivery_rbac("riskloop", "team-a", "default-editor", name="riskloop-delivery-team-a")
    assert (
        role["metadata"]["name"]
        == binding["metadata"]["name"]
        == binding["roleRef"]["name"]
        == "riskloop-delivery-team-a"
    )
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "default-editor", "namespace": "team-a"}


def test_to_yaml_is_two_documents_for_kubectl() -> None:
    manifests = delivery_rbac("riskloop", "kubeflow", "pipeline-runner")
    text = to_yaml(manifests)
    assert list(yaml.safe_load_all(text)) == list(manifests)
    assert text.count("\n---\n") == 1
    assert text.startswith("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Risk Loop", "kubeflow", "pipeline-runner"), "model_namespace 'Risk Loop' is not a namespace"),
        (("riskloop", "", "pipeline-runner"), "pipeline_namespace '' is not a namespace"),
        (("riskloop", "k" * 64, "pipeline-runner"), "pipeline_namespace 'k+' is not a namespace"),
        (("riskloop", "kubeflow", "*"), r"service_account '\*' is not a service account name"),
        (("riskloop", "kubeflow", "Pipeline_Runner"), "service_account 'Pipeline_Runner' is not a service account"),
    ],
)
def test_bad_names_are_config_errors(args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        delivery_rbac(*args)
    assert "how to fix" in str(info.value)
