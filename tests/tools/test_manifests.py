"""manifests/: local kustomizations build offline; remote ones are pinned to versions.env; the ArgoCD app points home.

Remote kustomize resources need the network and a cluster to mean anything, so for those
this checks what can be checked here: each URL names exactly the version pinned in
manifests/versions.env (no `latest`, no branch, no unversioned URL), and the kind
node image is the pinned one. Everything local is built with kubectl kustomize.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUBECTL = REPO / ".venv/bin/kubectl"
REMOTE = re.compile(r"^(https?://|github\.com/)")
VERSION = re.compile(r"^(v?\d+\.\d+\.\d+|knative-v\d+\.\d+\.\d+)$")


def versions() -> dict[str, str]:
    pins = {}
    for line in (MANIFESTS / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key] = value
    return pins


def kustomizations() -> list[Path]:
    return sorted(MANIFESTS.rglob("kustomization.yaml"))


def resources(k: Path) -> list[str]:
    doc = yaml.safe_load(k.read_text())
    return [str(r) for r in doc.get("resources", [])]


def is_local(k: Path) -> bool:
    return not any(REMOTE.match(r) for r in resources(k))


def url_version(url: str) -> str:
    """The version a remote resource is pinned to: ?ref=<tag> or /releases/download/<tag>/."""
    if m := re.search(r"[?&]ref=([^&]+)$", url):
        return m.group(1)
    if m := re.search(r"/releases/download/([^/]+)/", url):
        return m.group(1)
    raise AssertionError(f"{url}: no version in the URL (use ?ref=<tag> or a release download URL)")


def test_versions_are_exact() -> None:
    pins = versions()
    assert {
        "KFP_VERSION",
        "CERT_MANAGER_VERSION",
        "KNATIVE_SERVING_VERSION",
        "KNATIVE_KOURIER_VERSION",
        "KSERVE_VERSION",
        "KUBE_PROMETHEUS_STACK_VERSION",
        "PUSHGATEWAY_CHART_VERSION",
        "KIND_NODE_IMAGE",
        "KIND_VERSION",
    } <= set(pins)
    for key, value in pins.items():
        pinned = value.rsplit(":", 1)[-1] if key.endswith("_IMAGE") else value
        assert VERSION.match(pinned), f"{key}={value} is not an exact version"


def test_there_are_local_and_remote_kustomizations() -> None:
    local = [k for k in kustomizations() if is_local(k)]
    assert {k.parent.name for k in local} >= {"riskloop", "config", "namespace", "object-store-access"}
    assert {str(k.parent.relative_to(MANIFESTS)) for k in kustomizations() if not is_local(k)} >= {
        "kfp",
        "kfp/cluster-scoped",
        "cert-manager",
        "knative/crds",
        "knative/core",
        "knative/kourier",
        "kserve/crds",
        "kserve",
        "kserve/runtimes",
    }


def test_each_remote_kustomization_applies_one_upstream_file() -> None:
    """One upstream file per apply: serving-core.yaml repeats serving-crds.yaml's CRDs (duplicate ids in one
    kustomization), kserve.yaml's objects need kserve-crds.yaml Established first; the order lives in deploy.sh."""
    for k in kustomizations():
        if not is_local(k):
            assert len(resources(k)) == 1, f"{k}: {resources(k)}"


@pytest.mark.parametrize("k", [k for k in kustomizations() if is_local(k)], ids=lambda k: str(k.parent.name))
def test_local_kustomizations_build_offline(k: Path) -> None:
    r = subprocess.run([str(KUBECTL), "kustomize", str(k.parent)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    objects = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert objects and all(o["apiVersion"] and o["kind"] and o["metadata"]["name"] for o in objects)
    assert all("app.kubernetes.io/part-of" in o["metadata"]["labels"] for o in objects)


def test_the_riskloop_namespace_enforces_restricted() -> None:
    r = subprocess.run(
        [str(KUBECTL), "kustomize", str(MANIFESTS / "riskloop")], capture_output=True, text=True, timeout=60, check=True
    )
    namespaces = {d["metadata"]["name"]: d["metadata"]["labels"] for d in yaml.safe_load_all(r.stdout)}
    assert namespaces["riskloop"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "monitoring" in namespaces


@pytest.mark.parametrize("k", [k for k in kustomizations() if not is_local(k)], ids=lambda k: k.parent.name)
def test_remote_resources_are_pinned_to_versions_env(k: Path) -> None:
    pinned = set(versions().values())
    for url in resources(k):
        assert REMOTE.match(url), f"{k}: mixes local ({url}) and remote resources; keep local ones offline-buildable"
        assert "latest" not in url and not re.search(r"ref=(main|master|HEAD)\b", url), url
        assert url_version(url) in pinned, f"{url}: version {url_version(url)} is not in manifests/versions.env"


def test_url_version_refuses_unpinned_urls() -> None:
    assert url_version("https://github.com/x/y/releases/download/v1.2.3/a.yaml") == "v1.2.3"
    assert url_version("https://github.com/x/y/manifests?ref=2.17.3") == "2.17.3"
    with pytest.raises(AssertionError, match="no version"):
        url_version("https://raw.githubusercontent.com/x/y/main/install.yaml")


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_the_storage_initializer_kserve_injects_is_restricted(tmp_path: Path) -> None:
    """kserve/kserve#5373: the injected storage-initializer has no securityContext, so Pod Security `restricted`
    rejects the predictor pod. KServe v0.21 strategic-merges the ClusterStorageContainer's container over the
    container it injects (storage_initializer_injector.go, mergeContainerSpecs); manifests/kserve/runtimes patches
    KServe's ClusterStorageContainer "default" (config/storagecontainers/default.yaml). Here the patch is applied by
    kustomize to a stand-in object of that name and shape, as the remote build would."""
    runtimes = yaml.safe_load((MANIFESTS / "kserve/runtimes/kustomization.yaml").read_text())
    (patch,) = runtimes["patches"]
    (tmp_path / "csc.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "serving.kserve.io/v1alpha1",
                "kind": "ClusterStorageContainer",
                "metadata": {"name": "default"},
                "spec": {
                    "container": {
                        "name": "storage-initializer",
                        "image": "kserve/storage-initializer:v0.21.0",
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    },
                    "supportedUriFormats": [{"prefix": "s3://"}],
                },
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"resources": ["csc.yaml"], "patches": [{"path": str(MANIFESTS / "kserve/runtimes" / patch["path"])}]}
        )
    )
    r = subprocess.run(
        [str(KUBECTL), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    (csc,) = list(yaml.safe_load_all(r.stdout))
    container = csc["spec"]["container"]
    assert container["image"] == "kserve/storage-initializer:v0.21.0"  # KServe's own fields stay
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}
    security = container["securityContext"]
    assert {k: security[k] for k in RESTRICTED_CONTAINER} == RESTRICTED_CONTAINER
    assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
    # the patch must name KServe's object: a renamed one makes the remote build fail instead of passing silently
    (tmp_path / "csc.yaml").write_text((tmp_path / "csc.yaml").read_text().replace("name: default", "name: other"))
    r = subprocess.run(
        [str(KUBECTL), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0


# knative/serving config/core/configmaps/deployment.yaml (knative-v1.18.0): registries-skipping-tag-resolving default
KNATIVE_SKIPS_TAG_RESOLUTION = ("kind.local", "ko.local", "dev.local")


def test_kind_images_skip_knative_tag_resolution_and_the_predictor_may_use_an_emptydir() -> None:
    """Knative resolves image tags to digests through the registry; an image only loaded into the kind nodes has
    none. deploy.sh names it under a registry Knative skips by default, and our Knative settings do not replace
    that default."""
    script = (REPO / "scripts/deploy.sh").read_text()
    kind_repository = re.search(r"^KIND_IMAGE_REPOSITORY=(\S+)$", script, re.M)
    assert kind_repository and kind_repository.group(1).split("/")[0] in KNATIVE_SKIPS_TAG_RESOLUTION
    config = subprocess.run(
        [str(KUBECTL), "kustomize", str(MANIFESTS / "knative/config")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    maps = {d["metadata"]["name"]: d["data"] for d in yaml.safe_load_all(config)}
    assert "registries-skipping-tag-resolving" not in maps.get("config-deployment", {})
    assert maps["config-features"]["kubernetes.podspec-volumes-emptydir"] == "enabled"


def test_kind_cluster_uses_the_pinned_node_image() -> None:
    cluster = yaml.safe_load((MANIFESTS / "kind/cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert {n["image"] for n in cluster["nodes"]} == {versions()["KIND_NODE_IMAGE"]}
    assert cluster["name"] == "riskloop"


def test_argocd_application_deploys_the_chart_with_an_existing_values_file() -> None:
    app = yaml.safe_load((MANIFESTS / "argocd/riskloop.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    chart = REPO / source["path"]
    assert (chart / "Chart.yaml").exists(), f"{source['path']} is not a chart in this repository"
    assert source["helm"]["valueFiles"], "the GitOps surface is a values file"
    for values in source["helm"]["valueFiles"]:
        assert (chart / values).is_file(), f"valueFiles: {values} does not exist under {source['path']}"
    assert app["spec"]["destination"]["namespace"] == "riskloop"
    # its CRD schema is checked by a real API server: tests/cluster/test_custom_resources.py
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_deploy_script_reads_the_same_pins() -> None:
    script = (REPO / "scripts/deploy.sh").read_text()
    assert "manifests/versions.env" in script
    for key in ("KUBE_PROMETHEUS_STACK_VERSION", "PUSHGATEWAY_CHART_VERSION", "KIND_NODE_IMAGE"):
        assert f"${{{key}}}" in script or f"${key}" in script, key
