"""The real model server process on loopback: protocols, readiness, metrics, prediction log, skew."""

from __future__ import annotations

import contextlib
import math
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from riskloop.serving.prediction_log import read_prediction_log
from tests.integration.serving.conftest import (
    HELD_OUT,
    MODEL,
    Server,
    Trained,
    instance,
    redis_online_store,
    start_server,
)


def predict(server: Server, instances: list[dict[str, object]], **extra: object) -> httpx.Response:
    return server.client.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": instances, **extra})


def test_v1_scores_with_threshold_version_and_request_id(server: Server, trained: Trained) -> None:
    rows = [instance(r) for _, r in trained.held_out.head(3).iterrows()]
    r = predict(server, rows, explain=True)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["transaction_id"] for p in preds] == [x["transaction_id"] for x in rows]
    for p in preds:
        assert 0.0 <= p["score"] <= 1.0
        assert p["fraud"] == (p["score"] >= p["threshold"])
        assert p["model_version"] == "1" and p["request_id"]
        assert len(p["explanation"]) == 5 and {"feature", "contribution"} <= set(p["explanation"][0])


def test_v2_open_inference_protocol(server: Server, trained: Trained) -> None:
    rows = [instance(r) for _, r in trained.held_out.iloc[3:5].iterrows()]
    types = {str: "BYTES", float: "FP64", int: "INT64"}
    inputs = [
        {"name": k, "shape": [len(rows)], "datatype": types[type(v)], "data": [x[k] for x in rows]}
        for k, v in rows[0].items()
    ]
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json={"inputs": inputs}, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert len(out["score"]["data"]) == 2 and all(0 <= s <= 1 for s in out["score"]["data"])
    assert out["transaction_id"]["data"] == [x["transaction_id"] for x in rows]


def test_unknown_card_gets_defaults_flagged_and_counted(server: Server, trained: Trained) -> None:
    row = instance(trained.held_out.iloc[0]) | {"card_id": "C_NEVER_SEEN", "transaction_id": "TX-UNKNOWN"}
    r = predict(server, [row])
    assert r.status_code == 200 and r.json()["predictions"][0]["unknown_card"] is True
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert (
        'riskloop_unknown_entities_total{entity="card"' in metrics.replace(", ", ",")
        or "riskloop_unknown_entities_total" in metrics
    )


def test_metrics_carry_names_and_labels(server: Server, trained: Trained) -> None:
    predict(server, [instance(trained.held_out.iloc[6])])
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    for name in (
        "riskloop_requests",
        "riskloop_request_duration_seconds",
        "riskloop_stage_duration_seconds",
        "riskloop_score_ratio",
        "riskloop_instances",
    ):
        assert name in families, sorted(families)
    ok = [
        s
        for s in families["riskloop_requests"].samples
        if s.name == "riskloop_requests_total" and s.labels.get("outcome") == "ok"
    ]
    assert ok and ok[0].labels["role"] == "champion" and ok[0].labels["model_version"] == "1"
    stages = {s.labels["stage"] for s in families["riskloop_stage_duration_seconds"].samples if "stage" in s.labels}
    assert {"features", "predict", "push"} <= stages


@pytest.mark.parametrize("inherited", [False, True])
def test_metrics_of_a_record_following_server_count_its_requests(
    trained: Trained, inherited: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server that follows the deployment record (``make run``'s) counts in /metrics, whether its process
    starts without ``PROMETHEUS_MULTIPROC_DIR`` (a shell; Feast's import then sets it to a temporary directory
    of its own while the server runs) or with it set by someone else (inherited from a parent that imported
    Feast). A server that took that variable for a sign to aggregate worker files showed an empty /metrics in
    the first case, and ``make run``'s canary analysis waited for requests it never saw."""
    if inherited:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    else:  # this test process imported Feast, which set it: a server started from a shell has none
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        monkeypatch.delenv("PROMETHEUS_MULTIPROCESS_DIR", raising=False)
    srv = start_server(trained.settings)
    try:
        for i in range(3):
            assert predict(srv, [instance(trained.held_out.iloc[20 + i])]).status_code == 200
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
        counted = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "riskloop_requests_total" and s.labels.get("model") == MODEL
        )
        assert counted >= 3, text[:2000]
    finally:
        srv.stop()


def test_nothing_listens_beyond_loopback(server: Server) -> None:
    proc = psutil.Process(server.process.pid)
    listening = [
        c
        for p in [proc, *proc.children(recursive=True)]
        for c in p.connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the server listens somewhere"
    assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in listening), listening


def test_corrupt_model_never_reports_ready(trained: Trained, tmp_path: pytest.TempPathFactory) -> None:
    import shutil
    import subprocess
    import sys

    from riskloop.registry.mlflow_registry import download_model_dir, version_by_alias

    s = trained.settings
    info = version_by_alias(s.tracking_uri, MODEL, "champion")
    assert info is not None
    d = download_model_dir(s.tracking_uri, info.run_id)
    data = bytearray((d / "model.ubj").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.ubj").write_bytes(bytes(data))
    env = {"RISKLOOP_STATE_DIR": str(s.root), "RISKLOOP_EXPECTED_MODEL_SHA256": info.tags["model_sha256"]}
    import os

    r = subprocess.run(
        [sys.executable, "-m", "riskloop.cli", "serve", "--model-dir", str(d), "--port", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert r.returncode == 2 and "does not match" in r.stderr + r.stdout
    shutil.rmtree(d.parent, ignore_errors=True)


@pytest.mark.parametrize("tamper", ["edited", "deleted"])
def test_a_model_directory_without_its_versions_spec_is_refused(trained: Trained, tamper: str) -> None:
    """The InferenceService passes the version's spec hash: an edited or missing dataset_spec.yaml fails closed."""
    import os
    import shutil
    import subprocess
    import sys

    from riskloop.registry.mlflow_registry import SPEC_FILE, SPEC_SHA256_TAG, download_model_dir, version_by_alias

    s = trained.settings
    info = version_by_alias(s.tracking_uri, MODEL, "champion")
    assert info is not None
    d = download_model_dir(s.tracking_uri, info.run_id)
    spec_file = d / SPEC_FILE
    if tamper == "edited":
        spec_file.write_text(
            spec_file.read_text().replace("require_approval: false", "require_approval: true") + "\n# edited\n"
        )
    else:
        spec_file.unlink()
    env = {
        "RISKLOOP_STATE_DIR": str(s.root),
        "RISKLOOP_EXPECTED_MODEL_SHA256": info.tags["model_sha256"],
        "RISKLOOP_EXPECTED_SPEC_SHA256": info.tags[SPEC_SHA256_TAG],
    }
    # what the predictor pod runs (the InferenceService's container command)
    r = subprocess.run(
        [sys.executable, "-m", "riskloop.serving", "--model-dir", str(d), "--port", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    shutil.rmtree(d.parent, ignore_errors=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("missing" if tamper == "deleted" else "the version records") in r.stdout + r.stderr


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_no_skew_between_served_and_training_features(trained: Trained, store: str) -> None:
    """Replay the held-out day in time order; every served feature vector equals the training code's, with the
    local sqlite online store and with Redis (the cluster's)."""
    from riskloop import steps
    from riskloop.model import load_model, matrix

    s = trained.settings
    day = trained.held_out.head(400)
    mine: list[str] = []
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if store == "redis":
            _, env = stack.enter_context(redis_online_store(s, "redis-skew"))
        else:  # other tests of the session replay the same day: start from the online store as of the day's start
            steps.materialize(HELD_OUT, 30, s)
        srv = start_server(s, "--model-alias", "champion", env=env)
        try:
            for start in range(0, len(day), 1):  # one transaction per request, in event-time order
                r = predict(srv, [instance(day.iloc[start])])
                assert r.status_code == 200, r.text
                mine.append(r.json()["predictions"][0]["request_id"])
        finally:
            assert srv.stop() == 0
    # this test's own predictions, by request id: other tests of the session log the same transactions
    # (the monitoring-loop test with shifted amounts), and the log's file order is not the order of writing
    logged = read_prediction_log(s.predictions)
    logged = logged[logged["request_id"].isin(mine)]
    assert len(logged) == len(day) and logged["transaction_id"].is_unique
    # the training pipeline's code on the same transactions: a training set whose cutoff includes the day
    w = s.root / "skew"
    steps.build_training_set(
        "synthetic-fraud", s.root / "work/valid.parquet", "2026-01-15", 0.0, 1.0, 1.0, 0, w / "ts.parquet", s
    )
    frame = pd.read_parquet(w / "ts.parquet").set_index("transaction_id").loc[day["transaction_id"]]
    bundle = load_model(s.root / "work/model")
    offline = matrix(frame.reset_index(), bundle.features)
    served = (
        logged.set_index("transaction_id")
        .loc[day["transaction_id"], [f"feature_{n}" for n in bundle.features.names]]
        .to_numpy()
    )
    assert served.shape == offline.shape
    both_nan = np.isnan(served) & np.isnan(offline)
    close = np.isclose(served, offline, rtol=1e-5, atol=1e-4)  # float32 model inputs on both sides
    bad = ~(both_nan | close)
    where = [
        (day["transaction_id"].iloc[i], bundle.features.names[j], served[i, j], offline[i, j])
        for i, j in zip(*np.nonzero(bad), strict=True)
    ][:10]
    assert not bad.any(), where


def test_prediction_log_holds_exactly_n_rows_after_shutdown(trained: Trained) -> None:
    s = trained.settings
    before = len(read_prediction_log(s.predictions))
    srv = start_server(s, "--model-alias", "champion")
    rows = [instance(r) | {"transaction_id": f"N-{i}"} for i, (_, r) in enumerate(trained.held_out.head(25).iterrows())]
    try:
        for i in range(0, 25, 5):
            assert predict(srv, rows[i : i + 5]).status_code == 200
    finally:
        assert srv.stop() == 0
    after = read_prediction_log(s.predictions)
    assert len(after) - before == 25
    assert set(after["transaction_id"]) >= {f"N-{i}" for i in range(25)}
    assert math.isclose(after["score"].max(), after["score"].max())


def test_replay_sends_a_landed_day_and_says_what_came_back(server: Server, trained: Trained) -> None:
    """`riskloop replay`: the demo's traffic on a cluster; here against the local server, with a Host header."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RISKLOOP_STATE_DIR": str(trained.settings.root), "COLUMNS": "200"}

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "riskloop.cli", "replay", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    before = len(read_prediction_log(trained.settings.predictions))
    done = replay(
        "--day",
        HELD_OUT,
        "--url",
        server.url,
        "--limit",
        "40",
        "--batch-size",
        "16",
        "--host-header",
        f"{MODEL}.riskloop-models.example.com",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"transactions\s+│\s+40\s", done.stdout) and "200: 3" in done.stdout, done.stdout  # 16+16+8
    sent = [r["transaction_id"] for r in instances_of(trained, 40)]
    deadline = time.monotonic() + 30  # the server writes its log within a second or so
    while time.monotonic() < deadline:
        log = read_prediction_log(trained.settings.predictions)
        if len(log) - before >= 40:
            break
        time.sleep(0.5)
    assert set(sent) <= set(log["transaction_id"])

    for args, says in (
        (("--day", "2026-02-30"), "is not a date"),
        (("--day", "2025-06-01"), "no partitions"),
        (("--day", HELD_OUT, "--url", "localhost:8080"), "not an http(s) URL"),
    ):
        bad = replay(*args)
        assert bad.returncode == 2 and says in bad.stderr and "how to fix" in bad.stderr, (args, bad.stderr)
    unreachable = replay("--day", HELD_OUT, "--url", "http://127.0.0.1:9", "--limit", "5")
    assert unreachable.returncode == 1 and "no answer: 1" in unreachable.stdout


def instances_of(trained: Trained, n: int) -> list[dict[str, object]]:
    """The first ``n`` held-out transactions in the order `riskloop replay` sends them."""
    from riskloop.data.spec import load_spec
    from riskloop.serving.replay import day_instances

    return day_instances(trained.settings, load_spec("synthetic-fraud"), pd.Timestamp(HELD_OUT).date())[:n]
