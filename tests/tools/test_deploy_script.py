"""scripts/deploy.sh and install.sh: shellcheck-clean, `make deploy DRY_RUN=1` renders without a cluster, a dry run
tells a broken kustomization from a missing network, prerequisites are installed only where asked, image names agree.

The install plan itself (order, namespaces, CRDs, webhooks, Services) is checked in test_install_plan.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from riskloop import __version__
from riskloop.version import IMAGE_REPOSITORY

REPO = Path(__file__).resolve().parents[2]
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"  # fixed: a commit landing mid-test must not matter
TAG = f"{__version__}-{COMMIT[:7]}"
IMAGE = f"{IMAGE_REPOSITORY}:{TAG}"
KIND_IMAGE = f"kind.local/riskloop:{TAG}"  # a registry Knative does not resolve tags of


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: scripts/services.sh install adds it (Debian package)")
    r = subprocess.run(
        ["shellcheck", "scripts/deploy.sh", "scripts/install.sh"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout


def dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # no docker, kind or helm reachable: a dry run must not need them
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in (
        "git",
        "bash",
        "env",
        "mkdir",
        "rm",
        "tr",
        "cat",
        "dirname",
        "sed",
        "base64",
        "grep",
        "head",
        "basename",
    ):
        if (path := shutil.which(tool)) and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(path)
    full = {
        "PATH": str(bin_dir),
        "HOME": os.environ.get("HOME", "/root"),
        "DRY_RUN": "1",
        "KUBECTL": str(REPO / ".venv/bin/kubectl"),
        "RISKLOOP_GIT_COMMIT": COMMIT,
        **env,
    }
    return subprocess.run(
        ["bash", "scripts/deploy.sh", "up"], cwd=REPO, capture_output=True, text=True, env=full, timeout=180
    )


def test_dry_run_renders_what_it_would_apply(tmp_path: Path) -> None:
    out = REPO / "build/deploy"
    shutil.rmtree(out, ignore_errors=True)
    r = dry_run(tmp_path, CLUSTER="kind")
    assert r.returncode == 0, r.stderr + r.stdout
    printed = r.stdout
    assert "+ kind create cluster --name riskloop --config manifests/kind/cluster.yaml" in printed
    assert f"--set image.tag={TAG}" in printed and "-f helm/riskloop/envs/kind.yaml" in printed
    assert f"kind load docker-image {KIND_IMAGE}" in printed
    assert "cluster run --kfp-host" in printed
    assert "upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack --version" in printed
    namespaces = {d["metadata"]["name"] for d in yaml.safe_load_all((out / "riskloop.yaml").read_text())}
    assert {"riskloop", "monitoring"} <= namespaces
    chart = [d for d in yaml.safe_load_all((out / "helm-riskloop.yaml").read_text()) if d]
    images = {
        c["image"]
        for d in chart
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
        if "riskloop" in c["image"]
    }
    assert images == {KIND_IMAGE}
    assert f"--set image.repository={KIND_IMAGE.rsplit(':', 1)[0]}" in printed
    assert any(d["kind"] == "Job" for d in chart)  # the publish Job


def test_dry_run_refuses_a_missing_values_file(tmp_path: Path) -> None:
    r = dry_run(tmp_path, VALUES="helm/riskloop/envs/nope.yaml")
    assert r.returncode == 2 and "values file helm/riskloop/envs/nope.yaml does not exist" in r.stderr


def test_bad_values_stop_the_run_before_anything_is_installed(tmp_path: Path) -> None:
    """A value the chart's schema refuses used to surface at `helm upgrade`, after every prerequisite was installed."""
    values = tmp_path / "values.yaml"
    values.write_text("mlflow:\n  replicas: two\n")
    r = dry_run(tmp_path, CLUSTER="kind", VALUES=str(values))
    assert r.returncode == 2, r.stdout
    assert "/mlflow/replicas" in r.stderr and "nothing was installed" in r.stderr
    assert "+ " not in r.stdout  # not even the kind cluster was (or would have been) created


def test_cloud_dry_run_keeps_the_published_image_name(tmp_path: Path) -> None:
    r = dry_run(tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"-t {IMAGE} ." in r.stdout and "kind load" not in r.stdout


def test_image_names_are_lower_cased_everywhere(tmp_path: Path) -> None:
    """Registries refuse upper case, GitHub owners have it: build, push, chart and compiled pipelines all get the
    one lower-cased name (exported, so `riskloop compile` in the script sees the same)."""
    r = dry_run(tmp_path, RISKLOOP_IMAGE_REPOSITORY="ghcr.io/MyOrg/RiskLoop")
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"-t ghcr.io/myorg/riskloop:{TAG} ." in r.stdout
    assert "--build-arg RISKLOOP_IMAGE_REPOSITORY=ghcr.io/myorg/riskloop " in r.stdout
    assert "--set image.repository=ghcr.io/myorg/riskloop " in r.stdout
    assert "MyOrg" not in r.stdout
    bad = dry_run(tmp_path, RISKLOOP_IMAGE_REPOSITORY="ghcr.io/my org/riskloop")
    assert bad.returncode == 2 and "is not a valid image name" in bad.stderr


def _source(function_call: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one function of deploy.sh (sourced: it defines, does not run) with the real kubectl."""
    full = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "KUBECTL": str(REPO / ".venv/bin/kubectl"),
        "RISKLOOP_GIT_COMMIT": COMMIT,
        **env,
    }
    script = f'source scripts/deploy.sh; OUT="{tmp_path}"; {function_call}'
    return subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, env=full, timeout=120)


def test_dry_run_tells_a_broken_kustomization_from_a_missing_network(tmp_path: Path) -> None:
    """Knative's old kustomization (serving-crds.yaml + serving-core.yaml) failed to build on duplicate ids and the
    dry run called it "remote (needs the network)". A build failure stops the dry run (exit 2) and says why."""
    broken = tmp_path / "broken"
    broken.mkdir()
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: twice\n"
    (broken / "a.yaml").write_text(namespace)
    (broken / "b.yaml").write_text(namespace)
    (broken / "kustomization.yaml").write_text("resources: [a.yaml, b.yaml]\n")
    r = _source(f"apply_k {broken}", tmp_path, DRY_RUN="1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "kustomize cannot build" in r.stderr and "already registered id" in r.stderr
    # a host that never resolves (RFC 2606 .invalid): missing network, listed as remote, the dry run goes on
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "kustomization.yaml").write_text("resources: [https://riskloop.invalid/release/install.yaml]\n")
    r = _source(f"apply_k {remote}; echo went-on", tmp_path, DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    assert f"{remote} is remote (needs the network to render)" in r.stdout and "went-on" in r.stdout


def _unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kube context whose API server is a closed loopback port: every call fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "foreign",
                "clusters": [{"name": "foreign", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "contexts": [{"name": "foreign", "context": {"cluster": "foreign", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "none"}}],
            }
        )
    )
    return config


def test_a_foreign_cluster_gets_no_prerequisites_unless_asked(tmp_path: Path) -> None:
    """Not kind: nothing is installed into the current context unless PREREQS=1, and then only what is missing
    (here every CRD lookup fails, so all are missing); without it the run stops before installing anything."""
    kubeconfig = str(_unreachable_kubeconfig(tmp_path))
    r = _source('plan_prerequisites; echo "install:$INSTALL"', tmp_path, KUBECONFIG=kubeconfig)
    assert r.returncode == 2, r.stdout
    assert "missing prerequisites: cert-manager knative kserve kfp monitoring" in r.stderr and "PREREQS=1" in r.stderr
    asked = _source('plan_prerequisites; echo "install:$INSTALL"', tmp_path, KUBECONFIG=kubeconfig, PREREQS="1")
    assert asked.returncode == 0, asked.stderr
    assert "install: cert-manager knative kserve kfp monitoring " in asked.stdout
    kind = _source('plan_prerequisites; echo "install:$INSTALL"', tmp_path, KUBECONFIG=kubeconfig, CLUSTER="kind")
    assert "install: cert-manager knative kserve kfp monitoring " in kind.stdout


def _timeout(marks: Any) -> pytest.Mark | None:
    """The timeout mark among a function's or module's marks (Mark or MarkDecorator objects)."""
    found = [getattr(m, "mark", m) for m in marks if m.name == "timeout"]
    return found[0] if found else None


def test_e2e_timeouts_count_the_test_not_the_deploy_fixture() -> None:
    """pytest's --timeout=600 (pyproject) counts fixture setup: the session's `make deploy` (up to an hour) and two
    training runs (up to an hour each) could never fit. Every e2e test has its own timeout, func_only (fixture setup
    excluded), at least as long as the waits it makes."""
    import inspect

    from tests.e2e import conftest as e2e_conftest
    from tests.e2e import test_kind

    module = test_kind.pytestmark if isinstance(test_kind.pytestmark, list) else [test_kind.pytestmark]
    tests = {n: f for n, f in inspect.getmembers(test_kind, inspect.isfunction) if n.startswith("test_")}
    assert tests
    for name, function in tests.items():
        mark = _timeout(getattr(function, "pytestmark", [])) or _timeout(module)
        assert mark is not None, f"{name}: no timeout of its own, so pytest's 600 s counts the deploy fixture"
        assert mark.kwargs.get("func_only") is True, f"{name}: its timeout would count the deploy fixture"
        assert mark.args[0] > 600
    canary = _timeout(getattr(tests["test_train_then_canary_promote_and_roll_back"], "pytestmark", []))
    assert canary is not None and canary.args[0] >= 2 * test_kind.TRAIN_TIMEOUT_SECONDS
    source = inspect.getsource(e2e_conftest.cluster)
    assert "timeout=DEPLOY_TIMEOUT_SECONDS" in source and e2e_conftest.DEPLOY_TIMEOUT_SECONDS >= 3600


def test_e2e_readme_and_deploy_script_use_the_same_model_host() -> None:
    """KServe's status.url with disableIstioVirtualHost is the predictor's Knative route; the e2e suite, deploy.sh's
    URLs and the README must all send that Host header through Kourier."""
    from tests.e2e import test_kind

    r = subprocess.run(
        ["bash", "-c", "source scripts/deploy.sh; model_host"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RISKLOOP_GIT_COMMIT": COMMIT},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == test_kind.PREDICTOR_HOST == f"{test_kind.SERVICE}-predictor.{test_kind.MODELS}.riskloop.local"
    assert test_kind.PREDICTOR_HOST in (REPO / "README.md").read_text()


def test_ci_pushes_bakes_and_compiles_one_lower_cased_image_name() -> None:
    """CI lower-cased the pushed tag but baked the owner's case into the image (the name its compiled pipelines and
    the predictor use) and compiled the kept pipelines with the default name: the steps would pull an image that
    does not exist."""
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yaml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    tag = next(s for s in steps if s.get("id") == "tag")["run"]
    assert 'echo "RISKLOOP_IMAGE_REPOSITORY=${IMAGE_REPOSITORY,,}" >> "$GITHUB_ENV"' in tag
    assert "image=${IMAGE_REPOSITORY,,}:" in tag
    assert 'RISKLOOP_IMAGE_REPOSITORY="${IMAGE_REPOSITORY,,}" make compile' in tag
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))["with"]
    assert "RISKLOOP_IMAGE_REPOSITORY=${{ env.RISKLOOP_IMAGE_REPOSITORY }}" in build["build-args"]
    upload = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/upload-artifact"))
    assert steps.index(next(s for s in steps if s.get("id") == "tag")) < upload  # the kept pipelines: recompiled
