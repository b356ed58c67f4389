"""Cluster-side task settings (kfp-kubernetes): compiled into the IR's platform spec.

kfp.local ignores them, so the same pipeline runs locally; on the cluster every
step gets the platform configuration from the chart's ConfigMap, credentials
from existing Secrets, and resource requests.
"""

from kfp import dsl, kubernetes

CONFIG_MAP = "riskloop-config"  # rendered by the Helm chart: RISKLOOP_* settings
S3_SECRET = "riskloop-s3"  # created by the operator: object-store credentials and endpoint (MLflow and storage root)
DB_SECRET = "riskloop-db"  # created by the chart or the operator: PostgreSQL DSN for audit + MLflow


def on_cluster(task: dsl.PipelineTask, *, cpu: str = "500m", memory: str = "1G") -> dsl.PipelineTask:
    """Apply the platform settings every riskloop step needs on Kubernetes."""
    task.set_cpu_request(cpu).set_memory_request(memory)
    kubernetes.use_config_map_as_env(
        task,
        CONFIG_MAP,
        config_map_key_to_env={
            "RISKLOOP_MLFLOW__TRACKING_URI": "RISKLOOP_MLFLOW__TRACKING_URI",
            "RISKLOOP_FEAST__ONLINE_STORE": "RISKLOOP_FEAST__ONLINE_STORE",
            "RISKLOOP_FEAST__REDIS_CONNECTION": "RISKLOOP_FEAST__REDIS_CONNECTION",
            "RISKLOOP_AUDIT__BACKEND": "RISKLOOP_AUDIT__BACKEND",
            "RISKLOOP_STATE_DIR": "RISKLOOP_STATE_DIR",
            # what steps share (landing data, prediction log, monitoring state): the state dir is per pod
            "RISKLOOP_STORAGE__URI": "RISKLOOP_STORAGE__URI",
            # the tracking server's proxied artifacts live here: the delivery step gives KServe this path
            "RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION": "RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION",
            "RISKLOOP_DELIVERY__TARGET": "RISKLOOP_DELIVERY__TARGET",
            "RISKLOOP_DELIVERY__NAMESPACE": "RISKLOOP_DELIVERY__NAMESPACE",
            "RISKLOOP_DELIVERY__SERVICE_NAME": "RISKLOOP_DELIVERY__SERVICE_NAME",
            "RISKLOOP_DELIVERY__METRICS_SOURCE": "RISKLOOP_DELIVERY__METRICS_SOURCE",
            "RISKLOOP_DELIVERY__PROMETHEUS_URL": "RISKLOOP_DELIVERY__PROMETHEUS_URL",
        },
    )
    kubernetes.use_secret_as_env(
        task,
        S3_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
        },
    )
    kubernetes.use_secret_as_env(
        task,
        DB_SECRET,
        secret_key_to_env={
            # the audit table, and the SQL registry the feature server reads (both carry a password)
            "dsn": "RISKLOOP_AUDIT__POSTGRES_DSN",
            "feast-registry-uri": "RISKLOOP_FEAST__REGISTRY",
        },
    )
    kubernetes.set_image_pull_policy(task, "IfNotPresent")
    return task
