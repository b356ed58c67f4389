"""On kind: the chart is up, the landing data is under the storage root, the pipelines are published, training runs,
a canary is deployed, promoted, rolled back, and the predictor's prediction log lands under the storage root.

Needs Docker, kind, helm and kubectl (see conftest.py); `make test-e2e`. Not run where it was written.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from riskloop.version import image_tag
from tests.e2e.conftest import REPO, kubectl, port_forward

MODELS = "riskloop-models"
SERVICE = "fraud-detector"
# What each wait may take; every test's timeout is the sum of its own waits and counts only the test itself
# (func_only: the session's deploy fixture has its own timeout, DEPLOY_TIMEOUT_SECONDS).
TRAIN_TIMEOUT_SECONDS = 3600  # one training run on kind (KFP schedules, pulls, trains, evaluates, registers)
READY_TIMEOUT_SECONDS = 600  # an InferenceService revision becoming Ready
OTHER_TIMEOUT_SECONDS = 900  # compile, port-forwards, CLI calls, the prediction log's flush
pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(OTHER_TIMEOUT_SECONDS, func_only=True)]
CANARY_TIMEOUT_SECONDS = 2 * TRAIN_TIMEOUT_SECONDS + 3 * READY_TIMEOUT_SECONDS + OTHER_TIMEOUT_SECONDS
# Knative's route for the predictor, the host KServe reports as status.url with disableIstioVirtualHost (Kourier):
# the same host scripts/deploy.sh prints (model_host) and the README uses
PREDICTOR_HOST = f"{SERVICE}-predictor.{MODELS}.riskloop.local"
# the image as deploy.sh names it on kind (a registry Knative skips tag resolution for): the canary CLI builds the
# InferenceService from this process's riskloop.version.runtime_image()
KIND_IMAGE_REPOSITORY = "kind.local/riskloop"


def riskloop(*args: str, env: dict[str, str]) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "riskloop.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=900,
        cwd=REPO,
    )
    assert r.returncode == 0, f"riskloop {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def isvc() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl("get", "inferenceservice", SERVICE, "-n", MODELS, "-o", "json"))
    return found


def wait_ready(timeout_seconds: float = READY_TIMEOUT_SECONDS) -> dict[str, Any]:
    kubectl(
        "wait",
        f"inferenceservice/{SERVICE}",
        "-n",
        MODELS,
        "--for=condition=Ready",
        f"--timeout={int(timeout_seconds)}s",
        timeout=int(timeout_seconds) + 30,
    )
    return isvc()


def storage_root() -> tuple[str, str]:
    """(bucket, prefix) of RISKLOOP_STORAGE__URI as the predictor gets it from riskloop-config."""
    uri = kubectl("get", "configmap", "riskloop-config", "-n", MODELS, "-o", "jsonpath={.data.RISKLOOP_STORAGE__URI}")
    assert uri.startswith("s3://"), uri
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


@contextmanager
def object_store() -> Iterator[Any]:
    """A boto3 S3 client on KFP's object store (SeaweedFS since KFP 2.16, Service seaweedfs port 8333: the kind
    storage), with the riskloop-s3 Secret's keys."""
    import boto3
    from botocore.config import Config

    def key(name: str) -> str:
        return base64.b64decode(
            kubectl("get", "secret", "riskloop-s3", "-n", MODELS, "-o", f"jsonpath={{.data.{name}}}")
        ).decode()

    with port_forward("kubeflow", "seaweedfs", 8333) as url:
        yield boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=key("AWS_SECRET_ACCESS_KEY"),
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )  # behind a port-forward


def object_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_landing_data_covers_the_first_training_run() -> None:
    """The chart's synthetic-data Job (envs/kind.yaml) wrote a partition for every day the training defaults read."""
    from riskloop.pipelines.training import training_pipeline

    inputs = training_pipeline.component_spec.inputs
    day = datetime.date.fromisoformat(inputs["start_date"].default)
    end = datetime.date.fromisoformat(inputs["end_date"].default)
    bucket, prefix = storage_root()
    with object_store() as s3:
        keys = set(object_keys(s3, bucket, f"{prefix}/data/synthetic-fraud/transactions/"))
    missing = []
    while day <= end:
        if f"{prefix}/data/synthetic-fraud/transactions/date={day}/part-0.parquet" not in keys:
            missing.append(str(day))
        day += datetime.timedelta(days=1)
    assert not missing, f"no landing partition under s3://{bucket}/{prefix} for {missing}"


def predict(count: int) -> None:
    """``count`` V1 requests through Knative's ingress gateway (Kourier), by the InferenceService's host name."""
    host = urlsplit(isvc()["status"]["url"]).netloc
    assert host == PREDICTOR_HOST, f"status.url {host} is not the host Kourier routes (disableIstioVirtualHost)"
    with port_forward("kourier-system", "kourier", 80) as url:
        for i in range(count):
            body = {
                "instances": [
                    {
                        "transaction_id": f"e2e-{i}",
                        "card_id": "C000042",
                        "merchant_id": "M00017",
                        "amount": 42.5 + i,
                        "currency": "EUR",
                        "merchant_category": "grocery",
                        "channel": "pos",
                        "country": "DE",
                        "device_type": "terminal",
                        "distance_from_home_km": 3.2,
                        "card_age_days": 812,
                        "event_timestamp": "2026-01-30T10:15:00Z",
                    }
                ]
            }
            request = urllib.request.Request(
                f"{url}/v1/models/{SERVICE}:predict",
                data=json.dumps(body).encode(),
                headers={"Host": host, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200, response.read()


def test_helm_test_passes() -> None:
    subprocess.run(["helm", "test", "riskloop", "-n", "riskloop", "--timeout", "5m"], check=True, timeout=400)


def test_publish_job_uploaded_every_pipeline_at_the_image_tag() -> None:
    from kfp import Client

    with port_forward("kubeflow", "ml-pipeline", 8888) as url:
        client = Client(host=url)
        for stem in ("training", "features", "batch_scoring", "delivery", "monitoring"):
            pid = client.get_pipeline_id(f"riskloop-{stem}")
            assert pid, stem
            versions = client.list_pipeline_versions(pid, page_size=100).pipeline_versions or []
            assert image_tag() in {v.display_name for v in versions}, stem
        experiment = client.get_experiment(experiment_name="riskloop")
        runs = client.list_recurring_runs(experiment_id=experiment.experiment_id, page_size=100).recurring_runs
        assert {"feature-materialization", "monitoring"} <= {r.display_name for r in runs or []}


def _train(client: Any, kfp_url: str, seed: int) -> None:
    """One training run of the published version (riskloop cluster run), waited for."""
    out = riskloop(
        "cluster",
        "run",
        "--kfp-host",
        kfp_url,
        "--pipeline",
        "training",
        "--pipelines-dir",
        str(REPO / "build/pipelines"),
        "--param",
        f"seed={seed}",
        env={"RISKLOOP_IMAGE_REPOSITORY": KIND_IMAGE_REPOSITORY},
    )
    run_id = out.split("started run ", 1)[1].split()[0]
    result = client.wait_for_run_completion(run_id, timeout=TRAIN_TIMEOUT_SECONDS)
    assert result.state == "SUCCEEDED", f"training run {run_id} ended {result.state}"


@pytest.mark.timeout(CANARY_TIMEOUT_SECONDS, func_only=True)
def test_train_then_canary_promote_and_roll_back(tmp_path: Path) -> None:
    from kfp import Client

    subprocess.run(
        [sys.executable, "-m", "riskloop.cli", "compile", "--out", str(REPO / "build/pipelines")],
        check=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "RISKLOOP_IMAGE_REPOSITORY": KIND_IMAGE_REPOSITORY},
    )
    with (
        port_forward("kubeflow", "ml-pipeline", 8888) as kfp_url,
        port_forward("riskloop", "riskloop-mlflow", 5000) as mlflow_url,
    ):
        client = Client(host=kfp_url)
        _train(client, kfp_url, seed=1)  # champion (the first run of make deploy may still be going: this one is ours)
        _train(client, kfp_url, seed=2)  # a gated challenger
        env = {
            "RISKLOOP_IMAGE_REPOSITORY": KIND_IMAGE_REPOSITORY,
            "RISKLOOP_DELIVERY__TARGET": "kubernetes",
            "RISKLOOP_DELIVERY__NAMESPACE": MODELS,
            "RISKLOOP_MLFLOW__TRACKING_URI": mlflow_url,
            "RISKLOOP_STATE_DIR": str(tmp_path / "state"),
        }
        riskloop("canary", "deploy", "--challenger-alias", "challenger", "--canary-percent", "20", env=env)
        spec = wait_ready()["spec"]["predictor"]
        assert spec.get("canaryTrafficPercent") == 20
        riskloop("canary", "promote", "--reason", "e2e", env=env)
        time.sleep(5)
        assert wait_ready()["spec"]["predictor"].get("canaryTrafficPercent") in (None, 100)
        riskloop("canary", "restore", "--reason", "e2e rollback after promotion", env=env)
        status = wait_ready()
        assert status["status"]["conditions"], "the rolled-back service reports its conditions"

    # The predictor's prediction log is on the storage root, not in its pod: it flushes within seconds.
    predict(5)
    bucket, prefix = storage_root()
    with object_store() as s3:
        deadline = time.monotonic() + 120
        while not (logged := object_keys(s3, bucket, f"{prefix}/predictions/")) and time.monotonic() < deadline:
            time.sleep(5)
    assert any(k.endswith(".parquet") for k in logged), f"no prediction log under s3://{bucket}/{prefix}/predictions/"
