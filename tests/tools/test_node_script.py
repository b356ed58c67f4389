"""scripts/node.sh and its OCI archive writer, without starting the node (tests/cluster does that).

shellcheck-clean; one Kubernetes minor everywhere (the node's pin, the kind node image, the chart tests'
version); the sandbox image archive is a valid, reproducible OCI layout that names its image; bad input
to either script is refused with a message and exit code 2 or a usage line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.tools.chart.chart import KUBE_VERSION
from tests.tools.test_manifests import versions

REPO = Path(__file__).resolve().parents[2]
NODE_SH = REPO / "scripts" / "node.sh"
OCI_ARCHIVE = REPO / "scripts" / "node" / "oci_archive.py"


def minor(version: str) -> str:
    m = re.search(r"v?(\d+\.\d+)(\.\d+)?$", version)
    assert m, version
    return m.group(1)


def test_node_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: scripts/services.sh install adds it (Debian package)")
    r = subprocess.run(["shellcheck", str(NODE_SH)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_one_kubernetes_minor_everywhere() -> None:
    pins = versions()
    # k8s.io staging modules are served at v0.36.x and v0.37.x only, and 1.37 drops cgroup v1 fallbacks
    assert re.fullmatch(r"v1\.36\.\d+", pins["KUBERNETES_VERSION"]), pins["KUBERNETES_VERSION"]
    assert minor(pins["KIND_NODE_IMAGE"]) == minor(pins["KUBERNETES_VERSION"])
    assert minor(KUBE_VERSION) == minor(pins["KUBERNETES_VERSION"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pins["COREDNS_VERSION"])
    # Pod Security admission judges by the policy of the version named: the chart, the namespaces deploy.sh
    # applies and the Argo CD example name the same minor as the cluster they were tested on
    import yaml

    named = {
        "values.yaml": yaml.safe_load((REPO / "helm/riskloop/values.yaml").read_text())["namespaces"]["podSecurity"][
            "version"
        ]
    }
    for path in ("manifests/riskloop/namespaces.yaml", "manifests/argocd/riskloop.yaml"):
        for found in re.findall(r"pod-security\.kubernetes\.io/enforce-version: (\S+)", (REPO / path).read_text()):
            named[path] = found
    assert len(named) == 3 and all(minor(v) == minor(pins["KUBERNETES_VERSION"]) for v in named.values()), named


def test_node_script_refuses_an_unknown_command() -> None:
    r = subprocess.run([str(NODE_SH), "start"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "usage: scripts/node.sh build|up|down|status" in r.stderr


def write_archive(tmp_path: Path, name: str, payload: bytes) -> Path:
    src = tmp_path / "pause"
    src.write_bytes(payload)
    out = tmp_path / name
    subprocess.run(
        [
            sys.executable,
            str(OCI_ARCHIVE),
            "--ref",
            "riskloop.local/pause:v1.36.5",
            "--entrypoint",
            "/pause",
            "--out",
            str(out),
            f"{src}=/pause",
        ],
        check=True,
        timeout=60,
    )
    return out


def test_pause_archive_is_an_oci_layout_naming_its_image(tmp_path: Path) -> None:
    out = write_archive(tmp_path, "a.tar", b"\x7fELF pause")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        blobs = {n: tar.extractfile(n).read() for n in names if n.startswith("blobs/")}  # type: ignore[union-attr]
    assert {"oci-layout", "index.json"} <= names
    for name, data in blobs.items():  # every blob is stored under its own digest
        assert name == f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    [entry] = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "riskloop.local/pause:v1.36.5"
    manifest = json.loads(blobs[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"


def test_pause_archive_is_reproducible_and_follows_its_input(tmp_path: Path) -> None:
    first = write_archive(tmp_path, "a.tar", b"one").read_bytes()
    again = write_archive(tmp_path, "b.tar", b"one").read_bytes()
    other = write_archive(tmp_path, "c.tar", b"two").read_bytes()
    assert first == again
    assert first != other


def test_pause_archive_refuses_a_bad_file_spec(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(OCI_ARCHIVE),
            "--ref",
            "x:y",
            "--entrypoint",
            "/pause",
            "--out",
            str(tmp_path / "o.tar"),
            f"{tmp_path / 'missing'}=/pause",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "expected SOURCE=/path/in/image" in r.stderr
    assert not (tmp_path / "o.tar").exists()


def test_mlflow_server_runs_without_its_job_runner() -> None:
    """Found on the real node: MLflow 3's server starts a job runner (a Python process per job kind, over
    1 GiB together) and was OOMKilled at the chart's 1Gi limit; riskloop uses no MLflow jobs."""
    from tests.tools.chart.chart import one, render_objects

    deployment = one(render_objects(), "Deployment", "riskloop-mlflow")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
