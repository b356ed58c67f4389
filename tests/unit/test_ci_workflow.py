"""The GitHub Actions workflow: valid YAML, the same make verbs as .ci/run, the CI/CD steps on main."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def make_verbs(text: str) -> set[str]:
    verbs: set[str] = set()
    for m in re.finditer(r"\bmake((?:[ \t]+[a-z][a-z0-9-]*)+)", text):
        verbs.update(w for w in m.group(1).split() if "=" not in w)
    return verbs


def test_workflow_runs_what_ci_runs_and_the_makefile_has() -> None:
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yaml").read_text())
    assert workflow[True] == {"push": None, "pull_request": None}  # `on:` parses as True in YAML 1.1
    steps = workflow["jobs"]["build"]["steps"]
    scripts = "\n".join(s.get("run", "") for s in steps)
    used = make_verbs(scripts)
    assert used == {"lint", "test", "compile", "test-cluster"}
    assert make_verbs((REPO / ".ci/run").read_text()) <= used, "CI must run what .ci/run runs"
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), re.M))
    assert used <= targets


def test_main_pushes_the_image_keeps_pipelines_and_opens_the_gitops_change() -> None:
    steps = yaml.safe_load((REPO / ".github/workflows/ci.yaml").read_text())["jobs"]["build"]["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert all(re.search(r"@v\d+$", s["uses"]) for s in steps if "uses" in s)  # actions pinned to a major
    build = uses["docker/build-push-action"]["with"]
    assert "refs/heads/main" in build["push"] and "RISKLOOP_GIT_COMMIT=${{ github.sha }}" in build["build-args"]
    assert uses["actions/upload-artifact"]["with"]["path"] == "build/pipelines/*.yaml"
    pr = uses["peter-evans/create-pull-request"]
    assert "refs/heads/main" in pr["if"] and pr["with"]["add-paths"] == "helm/riskloop/envs/cloud.yaml"
    gitops = next(s for s in steps if s.get("name", "").startswith("GitOps"))
    assert "helm/riskloop/envs/cloud.yaml" in gitops["run"] and "['tag']" in gitops["run"]
    app = yaml.safe_load((REPO / "manifests/argocd/riskloop.yaml").read_text())
    assert "envs/cloud.yaml" in app["spec"]["source"]["helm"]["valueFiles"]  # what ArgoCD deploys is what CI bumps
