"""riskloop.cluster.prerequisites (what deploy.sh pipes KServe's objects through) and the multi-user KFP refusal.

KServe v0.21's storage initializer reads S3 credentials and endpoint from the keys of a Secret its service account
lists (pkg/credentials/service_account_credentials.go: a Secret counts as S3 only with awsSecretAccessKey;
pkg/credentials/s3/utils.go: S3_ENDPOINT / S3_USE_HTTPS from the Secret's annotations or data); with Kourier,
status.url is routable only with disableIstioVirtualHost.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from riskloop.cluster import prerequisites
from riskloop.errors import ConfigError, DeploymentError


def _secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "riskloop-s3", "namespace": "riskloop-models", "resourceVersion": "7", "uid": "x"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


KIND_KEYS = {
    "AWS_ACCESS_KEY_ID": "minio",
    "AWS_SECRET_ACCESS_KEY": "minio123",
    "MLFLOW_S3_ENDPOINT_URL": "http://seaweedfs.kubeflow.svc.cluster.local:8333",
}


def test_the_model_namespace_secret_gets_the_keys_kserve_reads() -> None:
    out = prerequisites.storage_initializer_secret(_secret(**KIND_KEYS))
    data = {k: base64.b64decode(v).decode() for k, v in out["data"].items()}
    assert data == {
        **KIND_KEYS,
        "awsAccessKeyID": "minio",
        "awsSecretAccessKey": "minio123",
        "S3_ENDPOINT": "seaweedfs.kubeflow.svc.cluster.local:8333",
        "S3_USE_HTTPS": "0",
    }
    assert out["metadata"] == {"name": "riskloop-s3", "namespace": "riskloop-models"}  # no server fields
    https = prerequisites.storage_initializer_keys(
        {**KIND_KEYS, "MLFLOW_S3_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com"}
    )
    assert (https["S3_ENDPOINT"], https["S3_USE_HTTPS"]) == ("s3.eu-west-1.amazonaws.com", "1")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}, "lacks MLFLOW_S3_ENDPOINT_URL"),
        ({**KIND_KEYS, "MLFLOW_S3_ENDPOINT_URL": "seaweedfs:8333"}, "is not an endpoint URL"),
        ({**KIND_KEYS, "MLFLOW_S3_ENDPOINT_URL": "http://seaweedfs:8333/riskloop"}, "is not an endpoint URL"),
    ],
)
def test_a_bad_secret_is_refused_saying_what_to_fix(data: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prerequisites.storage_initializer_keys(data)


def _ingress_config(ingress: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {"ingress": json.dumps(ingress), "deploy": '{"defaultDeploymentMode": "Knative"}'},
    }


def test_kserve_ingress_patch_turns_off_the_istio_virtual_host_only() -> None:
    installed = {
        "ingressGateway": "knative-serving/knative-ingress-gateway",
        "ingressDomain": "example.com",
        "urlScheme": "http",
        "disableIstioVirtualHost": False,
    }
    patch = prerequisites.kourier_ingress_patch(_ingress_config(installed))
    assert list(patch) == ["data"] and list(patch["data"]) == ["ingress"]  # the other keys are left alone
    assert json.loads(patch["data"]["ingress"]) == {**installed, "disableIstioVirtualHost": True}
    patched = _ingress_config({**installed, "disableIstioVirtualHost": True})
    assert prerequisites.kourier_ingress_patch(patched) == {}  # nothing to do: no controller restart


def test_the_command_line_exits_2_on_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"kind": "ConfigMap", "data": {}})))
    assert prerequisites.main(["kserve-ingress"]) == 2
    assert "install KServe first" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(_secret(**KIND_KEYS))))
    assert prerequisites.main(["s3-secret"]) == 0
    assert "awsSecretAccessKey" in json.loads(capsys.readouterr().out)["data"]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(_secret(**KIND_KEYS))))
    assert prerequisites.main(["s3-secret", "elsewhere"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["namespace"] == "elsewhere"
    assert prerequisites.main(["nope"]) == 2
    assert prerequisites.main(["kserve-ingress", "extra"]) == 2


class _MultiUserKfp(BaseHTTPRequestHandler):
    """What KFP's API server in multi-user mode answers a call without a user identity."""

    def do_GET(self) -> None:
        if self.path.startswith("/apis/v2beta1/healthz"):  # open, and it says which mode the server runs in
            self._send(200, {"multi_user": True, "pipeline_store": "database"})
            return
        self._send(
            401,
            {
                "error": "Request header error: there is no user identity header.",
                "code": 16,
                "message": "Request header error: there is no user identity header.",
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def multi_user_kfp() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _MultiUserKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_publishing_to_a_multi_user_kubeflow_says_only_standalone_kfp_is_supported(multi_user_kfp: str) -> None:
    from riskloop.orchestration.publish import connect

    with pytest.raises(DeploymentError, match=r"multi-user Kubeflow .*riskloop supports standalone KFP only"):
        connect(multi_user_kfp)


def test_an_unauthenticated_refusal_says_only_standalone_kfp_is_supported(multi_user_kfp: str) -> None:
    """A client that got past healthz (an older KFP, or a gateway in front) still hears why on the first call."""
    from kfp import Client

    from riskloop.orchestration.publish import _kfp_errors, read_state

    client = Client(host=multi_user_kfp, namespace="kubeflow")
    with (
        pytest.raises(DeploymentError, match="multi-user Kubeflow, and riskloop supports standalone KFP only"),
        _kfp_errors("reading pipelines"),
    ):
        read_state(client, [])
