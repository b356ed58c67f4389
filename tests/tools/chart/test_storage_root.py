"""The shared storage root on a cluster: every riskloop pod gets it, the predictor and the synthetic-data Job may reach
the object store, and the Job lands the data the first training run reads, with the CLI's own options."""

from __future__ import annotations

import datetime
import shlex
from typing import Any

import pytest

from tests.tools.chart.chart import (
    NAMESPACE,
    VALUES_FILES,
    ClusterSettings,
    find,
    load_chart,
    load_values,
    one,
    render_objects,
)
from tests.tools.chart.test_objects import restricted_violations

JOB = "riskloop-synthetic-data"
S3_MOUNT = "/var/run/secrets/riskloop/s3"


def _values(values_set: str) -> dict[str, Any]:
    return load_chart().merge_values(load_values(VALUES_FILES[values_set]))


def _job(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Job", JOB, NAMESPACE)


def _script(job: dict[str, Any]) -> str:
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["/bin/sh", "-c"] and len(c["args"]) == 1, c
    return str(c["args"][0])


def test_configmap_carries_the_storage_root(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """In every namespace a riskloop process runs in (steps, predictor, platform), for every values set."""
    for values_set, objs in objects_by_set.items():
        values = _values(values_set)
        namespaces = {NAMESPACE, values["namespaces"]["pipelines"]["name"], values["namespaces"]["models"]["name"]}
        for ns in namespaces:
            data = one(objs, "ConfigMap", "riskloop-config", ns)["data"]
            assert data["RISKLOOP_STORAGE__URI"] == values["s3"]["storageUri"], f"{values_set}: {ns}"
    assert _values("env-cloud")["s3"]["storageUri"] != _values("default")["s3"]["storageUri"]
    objs = render_objects({"s3": {"storageUri": "gs://team-bucket/riskloop/state"}})
    assert one(objs, "ConfigMap", "riskloop-config", NAMESPACE)["data"]["RISKLOOP_STORAGE__URI"] == (
        "gs://team-bucket/riskloop/state"
    )


def test_synthetic_data_job_renders_only_when_enabled(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    for values_set, objs in objects_by_set.items():
        enabled = _values(values_set)["syntheticData"]["enabled"]
        assert len(find(objs, "Job", JOB)) == int(enabled), values_set
        assert len(find(objs, "NetworkPolicy", JOB)) == int(enabled and _values(values_set)["networkPolicy"]["enabled"])
    assert not _values("default")["syntheticData"]["enabled"], "real data is the default: the demo data is opt-in"
    assert _values("env-kind")["syntheticData"]["enabled"], "the kind demo has no data of its own"


def test_synthetic_data_job_is_a_restricted_hook_reading_the_s3_secret(
    objects_by_set: dict[str, list[dict[str, Any]]], cluster_settings: ClusterSettings
) -> None:
    import riskloop.pipelines.cluster as cluster

    objs = objects_by_set["env-kind"]
    values = _values("env-kind")
    job = _job(objs)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    # it lands the data before the publish Job publishes and schedules the pipelines that read it
    publish = one(objs, "Job", "riskloop-publish", NAMESPACE)["metadata"]["annotations"]
    assert int(annotations["helm.sh/hook-weight"]) < int(publish["helm.sh/hook-weight"])
    # kept after success: scripts/deploy.sh waits for it before the first training run
    assert "hook-succeeded" not in annotations["helm.sh/hook-delete-policy"]

    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(f"Job/{JOB}", pod) == []
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert (sc["runAsNonRoot"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, True, False)
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert c["resources"] == values["syntheticData"]["resources"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/tmp"]] == {"name": mounts["/tmp"], "emptyDir": {}}
    assert c["envFrom"] == [{"configMapRef": {"name": cluster.CONFIG_MAP}}]

    # The object store's credentials: the operator's Secret, mounted read-only, every key the pipeline steps get
    # exported into the process (never a pod env var: checkov CKV_K8S_35).
    assert volumes[mounts[S3_MOUNT]]["secret"]["secretName"] == values["s3"]["existingSecret"] == cluster.S3_SECRET
    assert next(m for m in c["volumeMounts"] if m["mountPath"] == S3_MOUNT)["readOnly"] is True
    assert not [e for e in c.get("env", []) if "valueFrom" in e]
    script = _script(job)
    assert script.startswith("set -eu\n")
    keys = script.split("; do", 1)[0].removeprefix("set -eu\nfor key in ").split()
    assert cluster_settings.secrets[cluster.S3_SECRET] == {k: k for k in keys}
    assert f'export "$key=$(cat "{S3_MOUNT}/$key")"' in script


def _generate_params(job: dict[str, Any]) -> dict[str, Any]:
    """The Job's `riskloop data generate ...` line, parsed by the CLI's own (click) parser."""
    import typer

    from riskloop.cli import app

    line = _script(job).strip().splitlines()[-1]
    argv = shlex.split(line)
    assert argv[:4] == ["exec", "riskloop", "data", "generate"], line
    generate = typer.main.get_command(app).commands["data"].commands["generate"]  # type: ignore[attr-defined]
    with generate.make_context("generate", argv[4:]) as ctx:
        return dict(ctx.params)


def test_synthetic_data_job_runs_the_cli_with_the_values(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    data = _values("env-kind")["syntheticData"]
    params = _generate_params(_job(objects_by_set["env-kind"]))
    assert (params["start"], params["days"], params["seed"]) == (data["start"], data["days"], data["seed"])
    assert params["scenario"] == "none"
    objs = render_objects({"syntheticData": {"enabled": True, "start": "2025-12-01", "days": 90, "seed": 123456}})
    params = _generate_params(_job(objs))
    assert (params["start"], params["days"], params["seed"]) == ("2025-12-01", 90, 123456)


def _uncovered(job: dict[str, Any]) -> list[str]:
    """The training pipeline's default dates (scripts/deploy.sh's first training run uses them) the Job misses."""
    from riskloop.pipelines.training import training_pipeline

    defaults = {k: v.default for k, v in training_pipeline.component_spec.inputs.items()}
    params = _generate_params(job)
    first = datetime.date.fromisoformat(params["start"])
    last = first + datetime.timedelta(days=params["days"] - 1)
    return [
        f"{name}={defaults[name]}"
        for name in ("start_date", "end_date", "cutoff_date")
        if not first <= datetime.date.fromisoformat(defaults[name]) <= last
    ]


def test_synthetic_data_covers_the_first_training_run(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    assert _uncovered(_job(objects_by_set["env-kind"])) == []
    # test the test: the CLI's default 30 days stop before the label cutoff; a later start misses the first day
    short = render_objects({"syntheticData": {"enabled": True, "days": 30}})
    assert _uncovered(_job(short)) == ["cutoff_date=2026-01-31"]
    late = render_objects({"syntheticData": {"enabled": True, "start": "2026-01-02"}})
    assert _uncovered(_job(late)) == ["start_date=2026-01-01"]


def _s3_rule(values: dict[str, Any]) -> dict[str, Any]:
    egress = values["networkPolicy"]["s3Egress"]
    return {
        "to": [{"ipBlock": {"cidr": egress["cidr"]}}],
        "ports": [{"protocol": "TCP", "port": p} for p in egress["ports"]],
    }


@pytest.mark.parametrize("values_set", ["default", "env-kind", "env-cloud", "external-services"])
def test_predictor_and_data_job_may_reach_the_object_store(
    values_set: str, objects_by_set: dict[str, list[dict[str, Any]]]
) -> None:
    values = _values(values_set)
    objs = objects_by_set[values_set]
    models = values["namespaces"]["models"]["name"]
    predictor = one(objs, "NetworkPolicy", "riskloop-predictor", models)
    assert "Egress" in predictor["spec"]["policyTypes"]
    assert _s3_rule(values) in predictor["spec"]["egress"]
    # the model namespace denies everything else by default, and allows DNS (the object store's host name)
    one(objs, "NetworkPolicy", "riskloop-default-deny", models)
    dns = one(objs, "NetworkPolicy", "riskloop-dns", models)["spec"]
    assert dns["podSelector"] == {} and {"protocol": "UDP", "port": 53} in dns["egress"][0]["ports"]
    if values["syntheticData"]["enabled"]:
        policy = one(objs, "NetworkPolicy", JOB, NAMESPACE)["spec"]
        assert policy["podSelector"]["matchLabels"].items() <= (
            _job(objs)["spec"]["template"]["metadata"]["labels"].items()
        )
        assert policy["egress"] == [_s3_rule(values)] and "ingress" not in policy


def test_s3_rule_check_catches_a_missing_allow(objects_by_set: dict[str, list[dict[str, Any]]]) -> None:
    """Test the test: with the object store on another port, the rendered rule is not the one looked for."""
    values = _values("env-kind")
    predictor = one(
        objects_by_set["env-kind"], "NetworkPolicy", "riskloop-predictor", values["namespaces"]["models"]["name"]
    )
    moved = {
        **values,
        "networkPolicy": {**values["networkPolicy"], "s3Egress": {"cidr": "10.244.0.0/16", "ports": [9443]}},
    }
    assert _s3_rule(moved) not in predictor["spec"]["egress"]


def test_the_storage_initializer_fetches_models_with_the_s3_secret(
    objects_by_set: dict[str, list[dict[str, Any]]],
) -> None:
    """KServe's storage initializer takes credentials and endpoint from the Secrets its service account lists (KServe
    v0.21 pkg/credentials); the service account's own s3-* annotations are read only with an IRSA role, so the chart
    puts none there (they would only mislead). deploy.sh writes KServe's keys into that Secret (test_deploy_script)."""
    for values_set, objs in objects_by_set.items():
        values = _values(values_set)
        sa = one(
            objs, "ServiceAccount", values["predictor"]["serviceAccountName"], values["namespaces"]["models"]["name"]
        )
        assert {"name": values["s3"]["existingSecret"]} in sa["secrets"], values_set
        assert not any(k.startswith("serving.kserve.io/s3-") for k in sa["metadata"].get("annotations", {}))
