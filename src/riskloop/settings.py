"""One typed configuration for riskloop, built at entrypoints only.

Values come from environment variables with the ``RISKLOOP_`` prefix; nested
sections use ``__`` (e.g. ``RISKLOOP_MLFLOW__TRACKING_URI``). On a cluster the
Helm chart sets these variables; locally the defaults put all state under
``.riskloop/`` in the working directory. Nothing here does I/O at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from riskloop import __version__
from riskloop.errors import ConfigError
from riskloop.storage import Location, check_uri, location


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
    artifacts_destination: str | None = Field(
        default=None,
        description=(
            "The tracking server's --artifacts-destination (e.g. s3://riskloop/mlflow): maps its proxied "
            "mlflow-artifacts:/ URIs to the object store, where KServe's storage initializer fetches models"
        ),
    )


class FeastSettings(_Section):
    """Feature store locations (used to fill ``feature_store.yaml`` placeholders)."""

    repo_path: Path | None = Field(default=None, description="Feast repo; default the shipped one.")
    online_store: str = Field(default="sqlite", description="sqlite | redis")
    redis_connection: str = "127.0.0.1:6379"
    registry: str | None = Field(
        default=None,
        description=(
            "SQL registry URL (e.g. postgresql+psycopg://user:pw@host/feast), shared with the feature server on a "
            "cluster; default: a registry file in the state dir"
        ),
    )


class AuditSettings(_Section):
    """Audit log backend."""

    backend: str = Field(default="file", description="file | postgres")
    postgres_dsn: str | None = None
    actor: str = Field(default="riskloop", description="Who is recorded as acting.")
    require_approval: bool = False


class StorageSettings(_Section):
    """Shared storage: what more than one pod reads or writes (see :mod:`riskloop.storage`)."""

    uri: str | None = Field(
        default=None,
        description=(
            "Root of the landing data, the prediction log and the monitor state, e.g. s3://riskloop/state "
            "(credentials from AWS_*, endpoint from AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL); default the state dir"
        ),
    )

    @field_validator("uri")
    @classmethod
    def _usable(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return check_uri(value)
        except ConfigError as exc:  # as a ValueError, pydantic reports it under the variable's name
            raise ValueError(str(exc)) from None


class ServingSettings(_Section):
    """The model server."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    workers: int = 1
    log_flush_seconds: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "Longest a served row waits in memory before the prediction log writes it (a file per flush and "
            "process); default 1 s on local disk, 60 s on an object store, where a file a second per replica "
            "would be 86,400 objects a day. Shutdown always flushes."
        ),
    )

    def flush_seconds_for(self, log_root: Location) -> float:
        if self.log_flush_seconds is not None:
            return self.log_flush_seconds
        return 1.0 if log_root.local_path is not None else 60.0


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

    model_config = SettingsConfigDict(env_prefix="RISKLOOP_", env_nested_delimiter="__", extra="forbid", frozen=True)

    state_dir: Path = Field(default=Path(".riskloop"), description="All local state lives here.")
    image: str = Field(default="", description="Runtime image; default derived from version+git.")
    # what the InferenceService tells its predictor pod (riskloop.delivery.inference_service sets them)
    model_name: str | None = Field(
        default=None,
        description=(
            "The registered model this process serves or acts on (RISKLOOP_MODEL_NAME, set in a predictor pod); "
            "default: from --model/--spec, else mlflow.model_name"
        ),
    )
    expected_spec_sha256: str | None = Field(
        default=None,
        description=(
            "sha256 of the dataset spec the served version records (RISKLOOP_EXPECTED_SPEC_SHA256): a model "
            "directory whose dataset_spec.yaml differs, or lacks one, is refused"
        ),
    )
    mlflow: MlflowSettings = MlflowSettings()
    feast: FeastSettings = FeastSettings()
    audit: AuditSettings = AuditSettings()
    storage: StorageSettings = StorageSettings()
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
    def shared(self) -> Location:
        """Root of what every pod shares: ``storage.uri``, or the state dir on one machine."""
        return location(self.storage.uri or self.root)

    @property
    def predictions(self) -> Location:
        """The prediction log: every predictor process writes here, monitoring and lineage read it."""
        return self.shared / "predictions"

    def monitor_state(self, model_name: str) -> Location:
        """The monitoring job's state for one registered model (window, cooldown, episode)."""
        return self.shared / "monitoring" / f"{model_name}-state.json"

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

    @property
    def experiment_artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: under the state dir with the embedded sqlite store; the
        tracking server's own choice with a server (its --artifacts-destination). A pod's state dir would be lost
        with the pod, and no other pod could read it."""
        server = self.tracking_uri.startswith(("http://", "https://", "databricks"))
        return None if server else self.artifact_root.as_uri()

    def ensure_dirs(self) -> None:
        """Create the local state layout (called by entrypoints, never at import)."""
        for d in (self.root, self.data_dir, self.feast_dir, self.pipeline_root, self.reports_dir, self.artifact_root):
            d.mkdir(parents=True, exist_ok=True)


def env_var(field: str) -> str:
    """The environment variable that sets a Settings field: ``env_var("delivery.server_url")`` is
    ``RISKLOOP_DELIVERY__SERVER_URL``. Code that hands a setting to a child process names it through this,
    so each variable's name is defined once, here."""
    section, _, name = field.rpartition(".")
    owner: type[BaseModel] | None = Settings
    if section:
        annotation = Settings.model_fields[section].annotation if section in Settings.model_fields else None
        owner = annotation if isinstance(annotation, type) and issubclass(annotation, _Section) else None
    if owner is None or name not in owner.model_fields:
        raise ConfigError(f"{field!r} is not a Settings field", where="riskloop.settings.env_var")
    return "RISKLOOP_" + (f"{section}__{name}" if section else name).upper()


def disable_telemetry() -> None:
    """Opt out of the usage telemetry of MLflow and Evidently for this process and its children
    (entry points call it; an explicit setting in the environment wins)."""
    import os

    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def riskloop_version() -> str:
    return __version__


# The predictor pod's model identity beyond Settings' fields (those are named by ``env_var``): the
# InferenceService sets them (riskloop.delivery.inference_service), `riskloop serve` reads them
# (riskloop.serving.loader). Defined once, here.
ENV_EXPECTED_MODEL_SHA256 = "RISKLOOP_EXPECTED_MODEL_SHA256"
ENV_MODEL_VERSION = "RISKLOOP_MODEL_VERSION"
ENV_ROLE = "RISKLOOP_ROLE"
