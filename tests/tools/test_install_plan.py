"""The install plan of scripts/deploy.sh, checked in order: what a first `make deploy` would meet (issue 15).

The plan is what the script itself prints and renders under ``DRY_RUN=1``, for each target (kind; a cloud cluster
with every prerequisite installed, as with ``PREREQS=1``). Each step is an apply of one of our kustomizations, a
wait, a helm release or a Secret. The objects of a step are

- rendered (local kustomizations, the riskloop chart with the target's values, the riskloop-s3 Secrets): checked
  object by object;
- remote (upstream release files, fetched at apply time): described below by what the pinned version's own
  sources say they hold (namespaces, CRDs, custom resources, admission webhooks, Services and ports), read from
  the upstream files named with each entry.

Checked: no duplicate object ids within one apply (and no two upstream files known to overlap in one
kustomization); every namespaced object's namespace exists before (or is created in) its step; every custom
resource's CRD comes from an earlier step followed by a wait for Established; objects an admission webhook
validates are applied only after a wait for that webhook to admit them; the Services and ports the values and
the script reference exist, and NetworkPolicies name the pod ports behind them; the namespaces the
NetworkPolicies admit exist.

Unchecked here (needs a cluster; the issue-16 node or kind will show it): that the remote files at the pinned tags
still hold what is described (a reading of upstream sources, not a download); webhook and controller timing
beyond "wait until it admits"; image pulls; whether upstream pods pass the namespaces' Pod Security levels;
KServe's and Knative's runtime behaviour (status.url, tag resolution, storage initializer injection); capacity.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build/deploy"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
BUILTIN_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


@dataclass(frozen=True)
class Upstream:
    """What one upstream release file holds, as the pinned version's sources say."""

    source: str
    namespaces: frozenset[str] = frozenset()  # Namespace objects it creates
    crds: frozenset[str] = frozenset()  # "<plural>.<group>" it defines
    uses_namespaces: frozenset[str] = frozenset()  # where its namespaced objects live
    custom_resources: frozenset[str] = frozenset()  # "<Kind>.<group>" objects it holds
    webhook_groups: frozenset[str] = frozenset()  # API groups its admission webhooks validate
    services: dict[str, dict[int, int]] = field(default_factory=dict)  # "<name>.<namespace>" -> port: pod port
    contains: tuple[str, ...] = ()  # other upstream files whose objects it repeats


KNATIVE_CRDS = frozenset(
    {
        "services.serving.knative.dev",
        "configurations.serving.knative.dev",
        "revisions.serving.knative.dev",
        "routes.serving.knative.dev",
        "domainmappings.serving.knative.dev",
        "images.caching.internal.knative.dev",
        "certificates.networking.internal.knative.dev",
        "ingresses.networking.internal.knative.dev",
        "serverlessservices.networking.internal.knative.dev",
        "clusterdomainclaims.networking.internal.knative.dev",
        "metrics.autoscaling.internal.knative.dev",
        "podautoscalers.autoscaling.internal.knative.dev",
    }
)
KSERVE_CRDS = frozenset(
    {
        "inferenceservices.serving.kserve.io",
        "servingruntimes.serving.kserve.io",
        "clusterservingruntimes.serving.kserve.io",
        "clusterstoragecontainers.serving.kserve.io",
        "trainedmodels.serving.kserve.io",
        "inferencegraphs.serving.kserve.io",
    }
)
CERT_MANAGER_CRDS = frozenset(
    {
        "certificates.cert-manager.io",
        "issuers.cert-manager.io",
        "clusterissuers.cert-manager.io",
        "certificaterequests.cert-manager.io",
        "orders.acme.cert-manager.io",
        "challenges.acme.cert-manager.io",
    }
)

UPSTREAM: dict[str, Upstream] = {
    "manifests/cert-manager": Upstream(
        "cert-manager v1.17.2 release cert-manager.yaml (the static install: namespace, CRDs, webhook)",
        namespaces=frozenset({"cert-manager"}),
        crds=CERT_MANAGER_CRDS,
        uses_namespaces=frozenset({"cert-manager", "kube-system"}),
        webhook_groups=frozenset({"cert-manager.io", "acme.cert-manager.io"}),
    ),
    "manifests/knative/crds": Upstream(
        "knative/serving knative-v1.18.0 serving-crds.yaml: config/core/300-resources + 300-imagecache",
        crds=KNATIVE_CRDS,
    ),
    "manifests/knative/core": Upstream(
        "knative/serving knative-v1.18.0 serving-core.yaml: all of config/core/ (hack/generate-yamls.sh)",
        namespaces=frozenset({"knative-serving"}),
        crds=KNATIVE_CRDS,
        uses_namespaces=frozenset({"knative-serving"}),
        custom_resources=frozenset({"Image.caching.internal.knative.dev"}),
        webhook_groups=frozenset(
            {
                "serving.knative.dev",
                "autoscaling.internal.knative.dev",
                "networking.internal.knative.dev",
                "configmaps.knative-serving",
            }
        ),
        contains=("manifests/knative/crds",),
    ),
    "manifests/knative/kourier": Upstream(
        "knative-extensions/net-kourier knative-v1.18.0 kourier.yaml",
        namespaces=frozenset({"kourier-system"}),
        uses_namespaces=frozenset({"kourier-system", "knative-serving"}),
        custom_resources=frozenset({"configmaps.knative-serving"}),  # config-kourier, checked by Knative's webhook
        services={"kourier.kourier-system": {80: 8080, 443: 8443}},
    ),
    "manifests/kserve/crds": Upstream(
        "kserve/kserve v0.21.0 kserve-crds.yaml (hack/release/generate-install.sh: config/crd/full)", crds=KSERVE_CRDS
    ),
    "manifests/kserve": Upstream(
        "kserve/kserve v0.21.0 kserve.yaml (generate-install.sh: config/overlays/all without Namespace objects)",
        uses_namespaces=frozenset({"kserve"}),
        custom_resources=frozenset(
            {"Certificate.cert-manager.io", "Issuer.cert-manager.io", "ClusterStorageContainer.serving.kserve.io"}
        ),
        webhook_groups=frozenset({"serving.kserve.io"}),
    ),
    "manifests/kserve/runtimes": Upstream(
        "kserve/kserve v0.21.0 kserve-cluster-resources.yaml (config/clusterresources: runtimes, storagecontainers)",
        custom_resources=frozenset(
            {"ClusterServingRuntime.serving.kserve.io", "ClusterStorageContainer.serving.kserve.io"}
        ),
    ),
    "manifests/kfp/cluster-scoped": Upstream(
        "kubeflow/pipelines 2.17.3 manifests/kustomize/cluster-scoped-resources (namespace.yaml, Argo's, KFP's CRDs)",
        namespaces=frozenset({"kubeflow"}),
        crds=frozenset(
            {
                "scheduledworkflows.kubeflow.org",
                "viewers.kubeflow.org",
                "workflows.argoproj.io",
                "applications.app.k8s.io",
            }
        ),
    ),
    "manifests/kfp": Upstream(
        "kubeflow/pipelines 2.17.3 manifests/kustomize/env/platform-agnostic (base/installs/generic, Argo, "
        "third-party/seaweedfs/base, mysql); base/pipeline/ml-pipeline-apiserver-service.yaml; "
        "third-party/seaweedfs/base/seaweedfs/seaweedfs-service.yaml and seaweedfs-networkpolicy.yaml",
        uses_namespaces=frozenset({"kubeflow"}),
        services={
            "ml-pipeline.kubeflow": {8888: 8888, 8887: 8887},
            "ml-pipeline-ui.kubeflow": {80: 3000},
            "seaweedfs.kubeflow": {8333: 8333, 9000: 8333, 8111: 8111},
        },
    ),
}
# helm releases of prerequisites: the charts' own templates (prometheus-operator creates prometheus-operated)
HELM_RELEASES: dict[str, Upstream] = {
    "kube-prometheus-stack": Upstream(
        "prometheus-community kube-prometheus-stack 72.6.2 (CRDs in charts/crds; the operator's prometheus-operated)",
        crds=frozenset(
            {
                "servicemonitors.monitoring.coreos.com",
                "prometheusrules.monitoring.coreos.com",
                "prometheuses.monitoring.coreos.com",
                "podmonitors.monitoring.coreos.com",
            }
        ),
        uses_namespaces=frozenset({"monitoring", "kube-system"}),
        services={
            "prometheus-operated.monitoring": {9090: 9090},
            "kube-prometheus-stack-grafana.monitoring": {80: 3000},
        },
    ),
    "prometheus-pushgateway": Upstream(
        "prometheus-community prometheus-pushgateway 3.4.1 (Service named after the release)",
        uses_namespaces=frozenset({"monitoring"}),
        services={"prometheus-pushgateway.monitoring": {9091: 9091}},
    ),
}
# what an apply needs admitted by whom: the webhook that validates it, as the API groups above name them
WEBHOOK_OWNER = {
    "cert-manager.io": "manifests/cert-manager",
    "acme.cert-manager.io": "manifests/cert-manager",
    "serving.knative.dev": "manifests/knative/core",
    "configmaps.knative-serving": "manifests/knative/core",
    "serving.kserve.io": "manifests/kserve",
}


@dataclass
class Step:
    kind: str  # apply | crds-established | deployments-available | admitted | helm | secret | patch
    target: str = ""
    namespace: str = ""
    objects: list[dict[str, Any]] = field(default_factory=list)
    upstream: Upstream | None = None


def _run_dry(cluster: str | None) -> list[Step]:
    shutil.rmtree(OUT, ignore_errors=True)
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "RISKLOOP_GIT_COMMIT": COMMIT,
        "KUBECTL": str(REPO / ".venv/bin/kubectl"),
        "PATH": "/usr/bin:/bin",
    }  # no helm binary: the chart renders through the SDK binding
    env.pop("CLUSTER", None)
    env.pop("RISKLOOP_IMAGE_REPOSITORY", None)
    if cluster:
        env["CLUSTER"] = cluster
    r = subprocess.run(
        ["bash", "scripts/deploy.sh", "up"], cwd=REPO, capture_output=True, text=True, env=env, timeout=180
    )
    assert r.returncode == 0, r.stderr + r.stdout
    return parse(r.stdout)


def _load(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        return [json.loads(path.read_text())]
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def parse(printed: str) -> list[Step]:
    """The ordered steps of a dry run's output (with the renders it wrote under build/deploy/)."""
    steps: list[Step] = []
    lines = printed.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("+ "):
            continue
        words = line[2:].split()
        tool = Path(words[0]).name
        if tool == "kubectl" and words[1] == "apply" and "-k" in words:
            target = words[words.index("-k") + 1]
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if m := re.search(r"-> build/deploy/(\S+)$", following):
                steps.append(Step("apply", target, objects=_load(OUT / m.group(1))))
            else:
                assert "is remote" in following, following
                assert target in UPSTREAM, f"{target} is remote but not described in UPSTREAM: describe what it holds"
                steps.append(Step("apply", target, upstream=UPSTREAM[target]))
        elif tool == "kubectl" and words[1] == "wait" and "crd" in words and "--for=condition=Established" in words:
            steps.append(Step("crds-established"))
        elif tool == "kubectl" and words[1] == "wait" and words[2] == "deployment":
            steps.append(Step("deployments-available", namespace=words[words.index("-n") + 1]))
        elif words[0] == "until":
            if "-k" in words:
                steps.append(Step("admitted", words[words.index("-k") + 1].rstrip(";")))
            else:
                assert words[1] == "cert_manager_admits;", line
                steps.append(Step("admitted", "manifests/cert-manager"))
        elif tool == "helm" and words[1:3] == ["upgrade", "--install"]:
            name, ns = words[3], words[words.index("-n") + 1]
            if name in HELM_RELEASES:
                steps.append(Step("helm", name, ns, upstream=HELM_RELEASES[name]))
            else:
                steps.append(Step("helm", name, ns, objects=_load(OUT / "helm-riskloop.yaml")))
        elif tool == "kubectl" and words[1:4] == ["create", "secret", "generic"]:
            ns = words[words.index("-n") + 1]
            steps.append(Step("secret", words[4], ns, objects=_load(OUT / f"secret-riskloop-s3-{ns}.json")))
        elif tool == "kubectl" and words[1] == "patch":
            steps.append(Step("patch", words[3], words[words.index("-n") + 1]))
    return steps


@pytest.fixture(scope="module")
def plans() -> dict[str, list[Step]]:
    return {"kind": _run_dry("kind"), "cloud": _run_dry(None)}


def _namespaces_created(step: Step) -> set[str]:
    if step.upstream:
        return set(step.upstream.namespaces)
    return {o["metadata"]["name"] for o in step.objects if o["kind"] == "Namespace"}


def _crds(step: Step) -> set[str]:
    if step.upstream:
        return set(step.upstream.crds)
    return {o["metadata"]["name"] for o in step.objects if o["kind"] == "CustomResourceDefinition"}


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _custom_resources(step: Step) -> set[str]:
    if step.upstream:
        return {cr for cr in step.upstream.custom_resources if not cr.startswith("configmaps.")}
    return {
        f"{o['kind']}.{_group(o['apiVersion'])}"
        for o in step.objects
        if "." in _group(o["apiVersion"]) and not _group(o["apiVersion"]).endswith(".k8s.io")
    }


def _plural(kind_group: str) -> str:
    kind, _, group = kind_group.partition(".")
    return f"{kind.lower()}{'es' if kind.lower().endswith('s') else 's'}.{group}"


def _webhook_groups_needed(step: Step) -> set[str]:
    if step.upstream:
        needed = {cr.partition(".")[2] for cr in step.upstream.custom_resources}
        return needed | {cr for cr in step.upstream.custom_resources if cr.startswith("configmaps.")}
    groups = {_group(o["apiVersion"]) for o in step.objects}
    if any(o["kind"] == "ConfigMap" and o["metadata"].get("namespace") == "knative-serving" for o in step.objects):
        groups.add("configmaps.knative-serving")
    return groups


def _applies(plan: list[Step]) -> list[tuple[int, Step]]:
    return [(i, s) for i, s in enumerate(plan) if s.kind in ("apply", "helm", "secret")]


@pytest.mark.parametrize("target", ["kind", "cloud"])
def test_no_duplicate_object_ids_within_an_apply(target: str, plans: dict[str, list[Step]]) -> None:
    for _, step in _applies(plans[target]):
        ids = Counter(
            (o["apiVersion"].split("/")[0], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
            for o in step.objects
        )
        assert not [k for k, n in ids.items() if n > 1], f"{step.target}: duplicate ids"
    # a kustomization never lists two upstream files where one repeats the other (serving-crds in serving-core)
    for k in sorted((REPO / "manifests").rglob("kustomization.yaml")):
        remote = [r for r in yaml.safe_load(k.read_text()).get("resources", []) if "://" in r]
        names = {d for d, u in UPSTREAM.items() if any(_file_of(d) in r for r in remote)}
        for d in names:
            overlapping = set(UPSTREAM[d].contains) & names
            assert not overlapping, f"{k}: {d} repeats the objects of {overlapping}"


def _file_of(directory: str) -> str:
    remote = yaml.safe_load((REPO / directory / "kustomization.yaml").read_text())["resources"]
    return str(remote[0])


@pytest.mark.parametrize("target", ["kind", "cloud"])
def test_namespaces_exist_before_their_objects(target: str, plans: dict[str, list[Step]]) -> None:
    existing = set(BUILTIN_NAMESPACES)
    for _, step in _applies(plans[target]):
        existing |= _namespaces_created(step)  # kubectl and helm create Namespaces first within one apply
        if step.kind == "helm" and step.upstream is None:
            used = {o["metadata"]["namespace"] for o in step.objects if o["metadata"].get("namespace")}
            used.add(step.namespace)  # the release namespace (no --create-namespace)
        elif step.upstream:
            used = set(step.upstream.uses_namespaces) | ({step.namespace} if step.namespace else set())
        else:
            used = {o["metadata"]["namespace"] for o in step.objects if o["metadata"].get("namespace")}
        assert used <= existing, f"{target}: {step.kind} {step.target} needs namespaces {used - existing} first"


@pytest.mark.parametrize("target", ["kind", "cloud"])
def test_crds_are_established_before_their_custom_resources(target: str, plans: dict[str, list[Step]]) -> None:
    established: set[str] = set()
    pending: set[str] = set()
    for step in plans[target]:
        if step.kind == "crds-established":
            established |= pending
            pending = set()
            continue
        if step.kind not in ("apply", "helm"):
            continue
        needed = {_plural(cr) for cr in _custom_resources(step)}
        missing = needed - established
        assert not missing, (
            f"{target}: {step.target} applies custom resources of {missing} before their CRDs "
            "are Established (an earlier step with a wait)"
        )
        pending |= _crds(step)


@pytest.mark.parametrize("target", ["kind", "cloud"])
def test_objects_are_applied_only_once_their_webhooks_admit(target: str, plans: dict[str, list[Step]]) -> None:
    """A validating webhook with failurePolicy Fail refuses everything until it serves: wait until it admits."""
    installed: set[str] = set()  # prerequisites whose webhooks exist from now on
    admitted: set[str] = set()
    for step in plans[target]:
        if step.kind == "admitted":
            admitted.add(step.target)
        if step.kind not in ("apply", "helm"):
            continue
        owners = {WEBHOOK_OWNER[g] for g in _webhook_groups_needed(step) if g in WEBHOOK_OWNER} - {step.target}
        for owner in owners & installed:
            # a wait on the owner's own probe, or a server-side dry run of this step (it goes through the webhook)
            waited = owner in admitted or step.target in admitted
            assert waited, (
                f"{target}: {step.target} is validated by {owner}'s webhook, applied without waiting until it admits"
            )
        if step.upstream and step.upstream.webhook_groups:
            installed.add(step.target)


def _services(plan: list[Step]) -> dict[str, dict[int, int]]:
    found: dict[str, dict[int, int]] = {}
    for _, step in _applies(plan):
        if step.upstream:
            found.update(step.upstream.services)
        for o in step.objects:
            if o["kind"] == "Service":
                found[f"{o['metadata']['name']}.{o['metadata']['namespace']}"] = {
                    p["port"]: p.get("targetPort", p["port"]) for p in o["spec"]["ports"]
                }
    return found


def _service_port(url: str) -> tuple[str, int]:
    m = re.match(r"^https?://([a-z0-9-]+)\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?:(\d+)", url)
    assert m, f"{url} is not an in-cluster Service URL"
    return f"{m.group(1)}.{m.group(2)}", int(m.group(3))


def _chart_objects(plan: list[Step]) -> list[dict[str, Any]]:
    return next(s.objects for s in plan if s.kind == "helm" and s.upstream is None)


def _config(plan: list[Step]) -> dict[str, str]:
    cm = next(
        o
        for o in _chart_objects(plan)
        if o["kind"] == "ConfigMap"
        and o["metadata"]["name"] == "riskloop-config"
        and o["metadata"]["namespace"] == "riskloop"
    )
    return dict(cm["data"])


@pytest.mark.parametrize("target", ["kind", "cloud"])
def test_services_and_ports_the_values_reference_exist(target: str, plans: dict[str, list[Step]]) -> None:
    plan = plans[target]
    services = _services(plan)
    objs = _chart_objects(plan)
    references = [_config(plan)["RISKLOOP_DELIVERY__PROMETHEUS_URL"]]
    publish = next(o for o in objs if o["kind"] == "Job" and o["metadata"]["name"] == "riskloop-publish")
    args = publish["spec"]["template"]["spec"]["containers"][0]["args"]
    references.append(args[args.index("--kfp-host") + 1])
    schedules = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "riskloop-schedules")
    for s in yaml.safe_load(schedules["data"]["schedules.yaml"]):
        references += [v for v in s["parameters"].values() if isinstance(v, str) and v.startswith("http")]
    for step in plan:
        if step.kind == "secret":  # the object store the script points riskloop-s3 at (kind: KFP's)
            references.append(base64.b64decode(step.objects[0]["data"]["MLFLOW_S3_ENDPOINT_URL"]).decode())
    assert len(references) >= 3
    for url in references:
        service, port = _service_port(url)
        assert service in services, f"{target}: {url}: no Service {service} in the plan"
        assert port in services[service], f"{target}: {url}: Service {service} has no port {port}"
    # egress policies match pod ports: the publish Job's to the KFP API, the object store's on kind
    api = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "riskloop-publish")
    (rule,) = api["spec"]["egress"]
    kfp_service, kfp_port = _service_port(args[args.index("--kfp-host") + 1])
    assert rule["ports"][0]["port"] == services[kfp_service][kfp_port]
    if target == "kind":
        store, store_port = _service_port(KIND_OBJECT_STORE)
        pod_port = services[store][store_port]
        for o in objs:
            if o["kind"] == "NetworkPolicy":
                for r in o["spec"].get("egress", []):
                    if any("ipBlock" in t and t["ipBlock"]["cidr"] == "10.244.0.0/16" for t in r.get("to", [])):
                        assert [p["port"] for p in r["ports"]] == [pod_port], o["metadata"]["name"]


KIND_OBJECT_STORE = "http://seaweedfs.kubeflow.svc.cluster.local:8333"


@pytest.mark.parametrize("target", ["kind", "cloud"])
def test_policies_admit_namespaces_that_exist(target: str, plans: dict[str, list[Step]]) -> None:
    plan = plans[target]
    existing = set(BUILTIN_NAMESPACES)
    for _, step in _applies(plan):
        existing |= _namespaces_created(step)
    ingress = next(
        o
        for o in _chart_objects(plan)
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "riskloop-predictor"
    )["spec"]["ingress"][0]["from"]
    admitted = {f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in ingress}
    # the ingress gateway the plan installs (Kourier) and Knative's activator must be among them
    assert {"knative-serving", "kourier-system"} <= admitted & existing, admitted


def test_kind_admits_riskloop_into_kfps_object_store(plans: dict[str, list[Step]]) -> None:
    """KFP's SeaweedFS policy admits only kubeflow and kubeflow-profile namespaces: on kind the plan adds one that
    admits riskloop's namespaces by name, on the S3 pod port, after KFP and before the chart uses the store."""
    plan = plans["kind"]
    order = [s.target for s in plan if s.kind in ("apply", "helm")]
    assert order.index("manifests/kfp") < order.index("manifests/kfp/object-store-access") < order.index("riskloop")
    policy = next(s for s in plan if s.target == "manifests/kfp/object-store-access").objects[0]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8333}]
    (selector,) = rule["from"]
    names = set(selector["namespaceSelector"]["matchExpressions"][0]["values"])
    chart = _chart_objects(plan)
    models = next(o["metadata"]["name"] for o in chart if o["kind"] == "Namespace")
    assert names == {"riskloop", models}
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "seaweedfs"}}


def test_the_model_namespace_secret_carries_what_kserve_reads(plans: dict[str, list[Step]]) -> None:
    secret = next(s for s in plans["kind"] if s.kind == "secret" and s.namespace == "riskloop-models").objects[0]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["S3_ENDPOINT"] == "seaweedfs.kubeflow.svc.cluster.local:8333" and data["S3_USE_HTTPS"] == "0"
    assert {"awsAccessKeyID", "awsSecretAccessKey"} <= set(data)
    chart = _chart_objects(plans["kind"])
    sa = next(o for o in chart if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "riskloop-predictor")
    assert {"name": secret["metadata"]["name"]} in sa["secrets"]


def test_the_plan_check_catches_the_old_mistakes(plans: dict[str, list[Step]]) -> None:
    """Test the test: the review's findings, put back into a copy of the plan, fail the checks above."""
    plan = list(plans["kind"])
    # knative config before its webhook admits: drop the admission wait
    no_wait = [s for s in plan if not (s.kind == "admitted" and s.target == "manifests/knative/config")]
    with pytest.raises(AssertionError, match="without waiting until it admits"):
        test_objects_are_applied_only_once_their_webhooks_admit("kind", {"kind": no_wait})
    # KServe's objects without its namespace
    no_ns = [s for s in plan if s.target != "manifests/kserve/namespace"]
    with pytest.raises(AssertionError, match=r"needs namespaces \{'kserve'\} first"):
        test_namespaces_exist_before_their_objects("kind", {"kind": no_ns})
    # kserve.yaml's custom resources with its CRDs in the same step (no separate CRD step and wait)
    no_crds = [s for s in plan if s.target != "manifests/kserve/crds"]
    with pytest.raises(AssertionError, match="before their CRDs are Established"):
        test_crds_are_established_before_their_custom_resources("kind", {"kind": no_crds})
