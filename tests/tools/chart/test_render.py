"""The chart renders and lints for every values file, and its schema refuses bad values saying where."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.tools.chart.chart import CHART_DIR, KUBE_VERSION, NAMESPACE, ROOT, VALUES_FILES, load_chart, load_values

SETS = sorted(VALUES_FILES)


def test_every_values_file_is_covered() -> None:
    assert {"default", "env-kind", "env-cloud"} <= set(VALUES_FILES)
    assert len([s for s in VALUES_FILES if not s.startswith("env-") and s != "default"]) >= 3, VALUES_FILES


@pytest.mark.parametrize("values_set", SETS)
def test_renders_objects(values_set: str, rendered: dict[str, dict[str, str]]) -> None:
    docs = [
        d
        for path, text in rendered[values_set].items()
        if not path.endswith(".txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    assert docs, f"{values_set} rendered nothing"
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= d.keys(), d
        assert d["kind"] == "Namespace" or d["metadata"].get("namespace"), f"{d['kind']}/{d['metadata']['name']}"
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate objects in {values_set}"


@pytest.mark.parametrize("values_set", SETS)
def test_lint_strict(values_set: str) -> None:
    report = helm.lint(
        CHART_DIR,
        load_values(VALUES_FILES[values_set]),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_chart_metadata_matches_package() -> None:
    meta = load_chart().metadata
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == version


def test_every_value_is_commented() -> None:
    """Every key of values.yaml has a comment right above it (or inline), or sits in a block whose parent's
    comment covers it: a block none of whose keys is commented (resources: requests/limits), or list items."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    keys = []  # (line number, indent, commented, is list item or inside one)
    in_list_below: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if in_list_below is not None and indent <= in_list_below and not stripped.startswith("- "):
            in_list_below = None
        if stripped.startswith("- "):
            if in_list_below is None:
                in_list_below = indent - 2 if indent >= 2 else 0
            continue
        if in_list_below is not None:
            continue
        commented = (i > 0 and lines[i - 1].strip().startswith("#")) or " # " in line
        keys.append((i, indent, commented))
    uncommented = []
    for n, (i, indent, commented) in enumerate(keys):
        if commented:
            continue
        parent = next((k for k in reversed(keys[:n]) if k[1] < indent), None)
        siblings = [
            k
            for k in keys
            if parent is not None
            and k[0] > parent[0]
            and k[1] == indent
            and not any(p[1] < indent and parent[0] < p[0] < k[0] for p in keys)
        ]
        if parent is not None and parent[2] and not any(s[2] for s in siblings):
            continue
        uncommented.append(f"values.yaml:{i + 1}: {lines[i].strip()}")
    assert not uncommented, "uncommented values:\n" + "\n".join(uncommented)


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("typo'd key", {"mlfow": {"replicas": 2}}, "additional properties 'mlfow' not allowed"),
    ("typo'd nested key", {"postgresql": {"bundeld": False}}, "/postgresql"),
    ("wrong type", {"mlflow": {"replicas": "two"}}, "/mlflow/replicas"),
    (
        "5-field cron",
        {"schedules": [{"name": "x", "pipeline": "features", "cron": "0 2 * * *", "parameters": {}, "enabled": True}]},
        "/schedules/0/cron",
    ),
    (
        "unknown pipeline",
        {"schedules": [{"name": "x", "pipeline": "trainin", "cron": "0 0 2 * * *", "parameters": {}, "enabled": True}]},
        "/schedules/0/pipeline",
    ),
    ("latest tag", {"image": {"tag": "latest"}}, "/image/tag"),
    ("bad namespace", {"namespaces": {"models": {"name": "Riskloop_Models"}}}, "/namespaces/models/name"),
    ("Knative's port", {"predictor": {"port": 8012}}, "/predictor/port"),
    ("not a quantity", {"mlflow": {"resources": {"limits": {"memory": "lots"}}}}, "/mlflow/resources/limits/memory"),
    ("storage root not a string", {"s3": {"storageUri": ["s3://riskloop/state"]}}, "/s3/storageUri"),
    ("storage root empty", {"s3": {"storageUri": ""}}, "/s3/storageUri"),
    ("storage root over HTTP", {"s3": {"storageUri": "https://minio:9000/riskloop/state"}}, "/s3/storageUri"),
    ("storage root a path", {"s3": {"storageUri": "/tmp/riskloop"}}, "/s3/storageUri"),
    # gone: KServe does not read a service account's s3-* annotations without IRSA (the endpoint is in the Secret)
    (
        "storage initializer annotations",
        {"predictor": {"storageInitializer": {"s3Endpoint": "minio:9000"}}},
        "/predictor",
    ),
    ("operator API check as text", {"monitoring": {"requireOperatorApi": "yes"}}, "/monitoring/requireOperatorApi"),
    (
        "NodeLocal DNS not an address",
        {"networkPolicy": {"nodeLocalDnsIp": "node-local-dns"}},
        "/networkPolicy/nodeLocalDnsIp",
    ),
    ("storage root trailing slash", {"s3": {"storageUri": "s3://riskloop/state/"}}, "/s3/storageUri"),
    ("storage root bad bucket", {"s3": {"storageUri": "s3://Riskloop_State/x"}}, "/s3/storageUri"),
    ("storage root with a space", {"s3": {"storageUri": "s3://riskloop/my state"}}, "/s3/storageUri"),
    ("synthetic days as text", {"syntheticData": {"days": "35"}}, "/syntheticData/days"),
    ("synthetic start not a date", {"syntheticData": {"start": "01/01/2026"}}, "/syntheticData/start"),
    ("synthetic typo'd key", {"syntheticData": {"enable": True}}, "/syntheticData"),
]


@pytest.mark.parametrize(("what", "values", "where"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_refuses_bad_values_saying_where(what: str, values: dict[str, Any], where: str) -> None:
    chart = load_chart()
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(chart.merge_values(values))
    assert where in str(caught.value), f"{what}: {caught.value}"
    # Rendering (helm install/template) refuses them too.
    with pytest.raises(helm.HelmError):
        chart.render(values, name="riskloop", namespace=NAMESPACE, is_install=True)


@pytest.mark.parametrize(
    "uri",
    ["s3://riskloop", "s3://riskloop/state", "s3://riskloop-prod.eu/a/b=c/d_e", "gs://team-bucket/riskloop/state"],
)
def test_schema_accepts_storage_roots(uri: str) -> None:
    chart = load_chart()
    chart.validate_schema(chart.merge_values({"s3": {"storageUri": uri}}))


def test_schema_accepts_every_values_file() -> None:
    chart = load_chart()
    for files in VALUES_FILES.values():
        chart.validate_schema(chart.merge_values(load_values(files)))


def test_env_files_hold_only_differences() -> None:
    """envs/*.yaml set nothing values.yaml already says (a copy would hide a later change of the default)."""
    defaults = load_chart().values
    for path in sorted((CHART_DIR / "envs").glob("*.yaml")):
        same = _same_leaves(yaml.safe_load(path.read_text()) or {}, defaults, "")
        assert not same, f"{path.name} repeats defaults: {same}"


def _same_leaves(over: Any, base: Any, where: str) -> list[str]:
    if isinstance(over, dict) and isinstance(base, dict):
        return [s for k, v in over.items() for s in _same_leaves(v, base.get(k), f"{where}.{k}")]
    return [where] if over == base else []


def test_values_files_exist_where_documented() -> None:
    assert (CHART_DIR / "envs" / "kind.yaml").is_file() and (CHART_DIR / "envs" / "cloud.yaml").is_file()
    assert Path(CHART_DIR / "templates" / "tests").is_dir()
