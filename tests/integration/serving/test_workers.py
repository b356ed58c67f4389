"""Several worker processes: metrics aggregate across them, every worker's prediction log is flushed."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from riskloop.serving.prediction_log import read_prediction_log
from tests.integration.serving.conftest import MODEL, Trained, instance, start_server


def test_two_workers_aggregate_metrics_and_flush_logs(trained: Trained) -> None:
    s = trained.settings
    before = len(read_prediction_log(s.predictions))
    srv = start_server(s, "--model-alias", "champion", "--workers", "2")
    n = 40
    try:
        with httpx.Client(timeout=30) as client:  # new connections spread over the workers
            for i, (_, row) in enumerate(trained.held_out.head(n).iterrows()):
                r = client.post(
                    f"{srv.url}/v1/models/{MODEL}:predict",
                    json={"instances": [instance(row) | {"transaction_id": f"W-{i}"}]},
                    headers={"connection": "close"},
                )
                assert r.status_code == 200, r.text
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{srv.url}/metrics").text)}
        ok = sum(
            smp.value
            for smp in families["riskloop_requests"].samples
            if smp.name == "riskloop_requests_total" and smp.labels.get("outcome") == "ok"
        )
        assert ok == n  # one scrape sees both workers' counts
    finally:
        assert srv.stop() == 0
    after = read_prediction_log(s.predictions)
    assert len(after) - before == n
    assert {f"W-{i}" for i in range(n)} <= set(after["transaction_id"])
