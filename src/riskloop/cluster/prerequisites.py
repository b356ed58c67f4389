"""Edits scripts/deploy.sh makes to objects of the prerequisites, as pure functions over JSON.

The deploy script pipes objects through ``python -m riskloop.cluster.prerequisites <command>``:

- ``s3-secret``: the ``riskloop-s3`` Secret as the model namespace needs it. Beside riskloop's keys
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``MLFLOW_S3_ENDPOINT_URL``) it gets the keys KServe's
  storage initializer reads (KServe v0.21 ``pkg/credentials``): a Secret is taken as S3 credentials only when
  it has ``awsSecretAccessKey``; the credentials come from ``awsAccessKeyID``/``awsSecretAccessKey`` and the
  endpoint from ``S3_ENDPOINT`` and ``S3_USE_HTTPS`` (or the Secret's ``serving.kserve.io/s3-*`` annotations).
  The service account's own annotations are read only with an IRSA role, so they are not used.
- ``kserve-ingress``: a JSON merge patch for KServe's ``inferenceservice-config`` that sets
  ``disableIstioVirtualHost: true`` in its ``ingress`` JSON (``{}`` when it is set already; KServe's controller
  reads the setting at start, so the script restarts it after a patch). With Kourier (no Istio) the
  InferenceService's top-level host has no route; with the flag KServe reports the predictor's Knative route as
  ``status.url``, which Kourier serves. Every other setting of the pinned KServe stays as installed.

Bad input raises ``ConfigError`` naming the key and the fix; the command exits 2.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from riskloop.errors import ConfigError

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
KSERVE_ACCESS_KEY = "awsAccessKeyID"
KSERVE_SECRET_KEY = "awsSecretAccessKey"
KSERVE_ENDPOINT = "S3_ENDPOINT"
KSERVE_USE_HTTPS = "S3_USE_HTTPS"
INGRESS_KEY = "ingress"
DISABLE_ISTIO_VIRTUAL_HOST = "disableIstioVirtualHost"


def storage_initializer_keys(data: Mapping[str, str]) -> dict[str, str]:
    """KServe's S3 keys derived from riskloop's (plain strings, not base64)."""
    missing = [k for k in S3_KEYS if not data.get(k)]
    if missing:
        raise ConfigError(
            f"Secret riskloop-s3 lacks {', '.join(missing)}",
            fix="create it with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and MLFLOW_S3_ENDPOINT_URL "
            "(README, 'Run on a cluster')",
        )
    endpoint = data["MLFLOW_S3_ENDPOINT_URL"]
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/") or url.query:
        raise ConfigError(
            f"MLFLOW_S3_ENDPOINT_URL {endpoint!r} is not an endpoint URL",
            where="Secret riskloop-s3",
            fix="use http(s)://host[:port], e.g. http://seaweedfs.kubeflow.svc.cluster.local:8333",
        )
    return {
        KSERVE_ACCESS_KEY: data["AWS_ACCESS_KEY_ID"],
        KSERVE_SECRET_KEY: data["AWS_SECRET_ACCESS_KEY"],
        KSERVE_ENDPOINT: url.netloc,  # host[:port], no scheme: KServe prefixes http:// or https://
        KSERVE_USE_HTTPS: "1" if url.scheme == "https" else "0",
    }


def storage_initializer_secret(secret: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """The Secret object (as ``kubectl get -o json`` gives it) with KServe's keys added, in ``namespace`` (default:
    its own); server fields dropped."""
    if secret.get("kind") != "Secret" or not isinstance(secret.get("data"), dict):
        raise ConfigError("expected a Secret with data (kubectl get secret riskloop-s3 -o json)")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    data.update(storage_initializer_keys(data))
    meta = secret.get("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": secret.get("type", "Opaque"),
        "metadata": {
            "name": meta.get("name", "riskloop-s3"),
            **({"namespace": namespace or meta["namespace"]} if namespace or "namespace" in meta else {}),
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


def kourier_ingress_patch(config_map: Mapping[str, Any]) -> dict[str, Any]:
    """Merge patch turning ``disableIstioVirtualHost`` on in ``inferenceservice-config``; ``{}`` if it is on."""
    if config_map.get("kind") != "ConfigMap" or INGRESS_KEY not in config_map.get("data", {}):
        raise ConfigError(
            "expected KServe's inferenceservice-config ConfigMap with an 'ingress' key",
            fix="install KServe first (kubectl -n kserve get configmap inferenceservice-config -o json)",
        )
    try:
        ingress = json.loads(config_map["data"][INGRESS_KEY])
    except json.JSONDecodeError as exc:
        raise ConfigError(f"inferenceservice-config's ingress is not JSON: {exc}") from exc
    if not isinstance(ingress, dict):
        raise ConfigError("inferenceservice-config's ingress is not a JSON object")
    if ingress.get(DISABLE_ISTIO_VIRTUAL_HOST) is True:
        return {}
    ingress[DISABLE_ISTIO_VIRTUAL_HOST] = True
    return {"data": {INGRESS_KEY: json.dumps(ingress, indent=2)}}


def _s3_secret(obj: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    return storage_initializer_secret(obj, namespace)


def _kserve_ingress(obj: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    return kourier_ingress_patch(obj)


COMMANDS = {"s3-secret": _s3_secret, "kserve-ingress": _kserve_ingress}
USAGE = "usage: python -m riskloop.cluster.prerequisites s3-secret [NAMESPACE] | kserve-ingress  < object.json"


def main(argv: list[str] | None = None) -> int:
    """JSON object on stdin, the result on stdout; 2 on bad input, saying why."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS or len(args) > (2 if args[0] == "s3-secret" else 1):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        obj = json.load(sys.stdin)
        print(json.dumps(COMMANDS[args[0]](obj, args[1] if len(args) > 1 else None)))
    except json.JSONDecodeError as exc:
        print(f"error: stdin is not a JSON object: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
