"""Custom resources against their vendored CRD schemas (crds/README.md): the chart's ServiceMonitors and
PrometheusRule, the InferenceService riskloop's delivery code builds, and ArgoCD Applications under manifests/."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from riskloop.delivery import inference_service as isvc
from tests.unit.chart.chart import KUBE_VERSION, ROOT

CRDS = Path(__file__).parent / "crds"
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.yaml",
    ("argoproj.io/v1alpha1", "Application"): "application.yaml",
}
_DEFS = "https://kubernetes.io/api/_definitions.json"


def closed(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation: unknown fields refused."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
        out["pattern"] = "(?i)^" + out["pattern"][5:]  # Go's RE2 takes a flag after ^, Python only before it
    open_ = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_:
        out["additionalProperties"] = False
    return out


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = closed(yaml.safe_load((CRDS / SCHEMAS[(api_version, kind)]).read_text()))
    schema["properties"]["metadata"] = {"$ref": f"{_DEFS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    version = KUBE_VERSION.rsplit(".", 1)[0]
    defs = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", KUBE_VERSION)
    registry = Resource.from_contents(defs) @ Registry()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def errors(obj: dict[str, Any]) -> list[str]:
    v = validator(obj["apiVersion"], obj["kind"])
    return [f"{obj['kind']}/{obj['metadata'].get('name')}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: "
            f"{e.message}" for e in v.iter_errors(obj)]


def test_chart_custom_resources(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    seen = set()
    problems = []
    for values_set, objs in objects_by_set.items():
        for o in objs:
            if (o["apiVersion"], o["kind"]) in SCHEMAS:
                seen.add(o["kind"])
                problems += [f"{values_set}: {e}" for e in errors(o)]
    assert not problems, "\n".join(problems)
    assert seen == {"ServiceMonitor", "PrometheusRule"}


def _inference_service(**changes: Any) -> dict[str, Any]:
    spec = isvc.ServiceSpec(name="fraud-detector", namespace="riskloop-models", image="r/riskloop:0.1.0-abc1234",
                            storage_uri="s3://riskloop/models/3", model_sha256="0" * 64, model_version="3", **changes)
    return isvc.to_manifest(isvc.build_inference_service(spec))


@pytest.mark.parametrize("canary", [None, 10])
def test_inference_service_from_delivery_code(canary: int | None) -> None:
    manifest = _inference_service(canary_traffic_percent=canary)
    assert not errors(manifest)
    isvc.validate_manifest(manifest)  # and the kserve SDK's typed round trip


def test_argocd_applications_under_manifests() -> None:
    apps = [d for p in sorted((ROOT / "manifests").rglob("*.yaml")) if (ROOT / "manifests").is_dir()
            for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict) and d.get("kind") == "Application"]
    if not apps:
        pytest.skip("manifests/ holds no ArgoCD Application yet (another change adds it)")
    problems = [e for a in apps for e in errors(a)]
    assert not problems, "\n".join(problems)


def _first(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in objs if o["kind"] == kind))


MISTAKES = {
    "ServiceMonitor endpoint typo": ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(intervall="30s")),
    "ServiceMonitor bad scheme": ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(scheme="ftp")),
    "ServiceMonitor no selector": ("ServiceMonitor", lambda o: o["spec"].pop("selector")),
    "PrometheusRule bad for": ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update({"for": "5x"})),
    "PrometheusRule unknown field": ("PrometheusRule", lambda o: o["spec"]["groups"][0].update(rulez=[])),
    "metadata typo": ("ServiceMonitor", lambda o: o["metadata"].update(label={})),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_schemas_refuse_mistakes(mistake: str, objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    kind, change = MISTAKES[mistake]
    obj = _first(objects_by_set["kind-bundled"], kind)  # renders the operator's kinds (requireOperatorApi: false)
    assert not errors(obj)
    change(obj)
    assert errors(obj), mistake


@pytest.mark.parametrize("mistake", ["unknown predictor field", "mistyped replicas", "unknown container field"])
def test_inference_service_mistakes_are_refused(mistake: str) -> None:
    manifest = _inference_service()
    predictor = manifest["spec"]["predictor"]
    if mistake == "unknown predictor field":
        predictor["bogus"] = True
    elif mistake == "mistyped replicas":
        predictor["minReplicas"] = "1"
    else:
        predictor["containers"][0]["imagePullPolicyy"] = "Always"
    assert errors(manifest), mistake
    with pytest.raises(Exception, match=r"bogus|minReplicas|imagePullPolicyy|min_replicas"):
        isvc.validate_manifest(manifest)


def test_application_schema_refuses_mistakes() -> None:
    app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
           "metadata": {"name": "riskloop", "namespace": "argocd"},
           "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc",
                                                          "namespace": "riskloop"},
                    "source": {"repoURL": "https://github.com/riskloop/riskloop", "path": "helm/riskloop",
                               "targetRevision": "main", "helm": {"valueFiles": ["envs/cloud.yaml"]}},
                    "syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}}
    assert not errors(app)
    typo = copy.deepcopy(app)
    typo["spec"]["source"]["helm"]["valuesFiles"] = typo["spec"]["source"]["helm"].pop("valueFiles")
    no_project = copy.deepcopy(app)
    del no_project["spec"]["project"]
    assert errors(typo) and errors(no_project)
