"""Render helm/riskloop offline with helm-python-sdk: shared by the chart tests and scripts/policy-scan.sh.

``python tests/tools/chart/chart.py --out DIR [-f VALUES ...]`` writes every rendered object of each values
set as its own YAML file under ``DIR/<values set>/`` (one object per file, so a scanner names it).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = ROOT / "helm" / "riskloop"
RELEASE = "riskloop"
NAMESPACE = "riskloop"
# The one Kubernetes version everything is validated for (kubernetes-validate schemas, helm lint).
KUBE_VERSION = "1.36.0"

# Every values set the chart must render: the defaults, each ci/*-values.yaml, each environment overlay.
VALUES_FILES: dict[str, list[Path]] = {
    "default": [],
    **{p.name.removesuffix("-values.yaml"): [p] for p in sorted((CHART_DIR / "ci").glob("*-values.yaml"))},
    **{f"env-{p.stem}": [p] for p in sorted((CHART_DIR / "envs").glob("*.yaml"))},
}


def load_values(files: list[Path]) -> dict[str, Any]:
    """User values from ``files``, later files winning (deep merge, as ``helm -f a -f b``)."""
    merged: dict[str, Any] = {}
    for f in files:
        merged = _deep_merge(merged, yaml.safe_load(f.read_text()) or {})
    return merged


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


@functools.cache
def load_chart(path: Path = CHART_DIR) -> helm.Chart:
    """The chart, loaded once per process (charts are immutable)."""
    return helm.Chart.load(path)


def render(
    values: Mapping[str, Any] | None = None, *, chart: helm.Chart | None = None, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` (schema validated, hooks and tests included)."""
    return (chart or load_chart()).render(dict(values or {}), name=RELEASE, namespace=namespace, is_install=True)


def objects(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render, NOTES.txt left out."""
    found = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def render_objects(values: Mapping[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return objects(render(values, **kw))


def find(
    objs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    return [
        o
        for o in objs
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    hits = find(objs, kind, name, namespace)
    assert len(hits) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, found {len(hits)}"
    return hits[0]


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload."""
    for o in objs:
        spec = o.get("spec", {})
        if o["kind"] == "Pod":
            yield f"Pod/{o['metadata']['name']}", spec
        elif o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", spec["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield f"CronJob/{o['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]["spec"]


class ClusterSettings:
    """Stands in for kfp.kubernetes and a PipelineTask to capture what pipelines/cluster.py asks of the cluster."""

    def __init__(self) -> None:
        self.config_maps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, str]] = {}

    def use_config_map_as_env(self, task: Any, name: str, config_map_key_to_env: dict[str, str]) -> None:
        self.config_maps[name] = config_map_key_to_env

    def use_secret_as_env(self, task: Any, name: str, secret_key_to_env: dict[str, str]) -> None:
        self.secrets[name] = secret_key_to_env

    def set_image_pull_policy(self, task: Any, policy: str) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # task.set_cpu_request(...).set_memory_request(...)
        return lambda *a, **k: self


def pipeline_cluster_settings() -> ClusterSettings:
    """The ConfigMap keys and Secret keys ``riskloop.pipelines.cluster.on_cluster`` maps into every pipeline step."""
    import riskloop.pipelines.cluster as cluster

    recorder = ClusterSettings()
    saved = cluster.kubernetes
    cluster.kubernetes = recorder  # type: ignore[assignment]
    try:
        cluster.on_cluster(recorder)  # type: ignore[arg-type]
    finally:
        cluster.kubernetes = saved
    return recorder


def write_objects(objs: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for o in objs:
        ns = o["metadata"].get("namespace", "cluster")
        name = re.sub(r"[^a-z0-9.-]", "-", f"{ns}_{o['kind'].lower()}_{o['metadata']['name']}")
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(o, sort_keys=False))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the rendered objects to")
    parser.add_argument(
        "--values-set", action="append", choices=sorted(VALUES_FILES), help="values sets to render (default: all)"
    )
    args = parser.parse_args(argv)
    seen: set[str] = set()  # an object identical in several values sets is written (and scanned) once
    for name in args.values_set or sorted(VALUES_FILES):
        objs = render_objects(load_values(VALUES_FILES[name]))
        fresh = [o for o in objs if (key := yaml.safe_dump(o, sort_keys=True)) not in seen and not seen.add(key)]
        written = write_objects(fresh, args.out / name)
        print(f"{name}: {len(objs)} objects, {len(written)} not seen before -> {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def inference_service_manifest(**changes: Any) -> dict[str, Any]:
    """The predictor InferenceService the delivery code builds (version 3), with ``changes`` to its
    InferenceServiceParams."""
    from riskloop.delivery import inference_service as isvc

    params = isvc.InferenceServiceParams(
        name="fraud-detector",
        namespace="riskloop-models",
        image="r/riskloop:0.1.0-abc1234",
        storage_uri="s3://riskloop/models/3",
        model_sha256="0" * 64,
        spec_sha256="1" * 64,
        model_version="3",
        **changes,
    )
    return isvc.build_inference_service(params)
