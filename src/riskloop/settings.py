"""One typed configuration for riskloop, built at entrypoints only.

Values come from environment variables with the ``RISKLOOP_`` prefix; nested
sections use ``__`` (e.g. ``RISKLOOP_MLFLOW__TRACKING_URI``). On a cluster the
Helm chart sets these variables; locally the defaults put all state under
``.riskloop/`` in the working directory. Nothing here does I/O at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from riskloop import __version__


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowSettings(_Section):
    """Tracking server and model registry."""

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite under the state dir."
    )
    registry_uri: str | None = Field(default=None, description="Registry URI; default = tracking.")
    experiment: str = "riskloop"
    model_name: str = "fraud-detector"


class FeastSettings(_Section):
    """Feature store locations (used to fill ``feature_store.yaml`` placeholders)."""

    repo_path: Path | None = Field(default=None, description="Feast repo; default the shipped one.")
    online_store: str = Field(default="sqlite", description="sqlite | redis")
    redis_connection: str = "127.0.0.1:6379"
    registry: str | None = Field(default=None, description=(
        "SQL registry URL (e.g. postgresql+psycopg://user:pw@host/feast), shared with the feature server on a "
        "cluster; default: a registry file in the state dir"))


class AuditSettings(_Section):
    """Audit log backend."""

    backend: str = Field(default="file", description="file | postgres")
    postgres_dsn: str | None = None
    actor: str = Field(default="riskloop", description="Who is recorded as acting.")
    require_approval: bool = False


class ServingSettings(_Section):
    """Local model server."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    workers: int = 1


class DeliverySettings(_Section):
    """Where the delivery steps act and where canary analysis reads its metrics."""

    target: str = Field(default="local", description="local (deployment record) | kubernetes (InferenceService)")
    namespace: str = Field(default="riskloop-models", description="Namespace of the InferenceService.")
    service_name: str = Field(default="fraud-detector", description="Name of the InferenceService.")
    metrics_source: str = Field(default="scrape", description="scrape (the server's /metrics) | prometheus")
    server_url: str = Field(default="http://127.0.0.1:8080", description="Model server scraped by `scrape`.")
    prometheus_url: str = Field(default="http://127.0.0.1:9090", description="Prometheus HTTP API.")


class Settings(BaseSettings):
    """Where riskloop runs: paths, endpoints, names. What a run does is a pipeline parameter."""

    model_config = SettingsConfigDict(
        env_prefix="RISKLOOP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    state_dir: Path = Field(default=Path(".riskloop"), description="All local state lives here.")
    image: str = Field(default="", description="Runtime image; default derived from version+git.")
    mlflow: MlflowSettings = MlflowSettings()
    feast: FeastSettings = FeastSettings()
    audit: AuditSettings = AuditSettings()
    serving: ServingSettings = ServingSettings()
    delivery: DeliverySettings = DeliverySettings()

    # -- derived locations -------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.state_dir.resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    @property
    def pipeline_root(self) -> Path:
        return self.root / "kfp"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"

    def ensure_dirs(self) -> None:
        """Create the local state layout (called by entrypoints, never at import)."""
        for d in (self.root, self.data_dir, self.feast_dir, self.pipeline_root,
                  self.predictions_dir, self.reports_dir, self.artifact_root):
            d.mkdir(parents=True, exist_ok=True)


def riskloop_version() -> str:
    return __version__
