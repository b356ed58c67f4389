"""The loop on the node: landing data, training in a pod, the predictor serving a replayed day, the prediction log
on the object store, the monitoring pipeline in a pod reading it, and one request's lineage, every hop resolved.

Landing data and the training Job are the session fixtures of tests/cluster/loop.py. The predictor is the
Deployment tests/cluster/test_predictor.py generates from the InferenceService builder (imported, not copied).
What runs where: every riskloop step in a Job of the riskloop image in KFP's namespace (restricted); on the host,
``riskloop replay`` through ``kubectl port-forward`` on 127.0.0.1, and S3/MLflow clients reading what the pods wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from riskloop.pipelines.monitoring import monitoring_pipeline
from tests.cluster.conftest import (
    MODELS_NAMESPACE,
    PIPELINES_NAMESPACE,
    PLATFORM_NAMESPACE,
    ObjectStore,
    image_ref,
    kubectl_json,
)
from tests.cluster.crds import Crds, installed_crds  # noqa: F401  (fixture)
from tests.cluster.loop import (
    MATURITY_DAYS,
    MODEL,
    SPEC,
    TRAINING_DAYS,
    JobRun,
    Landing,
    environment,
    host_env,
    run_step_job,
    step_env,
)
from tests.cluster.test_predictor import (  # the predictor's Deployment and its fixtures, as that module builds them
    READY_TIMEOUT,
    api,  # noqa: F401  (fixture)
    build_isvc,
    credential_env,  # noqa: F401  (fixture)
    deployed,
    describe,
    pods_of,
    port_forward,
    predictor_deployment,
    refs,  # noqa: F401  (fixture)
    storage_container,  # noqa: F401  (fixture)
    wait_for,
)

REPLAYED = 300  # transactions of the served day sent through the predictor (enough for the monitor's minimum)
MONITOR_POLICY = {"min_current_rows": 100, "min_reference_rows": 100}
# the monitoring pipeline in a step pod: kfp.local as `riskloop run training` runs it (no CLI runs this one)
MONITOR_SCRIPT = """
import json, sys
from datetime import date
from riskloop.orchestration.local import run_monitoring
from riskloop.settings import Settings
day, training_days, maturity, policy = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
run = run_monitoring(Settings(), date.fromisoformat(day), spec=sys.argv[5], training_days=training_days,
                     maturity_days=maturity, deliver=False, policy=policy)
print(json.dumps({"monitoring_succeeded": run.succeeded, "seconds": round(run.seconds, 1), "error": run.error}))
sys.exit(0 if run.succeeded else 1)
"""


def enforces_restricted(namespace: str) -> bool:
    labels = kubectl_json("get", "namespace", namespace)["metadata"].get("labels", {})
    return bool(labels.get("pod-security.kubernetes.io/enforce") == "restricted")


def test_the_synthetic_data_job_lands_the_window_on_the_object_store(landing_data: Landing) -> None:
    assert landing_data.storage_uri.startswith("s3://")
    assert len(landing_data.days) >= TRAINING_DAYS + 1, landing_data.days  # a window and a day to serve
    assert enforces_restricted(PLATFORM_NAMESPACE)


def test_training_in_a_restricted_step_job_registers_a_champion(
    training_run: JobRun, trained_model: Mapping[str, str], object_store: ObjectStore, tmp_path: Path
) -> None:
    from riskloop.storage import location

    assert enforces_restricted(PIPELINES_NAMESPACE)
    # `riskloop run training`'s own report of the kfp.local run in the pod (the Job succeeding means it
    # exited 0): a line per step, then the summary; kfp.local's output goes to the run's log file
    logs = re.sub(r"\x1b\[[0-9;]*m", "", training_run.logs)  # no terminal: no colour, but be sure
    assert "training pipeline succeeded" in logs, logs[-3000:]
    for step in ("ingest", "validate", "build-training-set", "train", "evaluate", "gate", "register", "model-card"):
        assert re.search(rf"^\s*ok\s+{step}\s+[\d.]+s$", logs, re.MULTILINE), (step, logs[-3000:])
    assert re.search(r"registered\s*│\s*fraud-detector v\d+", logs), logs[-3000:]
    # the registered hash is the stored model's: what the storage initializer copies, the predictor checks
    with environment(host_env(object_store, tmp_path)):
        stored = (location(trained_model["storage_uri"]) / "model.ubj").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == trained_model["model_sha256"]
    assert int(trained_model["model_version"]) >= 1


def test_a_replayed_day_is_logged_monitored_and_traced(
    api: k8s.ApiClient,  # noqa: F811  (a fixture imported from tests.cluster)
    refs: dict[str, str],  # noqa: F811  (a fixture imported from tests.cluster)
    trained_model: Mapping[str, str],
    credential_env: list[dict[str, Any]],  # noqa: F811  (a fixture imported from tests.cluster)
    storage_container: dict[str, Any],  # noqa: F811  (a fixture imported from tests.cluster)
    landing_data: Landing,
    object_store: ObjectStore,
    images: list[str],
    tmp_path: Path,
    installed_crds: Crds,  # noqa: F811  (a fixture imported from tests.cluster)
) -> None:
    """The monitor step asks the API server which version the InferenceService serves (none here: the
    predictor is a Deployment), so KServe's CRD must be served; the champion alias answers."""
    from riskloop.serving.prediction_log import read_prediction_log
    from riskloop.storage import location

    served = landing_data.days[0] + timedelta(days=TRAINING_DAYS)  # the day after the training window
    assert served in landing_data.days
    env = host_env(object_store, tmp_path / "host-state")
    isvc = build_isvc(trained_model, refs["riskloop"])
    container = isvc["spec"]["predictor"]["containers"][0]
    deployment = predictor_deployment(
        isvc,
        name="predictor-loop",
        image=refs["storage-initializer"],
        credential_env=credential_env,
        storage_container=storage_container,
    )
    with deployed(api, deployment):
        pod = wait_for(
            lambda: next(
                (
                    p
                    for p in pods_of(api, deployment)
                    if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
                ),
                None,
            ),
            READY_TIMEOUT,
            "the predictor pod is not Ready",
            lambda: describe(api, deployment),
        )
        port = container["ports"][0]["containerPort"]
        with port_forward(MODELS_NAMESPACE, pod.metadata.name, port) as url:
            started = time.monotonic()
            replay = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "riskloop.cli",
                    "replay",
                    "--day",
                    served.isoformat(),
                    "--url",
                    url,
                    "--limit",
                    str(REPLAYED),
                    "--spec",
                    SPEC,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            sys.stderr.write(
                f"\nreplay of {served} ({REPLAYED} transactions): {time.monotonic() - started:.0f} s\n"
                f"{replay.stdout[-2000:]}\n"
            )
            assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]

        # the predictor's log reaches the storage root (it flushes every second)
        with environment(env):
            log_root = location(env["RISKLOOP_STORAGE__URI"]) / "predictions"

            def logged() -> Any:
                try:
                    rows = read_prediction_log(log_root)
                except Exception:  # not written yet: no partition under the prefix
                    return None
                day_rows = rows[rows["time"].dt.date == served] if len(rows) else rows
                return (day_rows,) if len(day_rows) >= REPLAYED else None  # a tuple: wait_for tests truth

            [rows] = wait_for(
                logged,
                120,
                f"{REPLAYED} rows of {served} in the prediction log under {log_root}",
                lambda: describe(api, deployment),
            )
    assert set(rows["model_version"].astype(str)) == {trained_model["model_version"]}, rows["model_version"].unique()

    # the monitoring pipeline in a step pod reads that log
    riskloop_image = image_ref(images, "riskloop")
    monitored = run_step_job(
        "monitoring",
        riskloop_image,
        [
            "python",
            "-c",
            MONITOR_SCRIPT,
            served.isoformat(),
            str(TRAINING_DAYS),
            str(MATURITY_DAYS),
            json.dumps(MONITOR_POLICY),
            SPEC,
        ],
        step_env(monitoring_pipeline, "exec-monitor"),
    )
    sys.stderr.write(f"monitoring Job: {monitored.seconds:.0f} s\n")
    assert '"monitoring_succeeded": true' in monitored.logs, monitored.logs[-3000:]
    from riskloop.monitoring.assessment import load_state

    with environment(env):
        state = load_state(location(env["RISKLOOP_STORAGE__URI"]) / "monitoring" / f"{MODEL}-state.json")
    mine = [d for d in state.history if d.day == served]
    assert mine and mine[-1].model_version == trained_model["model_version"], state.history

    # one request's lineage, resolved in a pod with the steps' access to MLflow, PostgreSQL and the object store
    request_id = str(rows["request_id"].iloc[0])
    traced = run_step_job(
        "lineage",
        riskloop_image,
        ["riskloop", "lineage", request_id, "--json"],
        step_env(monitoring_pipeline, "exec-monitor"),
    )
    start = traced.logs.find("{")
    assert start >= 0, traced.logs[-3000:]
    doc, _ = json.JSONDecoder().raw_decode(traced.logs[start:])
    # the pod has the image, not a git checkout: the code hop is "recorded" (the commit the run tagged, not checked
    # against a repository); the image hop checks the same commit against the image the run recorded
    not_ok = [
        (h["hop"], h["status"], h["note"], [c for c in h["checks"] if not c["ok"]])
        for m in doc["models"]
        for h in m["hops"]
        if h["status"] != "ok" and not (h["hop"] == "code" and h["status"] == "recorded")
    ]
    assert doc["request_id"] == request_id and doc["complete"] and doc["models"] and not not_ok, not_ok
