"""Custom resources on the node's API server, against CRDs made at run time (tests/cluster/crds.py).

The chart's ServiceMonitors and PrometheusRule (every values set), the InferenceService riskloop's delivery
code builds, and the Argo CD Application under manifests/ are created with a server-side dry run and strict
field validation, as ``kubectl apply`` sends them: the API server's own schema validation, structural pruning
and CEL rules decide, nothing re-implemented. Each family also has mistakes the server must refuse, naming
the field. The generated InferenceService CRD is compared with the one KServe ships in the same module.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.cluster import crds
from tests.cluster.crds import KSERVE_API_PACKAGE, Crds, module_dir
from tests.tools.chart.chart import ROOT, VALUES_FILES, inference_service_manifest, load_values, render_objects

pytestmark = pytest.mark.timeout(900, func_only=True)
# fixtures of crds.py: the session's CRDs, a namespace of this module
installed_crds, scratch_namespace = crds.installed_crds, crds.scratch_namespace

KINDS = {  # (apiVersion, kind) -> plural
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservices",
    ("argoproj.io/v1alpha1", "Application"): "applications",
}


@pytest.fixture(scope="module")
def api(installed_crds: Crds) -> Iterator[k8s.CustomObjectsApi]:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=configuration)
    with k8s.ApiClient(configuration) as api_client:
        yield k8s.CustomObjectsApi(api_client)


def refusal(api: k8s.CustomObjectsApi, obj: dict[str, Any], namespace: str) -> str | None:
    """What the API server says to creating ``obj`` in ``namespace`` (dry run, strict fields); None: accepted."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    group, version = obj["apiVersion"].split("/")
    try:
        api.create_namespaced_custom_object(
            group,
            version,
            namespace,
            KINDS[(obj["apiVersion"], obj["kind"])],
            obj,
            dry_run="All",
            field_validation="Strict",
        )
    except ApiException as exc:
        return f"{exc.status}: {exc.body}"
    return None


@pytest.fixture(scope="module")
def objects_by_set() -> dict[str, list[dict[str, Any]]]:
    return {name: render_objects(load_values(files)) for name, files in VALUES_FILES.items()}


def test_chart_custom_resources(
    api: k8s.CustomObjectsApi, scratch_namespace: str, objects_by_set: dict[str, list[dict[str, Any]]]
) -> None:
    seen, problems = set(), []
    for values_set, objs in objects_by_set.items():
        for o in objs:
            if (o["apiVersion"], o["kind"]) in KINDS:
                seen.add(o["kind"])
                why = refusal(api, o, scratch_namespace)
                if why:
                    problems.append(f"{values_set}: {o['kind']}/{o['metadata']['name']}: {why}")
    assert not problems, "\n".join(problems)
    assert seen == {"ServiceMonitor", "PrometheusRule"}


def _first(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in objs if o["kind"] == kind))


MISTAKES: dict[str, tuple[str, Callable[[dict[str, Any]], Any], str]] = {  # kind, the change, what the server says
    "ServiceMonitor endpoint typo": (
        "ServiceMonitor",
        lambda o: o["spec"]["endpoints"][0].update(intervall="30s"),
        'unknown field \\"spec.endpoints[0].intervall\\"',
    ),
    "ServiceMonitor bad scheme": (
        "ServiceMonitor",
        lambda o: o["spec"]["endpoints"][0].update(scheme="ftp"),
        'spec.endpoints[0].scheme: Unsupported value: \\"ftp\\"',
    ),
    "ServiceMonitor no selector": (
        "ServiceMonitor",
        lambda o: o["spec"].pop("selector"),
        "spec.selector: Required value",
    ),
    "PrometheusRule bad for": (
        "PrometheusRule",
        lambda o: o["spec"]["groups"][0]["rules"][0].update({"for": "5x"}),
        "spec.groups[0].rules[0].for: Invalid value",
    ),
    "PrometheusRule unknown field": (
        "PrometheusRule",
        lambda o: o["spec"]["groups"][0].update(rulez=[]),
        'unknown field \\"spec.groups[0].rulez\\"',
    ),
    "metadata typo": ("ServiceMonitor", lambda o: o["metadata"].update(label={}), 'unknown field \\"metadata.label\\"'),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_server_refuses_mistakes(
    mistake: str, api: k8s.CustomObjectsApi, scratch_namespace: str, objects_by_set: dict[str, list[dict[str, Any]]]
) -> None:
    kind, change, said = MISTAKES[mistake]
    obj = _first(objects_by_set["kind-bundled"], kind)  # renders the operator's kinds (requireOperatorApi: false)
    assert refusal(api, obj, scratch_namespace) is None
    change(obj)
    why = refusal(api, obj, scratch_namespace)
    assert why is not None and said in why, f"{mistake}: {why}"


@pytest.mark.parametrize("canary", [None, 10])
def test_inference_service_from_delivery_code(
    canary: int | None, api: k8s.CustomObjectsApi, scratch_namespace: str
) -> None:
    assert refusal(api, inference_service_manifest(canary_percent=canary), scratch_namespace) is None


INFERENCE_SERVICE_MISTAKES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "unknown predictor field": (lambda p: p.update(bogus=True), 'unknown field \\"spec.predictor.bogus\\"'),
    "mistyped replicas": (lambda p: p.update(minReplicas="1"), "spec.predictor.minReplicas: Invalid value"),
    "unknown container field": (
        lambda p: p["containers"][0].update(imagePullPolicyy="Always"),
        'unknown field \\"spec.predictor.containers[0].imagePullPolicyy\\"',
    ),
    # (a share over 100 passes the schema: KServe's webhook bounds it, and riskloop's own check before any call)
    "canary share not a number": (
        lambda p: p.update(canaryTrafficPercent="ten"),
        "spec.predictor.canaryTrafficPercent: Invalid value",
    ),
}


@pytest.mark.parametrize("mistake", sorted(INFERENCE_SERVICE_MISTAKES))
def test_inference_service_mistakes_are_refused(
    mistake: str, api: k8s.CustomObjectsApi, scratch_namespace: str
) -> None:
    change, said = INFERENCE_SERVICE_MISTAKES[mistake]
    manifest = inference_service_manifest()
    change(manifest["spec"]["predictor"])
    why = refusal(api, manifest, scratch_namespace)
    assert why is not None and said in why, f"{mistake}: {why}"


def _applications() -> list[dict[str, Any]]:
    return [
        d
        for p in sorted((ROOT / "manifests").rglob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if isinstance(d, dict) and d.get("kind") == "Application"
    ]


def test_argocd_applications_under_manifests(api: k8s.CustomObjectsApi, scratch_namespace: str) -> None:
    apps = _applications()
    assert apps, "manifests/argocd/riskloop.yaml holds the GitOps Application"
    problems = [f"{a['metadata']['name']}: {why}" for a in apps if (why := refusal(api, a, scratch_namespace))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("mistake", "said"),
    [
        ("valuesFiles", 'unknown field \\"spec.source.helm.valuesFiles\\"'),
        ("no project", "spec.project: Required value"),
        ("automatic", 'unknown field \\"spec.syncPolicy.automatic\\"'),
    ],
)
def test_application_mistakes_are_refused(
    mistake: str, said: str, api: k8s.CustomObjectsApi, scratch_namespace: str
) -> None:
    app = copy.deepcopy(next(a for a in _applications() if a["metadata"]["name"] == "riskloop"))
    if mistake == "valuesFiles":
        app["spec"]["source"]["helm"]["valuesFiles"] = app["spec"]["source"]["helm"].pop("valueFiles")
    elif mistake == "no project":
        del app["spec"]["project"]
    else:
        app["spec"]["syncPolicy"]["automatic"] = True
    why = refusal(api, app, scratch_namespace)
    assert why is not None and said in why, f"{mistake}: {why}"


def _differences(ours: Any, theirs: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs)):
            if key not in theirs:
                yield "only ours", f"{path}.{key}"
            elif key not in ours:
                yield "only KServe's", f"{path}.{key}"
            else:
                yield from _differences(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            yield from _differences(a, b, f"{path}[{i}]")
    elif ours != theirs:
        yield "differs", path


def test_generated_inference_service_crd_is_the_one_kserve_ships(installed_crds: Crds) -> None:
    """Generated + KServe's Makefile edits == config/crd/full/ of the same KServe module, except core fields newer
    k8s.io types add (the node's v0.36 beside KServe's v0.34). Guards the post-processing in crds.py."""
    ours = next(d for d in installed_crds.documents if d["metadata"]["name"] == "inferenceservices.serving.kserve.io")
    source = installed_crds.sources["inferenceservices.serving.kserve.io"]
    version = source.split(f"{KSERVE_API_PACKAGE}@")[1].split()[0]
    shipped = Path(
        module_dir("github.com/kserve/kserve", version),
        "config",
        "crd",
        "full",
        "serving.kserve.io_inferenceservices.yaml",
    )
    theirs = yaml.safe_load(shipped.read_text())
    differences = list(_differences(ours["spec"], theirs["spec"]))
    assert differences, "no difference at all: the generation did not use k8s.io v0.36's core types"
    assert all(kind == "only ours" for kind, _ in differences), differences
    # the core fields new since k8s.io v0.34, e.g. a projected volume's podCertificate.userAnnotations (1.35)
    assert all(".properties." in path for _, path in differences), differences
