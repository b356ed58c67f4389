"""The chart, the compiled pipelines' settings (pipelines/cluster.py) and the delivery code agree on names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

import riskloop.version as version
from riskloop.delivery import inference_service as isvc
from riskloop.delivery.rbac import KFP_SERVICE_ACCOUNT, delivery_rbac
from riskloop.settings import DeliverySettings, Settings
from tests.tools.chart.chart import (
    CHART_DIR,
    NAMESPACE,
    ROOT,
    ClusterSettings,
    find,
    load_chart,
    objects,
    one,
    pod_specs,
    render,
)

MONITORING = CHART_DIR / "files" / "monitoring"
RISKLOOP_CONTAINERS = {"mlflow", "feast", "publish", "check"}


def _config(objs: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    return one(objs, "ConfigMap", "riskloop-config", namespace)["data"]


def test_configmap_has_every_key_the_pipelines_read(
    cluster_settings: ClusterSettings, objects_by_set: dict[str, list[dict[str, Any]]]
) -> None:
    import riskloop.pipelines.cluster as cluster

    wanted = set(cluster_settings.config_maps[cluster.CONFIG_MAP])
    assert wanted, "pipelines/cluster.py maps no ConfigMap keys"
    # what the steps share lives under the storage root: every step needs it, not only the state dir of its pod
    assert {"RISKLOOP_STORAGE__URI", "RISKLOOP_STATE_DIR"} <= wanted
    # the delivery step maps the tracking server's mlflow-artifacts:/ URIs onto the object store for KServe
    assert "RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION" in wanted
    for values_set, objs in objects_by_set.items():
        values = load_chart().merge_values(_user_values(values_set))
        for ns in (values["namespaces"]["pipelines"]["name"], NAMESPACE, values["namespaces"]["models"]["name"]):
            missing = wanted - set(_config(objs, ns))
            assert not missing, f"{values_set}: riskloop-config in {ns} lacks {sorted(missing)}"


def test_secret_names_are_the_pipelines(
    cluster_settings: ClusterSettings, default_objects: list[dict[str, Any]]
) -> None:
    import riskloop.pipelines.cluster as cluster

    values = load_chart().values
    assert values["s3"]["existingSecret"] == cluster.S3_SECRET
    assert set(cluster_settings.secrets[cluster.S3_SECRET]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL",
    }
    assert values["postgresql"]["secretName"] == cluster.DB_SECRET
    db_keys = set(cluster_settings.secrets[cluster.DB_SECRET])
    for ns in (NAMESPACE, values["namespaces"]["pipelines"]["name"]):
        assert db_keys <= set(one(default_objects, "Secret", cluster.DB_SECRET, ns)["stringData"])
    # the predictor's InferenceService reads the Feast registry URL from the same Secret in the model namespace
    spec = isvc.InferenceServiceParams.model_fields
    assert spec["db_secret"].default == cluster.DB_SECRET
    secret = one(default_objects, "Secret", cluster.DB_SECRET, values["namespaces"]["models"]["name"])
    assert isvc.FEAST_REGISTRY_KEY in secret["stringData"]
    assert cluster_settings.secrets[cluster.DB_SECRET][isvc.FEAST_REGISTRY_KEY] == isvc.ENV_FEAST_REGISTRY
    # ... and the object store's credentials from the S3 Secret, the same keys as every pipeline step, by the same name
    assert spec["s3_secret"].default == cluster.S3_SECRET
    assert cluster_settings.secrets[cluster.S3_SECRET] == {k: k for k in isvc.S3_SECRET_KEYS}


def test_configmap_is_a_valid_settings(
    objects_by_set: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key is a Settings field (extra=forbid) and the values land where the delivery code looks."""
    for values_set, objs in objects_by_set.items():
        data = _config(objs, NAMESPACE)
        with monkeypatch.context() as m:
            for key in [k for k in os.environ if k.startswith("RISKLOOP_")]:
                m.delenv(key)
            for key, value in data.items():
                assert key.startswith("RISKLOOP_"), key
                m.setenv(key, value)
            s = Settings()
        values = load_chart().merge_values(_user_values(values_set))
        assert s.delivery.target == "kubernetes" and s.audit.backend == "postgres", values_set
        assert s.feast.online_store == "redis"
        assert s.delivery.namespace == values["namespaces"]["models"]["name"]
        assert s.mlflow.tracking_uri and s.mlflow.tracking_uri.startswith("http://riskloop-mlflow.")
        assert s.image == data["RISKLOOP_IMAGE"]
        assert s.storage.uri == values["s3"]["storageUri"], values_set


def test_bad_settings_key_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test the test: Settings refuses a RISKLOOP_ key it does not know."""
    monkeypatch.setenv("RISKLOOP_DELIVERY__NAMESPCE", "x")
    with pytest.raises(ValueError, match=r"NAMESPCE|namespce"):
        Settings()


def test_defaults_agree_with_delivery_code(default_objects: list[dict[str, Any]]) -> None:
    values = load_chart().values
    spec_defaults = {name: f.default for name, f in isvc.InferenceServiceParams.model_fields.items()}
    models_ns = values["namespaces"]["models"]["name"]
    assert models_ns == DeliverySettings().namespace
    assert values["config"]["serviceName"] == DeliverySettings().service_name
    assert values["config"]["modelName"] == spec_defaults["model_name"]
    assert values["predictor"]["serviceAccountName"] == spec_defaults["service_account"]
    assert values["predictor"]["port"] == spec_defaults["port"]
    assert values["namespaces"]["pipelines"]["serviceAccount"] == KFP_SERVICE_ACCOUNT
    # The objects the predictor's InferenceService refers to exist in its namespace.
    sa = one(default_objects, "ServiceAccount", spec_defaults["service_account"], models_ns)
    assert sa["automountServiceAccountToken"] is False
    one(default_objects, "ConfigMap", spec_defaults["config_map"], models_ns)


def test_predictor_selectors_match_the_inference_service_labels(default_objects: list[dict[str, Any]]) -> None:
    params = isvc.InferenceServiceParams(
        name="fraud-detector",
        namespace="riskloop-models",
        image="r/riskloop:0.1.0-abc1234",
        storage_uri="s3://b/m",
        model_sha256="0" * 64,
        spec_sha256="1" * 64,
        model_version="3",
    )
    manifest = isvc.build_inference_service(params)
    labels = manifest["metadata"]["labels"]
    container = manifest["spec"]["predictor"]["containers"][0]
    models_ns = params.namespace
    metrics = one(default_objects, "Service", "riskloop-predictor-metrics", models_ns)
    assert metrics["spec"]["selector"].items() <= labels.items()
    assert metrics["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]
    policy = one(default_objects, "NetworkPolicy", "riskloop-predictor", models_ns)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert {"port": container["ports"][0]["containerPort"], "protocol": "TCP"} in policy["spec"]["ingress"][1]["ports"]
    assert manifest["spec"]["predictor"]["serviceAccountName"] == "riskloop-predictor"
    assert {"configMapRef": {"name": "riskloop-config"}} in container["envFrom"]
    # the S3 Secret it reads is the one the chart tells the operator to create in the model namespace
    s3_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if e["name"] in isvc.S3_SECRET_KEYS}
    assert s3_refs == {load_chart().values["s3"]["existingSecret"]}
    # Who may reach the predictor's stores: the allows name its pods by the same labels.
    for component in ("redis", "mlflow"):
        peers = [
            p
            for r in one(default_objects, "NetworkPolicy", f"riskloop-{component}", NAMESPACE)["spec"]["ingress"]
            for p in r["from"]
        ]
        assert any(
            p.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items() and "podSelector" in p
            for p in peers
        ), component


@pytest.mark.parametrize("values_set", ["default", "external-services"])
def test_role_is_delivery_rbac(values_set: str, objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    values = load_chart().merge_values(_user_values(values_set))
    role, binding = delivery_rbac(
        values["namespaces"]["models"]["name"],
        values["namespaces"]["pipelines"]["name"],
        values["namespaces"]["pipelines"]["serviceAccount"],
    )
    objs = objects_by_set[values_set]
    for expected in (role, binding):
        rendered = one(objs, expected["kind"], expected["metadata"]["name"], expected["metadata"]["namespace"])
        # The chart adds its standard labels; everything else is identical.
        assert expected["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
        strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "labels"}}  # noqa: E731
        assert strip(rendered) == strip(expected)
    assert len(find(objs, "Role")) == 1 and not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")


def test_schedules_and_publish_job_follow_the_contract(default_objects: list[dict[str, Any]]) -> None:
    values = load_chart().values
    cm = one(default_objects, "ConfigMap", "riskloop-schedules", NAMESPACE)
    schedules = yaml.safe_load(cm["data"]["schedules.yaml"])
    assert schedules == values["schedules"]
    assert {(s["pipeline"], s["enabled"]) for s in schedules} >= {
        ("features", True),
        ("monitoring", True),
        ("retrain", False),
    }
    pipelines = {p.stem for p in (ROOT / "pipelines").glob("*.py")} - {"__init__", "cluster"}
    enum = set(
        json.loads((CHART_DIR / "values.schema.json").read_text())["$defs"]["schedule"]["properties"]["pipeline"][
            "enum"
        ]
    )
    assert enum == pipelines
    job = one(default_objects, "Job", "riskloop-publish", NAMESPACE)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] + c["args"] == [
        "riskloop",
        "cluster",
        "publish",
        "--kfp-host",
        values["kfp"]["host"],
        "--pipelines-dir",
        "/opt/riskloop/pipelines",
        "--schedules",
        "/etc/riskloop/schedules/schedules.yaml",
    ]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/riskloop/schedules")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "riskloop-schedules"


def test_monitoring_files_are_templated_unchanged(
    default_objects: list[dict[str, Any]], objects_by_set: dict[str, list[dict[str, Any]]]
) -> None:
    # kind-bundled renders the operator's kinds as `helm template --api-versions monitoring.coreos.com/v1` would
    rule = one(objects_by_set["kind-bundled"], "PrometheusRule", "riskloop-alerts", NAMESPACE)
    assert rule["spec"] == yaml.safe_load((MONITORING / "riskloop-alerts.rules.yaml").read_text())
    assert rule["spec"] == yaml.safe_load((MONITORING / "riskloop-alerts.prometheusrule.yaml").read_text())["spec"]
    assert rule["metadata"]["labels"]["release"] == load_chart().values["monitoring"]["labels"]["release"]
    dashboard = one(default_objects, "ConfigMap", "riskloop-dashboard", NAMESPACE)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["riskloop-dashboard.json"]) == json.loads(
        (MONITORING / "riskloop-dashboard.json").read_text()
    )


def _riskloop_images(objs: list[dict[str, Any]]) -> list[str]:
    images = [c["image"] for _, spec in pod_specs(objs) for c in spec["containers"] if c["name"] in RISKLOOP_CONTAINERS]
    assert len(images) == len(RISKLOOP_CONTAINERS), images
    return images


def test_image_tag_value_reaches_every_riskloop_container() -> None:
    objs = objects(render({"image": {"tag": "9.9.9-feedbee"}}))
    repository = load_chart().values["image"]["repository"]
    assert set(_riskloop_images(objs)) == {f"{repository}:9.9.9-feedbee"}
    assert _config(objs, NAMESPACE)["RISKLOOP_IMAGE"] == f"{repository}:9.9.9-feedbee"
    digest = "sha256:" + "ab" * 32
    objs = objects(render({"image": {"tag": "9.9.9-feedbee", "digest": digest}}))
    assert set(_riskloop_images(objs)) == {f"{repository}@{digest}"}


def test_default_image_is_the_runtime_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With appVersion = version.image_tag() and no tag, the chart's image is riskloop.version.runtime_image()."""
    monkeypatch.delenv("RISKLOOP_IMAGE", raising=False)
    assert load_chart().values["image"]["repository"] == version.IMAGE_REPOSITORY
    archive = helm.package(CHART_DIR, destination=tmp_path, app_version=version.image_tag())
    with helm.Chart.load(archive) as chart:
        assert chart.metadata["appVersion"] == version.image_tag()
        objs = objects(render({}, chart=chart))
    assert set(_riskloop_images(objs)) == {version.runtime_image()}


def _user_values(values_set: str) -> dict[str, Any]:
    from tests.tools.chart.chart import VALUES_FILES, load_values

    return load_values(VALUES_FILES[values_set])


def test_rendered_schedules_parse_with_the_publisher(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """The file the chart renders is what `riskloop cluster publish --schedules` accepts (its own parser)."""
    from riskloop.orchestration.schedules import parse_schedules

    for values_set, objs in objects_by_set.items():
        text = one(objs, "ConfigMap", "riskloop-schedules", NAMESPACE)["data"]["schedules.yaml"]
        parsed = parse_schedules(text, source=f"{values_set} schedules.yaml")
        assert [s.name for s in parsed] == [s["name"] for s in yaml.safe_load(text) or []]
