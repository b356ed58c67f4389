"""The custom resource definitions the cluster suite validates against, made at run time from upstream Go modules.

Nothing here is committed: every CRD comes through the Go module proxy into the cache
(``$RISKLOOP_CACHE/crds/``), and the node's API server does the validating.

- **InferenceService** (KServe): generated from KServe's API package
  ``github.com/kserve/kserve/pkg/apis/serving/v1beta1`` with ``controller-gen`` from
  sigs.k8s.io/controller-tools, in a small module under ``crds/kserve-<version>/`` whose replace
  directives put the k8s.io staging modules on the node's v0.36.x (KServe's own go.mod replaces them with
  v0.34, which the proxy does not serve). The schema is made from the package's type declarations, and those
  type-check with v0.36; the package as a whole does not: three conversions ``corev1.PodSpec(*podSpec)`` in
  its ``*_custom.go`` fail, since KServe's copy of PodSpec lacks the ``SchedulingGroup`` field core v1.36 added
  (so the CRD has no ``schedulingGroup``, as KServe's own has none), and its dependencies do not build
  (controller-runtime v0.23 misses client-go v0.36's ``HasSyncedChecker``; controller-runtime v0.24, made for
  v0.36, breaks KEDA v2.18's webhooks). controller-gen reports no error for function bodies, and the result
  equals the CRD KServe ships in the same module but for the core fields v0.36 added
  (test_custom_resources.py checks that). After generating, KServe's Makefile (target ``manifests``) edits the
  schema; ``kserve_post_process`` repeats those edits.
  The proxy refuses KServe v0.21.0, the pinned KSERVE_VERSION ("This module version is not available",
  also for v0.20.1 and v0.21.x); ``KSERVE_FALLBACK_VERSION`` then stands in, with a warning naming both.
- **ServiceMonitor, PrometheusRule**: the CRDs prometheus-operator generates into its own module
  (``example/prometheus-operator-crd/``), at the operator version the pinned kube-prometheus-stack deploys.
- **Application** (Argo CD): ``manifests/crds/application-crd.yaml`` of the argo-cd/v3 module.

The kserve Python package (0.21.0 in .venv) ships no CRD or OpenAPI schema, only typed models, so there is no
schema to fall back to there: if the generation fails, the suite fails saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import Node, cache_dir, kubectl, versions

CONTROLLER_TOOLS_VERSION = "v0.21.0"  # the first controller-tools whose go.mod is on k8s.io v0.36, the node's minor
# The newest KServe the proxy serves (checked 2026-12-07: v0.20.0 yes; v0.20.1, v0.21.0 "not available").
KSERVE_FALLBACK_VERSION = "v0.20.0"
KSERVE_API_PACKAGE = "github.com/kserve/kserve/pkg/apis/serving/v1beta1"
# kube-prometheus-stack 72.6.2 (KUBE_PROMETHEUS_STACK_VERSION) deploys prometheus-operator v0.82.2.
PROMETHEUS_OPERATOR_VERSION = "v0.82.2"
# No Argo CD is pinned anywhere (manifests/argocd/riskloop.yaml targets any Argo CD 3): the 3.1 release's CRD.
ARGOCD_VERSION = "v3.1.0"
STAGING_MODULES = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "client-go",
    "code-generator",
    "component-base",
    "component-helpers",
)
GO_TIMEOUT_SECONDS = 1800  # a cold controller-tools build and KServe's module graph: about 4 min on 2 loaded cores


class CrdUnavailable(Exception):
    """A CRD could not be made; the message says which step failed and its last words."""


@dataclass(frozen=True)
class Crds:
    """The CRDs the suite installs, and where each came from."""

    documents: tuple[dict[str, Any], ...]
    sources: dict[str, str]  # CRD name -> module@version (and how)

    @property
    def names(self) -> list[str]:
        return [str(d["metadata"]["name"]) for d in self.documents]


def crd_cache() -> Path:
    return cache_dir() / "crds"


def go(*args: str, cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    """Runs the go command (its module downloads go through GOPROXY, the machine's default: the module proxy)."""
    go_bin = shutil.which("go")
    if go_bin is None:
        raise CrdUnavailable(f"{what}: the go command is not installed (the node's build needs it too)")
    started = time.monotonic()
    r = subprocess.run(
        [go_bin, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GO_TIMEOUT_SECONDS,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", **(env or {})},
    )
    if r.returncode:
        tail = "\n".join([line for line in r.stderr.splitlines() if not line.startswith("go: downloading")][-15:])
        raise CrdUnavailable(
            f"{what} failed (go {' '.join(args)}, exit {r.returncode} after "
            f"{time.monotonic() - started:.0f} s):\n{tail}"
        )
    return r.stdout


def module_dir(module: str, version: str) -> Path:
    """The extracted module zip of ``module@version`` from the proxy (``go mod download -json``'s Dir)."""
    with tempfile.TemporaryDirectory() as tmp:  # outside any module: no go.mod is read or changed
        r = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=GO_TIMEOUT_SECONDS,
            env={**os.environ, "GOFLAGS": ""},
        )
    info = json.loads(r.stdout) if r.stdout.strip() else {}
    if r.returncode or info.get("Error") or not info.get("Dir"):
        raise CrdUnavailable(f"go mod download {module}@{version}: {info.get('Error') or r.stderr.strip()}")
    return Path(info["Dir"])


def controller_gen() -> Path:
    """controller-gen at CONTROLLER_TOOLS_VERSION, built once per machine into the cache."""
    out = crd_cache() / "bin" / f"controller-gen-{CONTROLLER_TOOLS_VERSION}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as gobin:
        go(
            "install",
            f"sigs.k8s.io/controller-tools/cmd/controller-gen@{CONTROLLER_TOOLS_VERSION}",
            cwd=Path(gobin),
            what="building controller-gen",
            env={"GOBIN": gobin, "GOFLAGS": ""},
        )
        os.replace(Path(gobin) / "controller-gen", out)
    return out


def staging_version() -> str:
    """The k8s.io staging modules' version of the node's Kubernetes: v1.36.5 -> v0.36.5."""
    return "v0." + versions()["KUBERNETES_VERSION"].removeprefix("v1.")


def kserve_go_mod(kserve_version: str) -> str:
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} {staging_version()}" for m in STAGING_MODULES)
    return (
        f"module riskloop.local/crds\n\ngo 1.26\n\nrequire github.com/kserve/kserve {kserve_version}\n\n"
        f"// KServe's go.mod replaces these with v0.34, which the module proxy does not serve.\n"
        f"replace (\n{replaces}\n)\n"
    )


def kserve_post_process(crd: dict[str, Any]) -> dict[str, Any]:
    """The edits KServe's Makefile (target ``manifests``) makes to the generated InferenceService CRD.

    The component fields (predictor, explainer, transformer, canary) lose their ``required`` lists (a framework's
    ``name`` must stay optional) and ``ephemeralContainers`` (size); probes lose the ``required`` of their
    ``httpGet``/``tcpSocket`` (Knative sets the port); every ``protocol`` defaults to ``TCP``.
    """
    for version in crd["spec"]["versions"][:1]:  # the Makefile edits .spec.versions[0]
        components = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        for component in components.values():
            fields = component.get("properties", {})
            fields.pop("ephemeralContainers", None)
            for field in fields.values():
                field.pop("required", None)
            # a framework's own container (predictor.xgboost ...): both handlers; the containers list: httpGet only,
            # as the Makefile has it
            holders: list[tuple[Any, tuple[str, ...]]] = [(f, ("httpGet", "tcpSocket")) for f in fields.values()]
            holders.append((fields.get("containers", {}).get("items", {}), ("httpGet",)))
            for holder, handlers in holders:
                for probe in ("readinessProbe", "livenessProbe"):
                    probe_fields = holder.get("properties", {}).get(probe, {}).get("properties", {})
                    for handler in handlers:
                        probe_fields.get(handler, {}).pop("required", None)
        _default_protocols(components)
    return crd


def _default_protocols(schema: Any) -> None:
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict) and isinstance(props.get("protocol"), dict):
            props["protocol"]["default"] = "TCP"
        for value in schema.values():
            _default_protocols(value)
    elif isinstance(schema, list):
        for value in schema:
            _default_protocols(value)


def kserve_crd() -> tuple[dict[str, Any], str]:
    """The InferenceService CRD generated from KServe's API types, and the KServe version it was generated from."""
    pinned = versions()["KSERVE_VERSION"]
    try:
        module_dir("github.com/kserve/kserve", pinned)
        version = pinned
    except CrdUnavailable as refused:
        # said on stderr and in Crds.sources (pytest turns warnings into errors here)
        sys.stderr.write(
            f"the Go module proxy does not serve KServe {pinned} (the pinned KSERVE_VERSION): {refused}; "
            f"the InferenceService CRD is generated from KServe {KSERVE_FALLBACK_VERSION}'s API types\n"
        )
        version = KSERVE_FALLBACK_VERSION
    work = crd_cache() / f"kserve-{version}"
    inputs = hashlib.sha256(
        "\0".join(
            [kserve_go_mod(version), CONTROLLER_TOOLS_VERSION, KSERVE_API_PACKAGE, Path(__file__).read_text()]
        ).encode()
    ).hexdigest()[:16]
    done = work / f"inferenceservices-{inputs}.yaml"
    if not done.exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text(kserve_go_mod(version))
        (work / "api.go").write_text(f'package crds\n\nimport _ "{KSERVE_API_PACKAGE}"\n')
        go("mod", "tidy", cwd=work, what=f"resolving KServe {version}'s module graph with k8s.io {staging_version()}")
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        generator = controller_gen()
        r = subprocess.run(
            [str(generator), "crd:maxDescLen=0", f"paths={KSERVE_API_PACKAGE}", f"output:crd:dir={out}"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=GO_TIMEOUT_SECONDS,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
        generated = out / "serving.kserve.io_inferenceservices.yaml"
        if r.returncode or not generated.exists():
            raise CrdUnavailable(
                f"controller-gen on {KSERVE_API_PACKAGE}@{version} (exit {r.returncode}): {r.stderr.strip()[-3000:]}"
            )
        crd = kserve_post_process(yaml.safe_load(generated.read_text()))
        partial = done.with_suffix(".part")
        partial.write_text(yaml.safe_dump(crd, sort_keys=False))
        for stale in work.glob("inferenceservices-*.yaml"):  # made from other inputs: never read again
            stale.unlink()
        os.replace(partial, done)
    return yaml.safe_load(done.read_text()), version


def prometheus_operator_crds() -> list[dict[str, Any]]:
    folder = module_dir("github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION)
    folder = folder / "example" / "prometheus-operator-crd"
    return [
        yaml.safe_load((folder / f"monitoring.coreos.com_{plural}.yaml").read_text())
        for plural in ("servicemonitors", "prometheusrules")
    ]


def argocd_application_crd() -> dict[str, Any]:
    folder = module_dir("github.com/argoproj/argo-cd/v3", ARGOCD_VERSION)
    crd: dict[str, Any] = yaml.safe_load((folder / "manifests" / "crds" / "application-crd.yaml").read_text())
    return crd


def all_crds() -> Crds:
    isvc, kserve_version = kserve_crd()
    monitoring = prometheus_operator_crds()
    application = argocd_application_crd()
    pinned = versions()["KSERVE_VERSION"]
    stand_in = "" if kserve_version == pinned else f", standing in for {pinned}, which the proxy does not serve"
    sources = {
        isvc["metadata"]["name"]: f"controller-gen {CONTROLLER_TOOLS_VERSION} on {KSERVE_API_PACKAGE}@"
        f"{kserve_version} (k8s.io {staging_version()}{stand_in})",
        application["metadata"]["name"]: f"github.com/argoproj/argo-cd/v3@{ARGOCD_VERSION}",
    }
    sources.update(
        {
            c["metadata"]["name"]: f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}"
            for c in monitoring
        }
    )
    return Crds(documents=(isvc, *monitoring, application), sources=sources)


def install(crds: Crds) -> None:
    """Server-side apply (the InferenceService CRD is too large for kubectl's last-applied annotation), then wait
    until every CRD is Established."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(crds.documents)})
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=riskloop-tests",
        "-f",
        "-",
        stdin=body,
        timeout=300,
    )
    # polled rather than `kubectl wait`, which fails on a CRD whose status has no conditions yet
    deadline = time.monotonic() + 120
    while True:
        listed = json.loads(kubectl("get", *[f"crd/{n}" for n in crds.names], "-o", "json").stdout)["items"]
        waiting = [
            c["metadata"]["name"]
            for c in listed
            if not any(
                cond.get("type") == "Established" and cond.get("status") == "True"
                for cond in c.get("status", {}).get("conditions") or []
            )
        ]
        if not waiting:
            return
        assert time.monotonic() < deadline, f"CRDs not Established after 120 s: {waiting}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def installed_crds(node: Node) -> Iterator[Crds]:
    """The CRDs on the node's API server for one test module; deleted afterwards, their objects with them.

    Per module, not per session, so that other modules (the chart installed by the suite) never see the monitoring
    or KServe APIs served: the chart renders ServiceMonitors only where monitoring.coreos.com/v1 is served.
    Made once per machine (cached), installed in a few seconds."""
    started = time.monotonic()
    try:
        crds = all_crds()
    except CrdUnavailable as exc:
        pytest.fail(f"the CRDs could not be made through the Go module proxy: {exc}", pytrace=False)
    install(crds)
    sys.stderr.write(f"CRDs installed in {time.monotonic() - started:.0f} s: {crds.sources}\n")
    try:
        yield crds
    finally:
        kubectl("delete", "--ignore-not-found", "--timeout=120s", *[f"crd/{n}" for n in crds.names], timeout=180)


@pytest.fixture(scope="module")
def scratch_namespace(node: Node, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test module (``crd-test-<module>-<random>``), deleted afterwards."""
    module = re.sub(r"[^a-z0-9-]", "-", request.module.__name__.rsplit(".", 1)[-1].lower())[:30].strip("-")
    name = f"crd-test-{module}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


__all__ = ["CrdUnavailable", "Crds", "all_crds", "installed_crds", "kserve_crd", "scratch_namespace"]
