"""scripts/deploy.sh and install.sh: shellcheck-clean, and `make deploy DRY_RUN=1` renders without a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from riskloop import __version__
from riskloop.version import IMAGE_REPOSITORY

REPO = Path(__file__).resolve().parents[2]
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"  # fixed: a commit landing mid-test must not matter
TAG = f"{__version__}-{COMMIT[:7]}"
IMAGE = f"{IMAGE_REPOSITORY}:{TAG}"


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: scripts/services.sh install adds it (Debian package)")
    r = subprocess.run(["shellcheck", "scripts/deploy.sh", "scripts/install.sh"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # no docker, kind or helm reachable: a dry run must not need them
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("git", "bash", "env", "mkdir", "rm", "tr", "cat", "dirname", "sed", "base64"):
        if path := shutil.which(tool):
            (bin_dir / tool).symlink_to(path)
    full = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root"), "DRY_RUN": "1",
            "KUBECTL": str(REPO / ".venv/bin/kubectl"), "RISKLOOP_GIT_COMMIT": COMMIT, **env}
    return subprocess.run(["bash", "scripts/deploy.sh", "up"], cwd=REPO, capture_output=True, text=True, env=full,
                          timeout=120)


def test_dry_run_renders_what_it_would_apply(tmp_path: Path) -> None:
    out = REPO / "build/deploy"
    shutil.rmtree(out, ignore_errors=True)
    r = dry_run(tmp_path, CLUSTER="kind")
    assert r.returncode == 0, r.stderr + r.stdout
    printed = r.stdout
    assert "+ kind create cluster --name riskloop --config manifests/kind/cluster.yaml" in printed
    assert f"--set image.tag={TAG}" in printed and "-f helm/riskloop/envs/kind.yaml" in printed
    assert f"kind load docker-image {IMAGE}" in printed
    assert "cluster run --kfp-host" in printed
    assert "upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack --version" in printed
    namespaces = {d["metadata"]["name"] for d in yaml.safe_load_all((out / "riskloop.yaml").read_text())}
    assert {"riskloop", "monitoring"} <= namespaces
    chart = [d for d in yaml.safe_load_all((out / "helm-riskloop.yaml").read_text()) if d]
    images = {c["image"] for d in chart if d["kind"] in ("Deployment", "StatefulSet", "Job")
              for c in d["spec"]["template"]["spec"]["containers"] if "riskloop" in c["image"]}
    assert images == {IMAGE}
    assert any(d["kind"] == "Job" for d in chart)  # the publish Job


def test_dry_run_refuses_a_missing_values_file(tmp_path: Path) -> None:
    r = dry_run(tmp_path, VALUES="helm/riskloop/envs/nope.yaml")
    assert r.returncode == 2 and "values file helm/riskloop/envs/nope.yaml does not exist" in r.stderr
