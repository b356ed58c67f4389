"""MLflow adapter: the only module that imports mlflow.

Runs hold params, metrics, plots, reports, the model directory and a reference
sample; model versions carry the lineage record as tags (:class:`LineageRecord`,
defined once here) and the aliases ``champion`` / ``challenger`` / ``previous``.

The model directory is an MLflow model (:func:`write_pyfunc_model`), and a
version's source is that directory: ``mlflow.pyfunc.load_model`` reads the same
files as KServe's storage initializer and ``riskloop serve --model-dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from riskloop.errors import ConfigError, ModelIntegrityError, RegistryError

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
MODEL_DIR_ARTIFACT = "model_dir"
REFERENCE_ARTIFACT = "reference"
SPEC_FILE = "dataset_spec.yaml"  # in the model directory: the spec a model was trained under travels with it
SPEC_SHA256_TAG = "dataset_spec_sha256"
AUDIT_SEQ_TAG, AUDIT_HASH_TAG = "audit_head_seq", "audit_head_hash"


@dataclass(frozen=True)
class LineageRecord:
    """The lineage record every registered model version carries as tags."""

    model_sha256: str
    data_sha256: str
    data_snapshot: str
    feature_service: str
    git_commit: str
    image: str
    pipeline_run_id: str
    gate_result: str
    riskloop_version: str
    dataset_spec: str
    dataset_spec_sha256: str  # of the spec text in the model directory (SPEC_FILE), the spec it was trained under

    def tags(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> LineageRecord:
        missing = [k for k in cls.__dataclass_fields__ if k not in tags]
        if missing:
            raise RegistryError(f"model version lacks lineage tags: {missing}")
        return cls(**{k: tags[k] for k in cls.__dataclass_fields__})


LINEAGE_TAGS = tuple(LineageRecord.__dataclass_fields__)


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    tags: dict[str, str]


def _mlflow_module() -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def _mlflow(tracking_uri: str) -> Any:
    mlflow = _mlflow_module()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow


def client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    _mlflow(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def write_pyfunc_model(
    model_dir: Path,
    *,
    inputs: Sequence[tuple[str, str]],
    loader_module: str,
    code: Path,
    pip_requirements: Sequence[str],
) -> None:
    """Make ``model_dir`` an MLflow pyfunc model without moving the files in it.

    Adds ``MLmodel`` (python_function flavor, loaded by ``loader_module``'s ``_load_pyfunc`` from the directory
    itself; the signature: ``inputs`` as ``(column, MLflow type)`` in, one score per row out), the requirements
    (MLflow adds itself) and ``code`` as ``code/<its name>``, prepended to ``sys.path`` at load. A loader module
    rather than a ``PythonModel``: MLflow would pickle the latter (refused at load by default since MLflow 3)
    and copy the model's files under ``artifacts/``, away from where the server reads them.
    """
    mlflow = _mlflow_module()
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([ColSpec(type, name) for name, type in inputs]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]),
    )
    # MLflow would copy the uv.lock of the working directory (riskloop's, when run from a checkout) into the
    # model: the model's environment is its requirements, not the platform's lock
    with tempfile.TemporaryDirectory(prefix="riskloop-mlmodel-") as tmp, _env("MLFLOW_LOG_UV_FILES", "false"):
        staged = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            path=str(staged),
            loader_module=loader_module,
            code_paths=[str(code)],
            pip_requirements=list(pip_requirements),
            signature=signature,
        )
        for entry in staged.iterdir():
            target = model_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(entry), str(target))


def start_training_run(
    tracking_uri: str,
    experiment: str,
    *,
    params: Mapping[str, Any],
    model_dir: Path,
    artifact_location: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create a run with params and the model directory (artifact ``model_dir``, the MLflow model)."""
    mlflow = _mlflow(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(experiment, artifact_location=artifact_location)
    with mlflow.start_run(experiment_id=exp_id, tags=dict(tags or {})) as run:
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()})
        mlflow.log_artifacts(str(model_dir), MODEL_DIR_ARTIFACT)
        return str(run.info.run_id)


def log_evaluation(
    tracking_uri: str,
    run_id: str,
    *,
    metrics: Mapping[str, float],
    files: Sequence[tuple[str, Path]] = (),
    prefix: str = "",
) -> None:
    """Log metrics and ``(artifact_path, file)`` pairs to an existing run."""
    mlflow = _mlflow(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()})
        for artifact_path, f in files:
            mlflow.log_artifact(str(f), artifact_path)


def set_run_tags(tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_tag(run_id, k, v)


def register_version(
    tracking_uri: str,
    model_name: str,
    run_id: str,
    lineage: LineageRecord,
    *,
    extra_tags: Mapping[str, str] | None = None,
) -> str:
    """Register the run's model directory (an MLflow model) as a new version carrying the lineage tags; return the
    version. The version's source is that directory: what MLflow, KServe's storage initializer and the server load."""
    c = client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model_name)
    except MlflowException:
        c.create_registered_model(
            model_name, description=f"riskloop model of the dataset spec {lineage.dataset_spec!r}"
        )
    run = c.get_run(run_id)
    source = f"{run.info.artifact_uri}/{MODEL_DIR_ARTIFACT}"
    mv = c.create_model_version(
        model_name, source=source, run_id=run_id, tags={**lineage.tags(), **dict(extra_tags or {})}
    )
    return str(mv.version)


def set_version_tags(tracking_uri: str, model_name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set tags on a registered model version (approval state, audit anchors)."""
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(model_name, version, k, v)


def registered_models(tracking_uri: str) -> list[str]:
    """Names of every registered model (empty when there is no registry yet)."""
    return sorted(str(m.name) for m in client(tracking_uri).search_registered_models())


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    client(tracking_uri).set_registered_model_alias(model_name, alias, version)


def delete_alias(tracking_uri: str, model_name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client(tracking_uri).delete_registered_model_alias(model_name, alias)


def version_by_alias(tracking_uri: str, model_name: str, alias: str) -> VersionInfo | None:
    """The version an alias points at, or None (no model or no such alias)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return VersionInfo(model_name, str(mv.version), str(mv.run_id), tuple(mv.aliases), dict(mv.tags))


def get_version(tracking_uri: str, model_name: str, version: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    try:
        mv = client(tracking_uri).get_model_version(model_name, version)
    except MlflowException as exc:
        raise RegistryError(
            f"model {model_name} version {version} not found", fix="list the versions in the MLflow UI (`mlflow ui`)"
        ) from exc
    return VersionInfo(model_name, str(mv.version), str(mv.run_id), tuple(mv.aliases), dict(mv.tags))


def resolve_version(
    tracking_uri: str, model_name: str, *, alias: str | None = None, version: str | None = None
) -> VersionInfo:
    """An alias or a version → the immutable version it names, which must carry its ``model_sha256`` tag."""
    if (alias is None) == (version is None):
        raise ConfigError(
            "name exactly one of a registry alias or a version",
            where=f"model {model_name!r}",
            fix="pass an alias (e.g. champion) or a version number",
        )
    if alias is not None:
        found = version_by_alias(tracking_uri, model_name, alias)
        if found is None:
            raise RegistryError(
                f"model {model_name!r} has no alias {alias!r}",
                where=tracking_uri,
                fix="run the training pipeline first (`make run`) or name a version",
            )
        info = found
    else:
        assert version is not None
        info = get_version(tracking_uri, model_name, version)
    if not info.tags.get("model_sha256"):
        raise ModelIntegrityError(
            f"version {info.version} of {model_name} has no model_sha256 tag",
            where=tracking_uri,
            fix="use versions registered by the training pipeline",
        )
    return info


def list_versions(tracking_uri: str, model_name: str) -> list[VersionInfo]:
    """All versions with their aliases (search results do not carry aliases: read them from the model)."""
    c = client(tracking_uri)
    by_version: dict[str, list[str]] = {}
    for alias, version in c.get_registered_model(model_name).aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    out = [
        VersionInfo(
            model_name,
            str(mv.version),
            str(mv.run_id),
            tuple(sorted(by_version.get(str(mv.version), []))),
            dict(mv.tags),
        )
        for mv in c.search_model_versions(f"name='{model_name}'")
    ]
    return sorted(out, key=lambda v: int(v.version))


def download_model_dir(tracking_uri: str, run_id: str, dest: Path | None = None) -> Path:
    mlflow = _mlflow(tracking_uri)
    target = dest or Path(tempfile.mkdtemp(prefix="riskloop-model-"))
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_DIR_ARTIFACT, dst_path=str(target))
    )


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    """An MLflow setting (an environment variable) for the duration of one call, put back after it."""
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _no_progress_bar() -> contextlib.AbstractContextManager[None]:
    """MLflow draws a progress bar on stderr for every download: noise around a few bytes, and it breaks the
    ``--json`` output of commands that read a version's spec (lineage, reproduce)."""
    return _env("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def download_spec_text(tracking_uri: str, run_id: str) -> str:
    """The dataset spec text stored in the run's model directory (``model_dir/dataset_spec.yaml``)."""
    mlflow = _mlflow(tracking_uri)
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="riskloop-spec-") as tmp, _no_progress_bar():
        try:
            path = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"{MODEL_DIR_ARTIFACT}/{SPEC_FILE}", dst_path=tmp
                )
            )
            return path.read_bytes().decode("utf-8")
        except (MlflowException, OSError, UnicodeDecodeError) as exc:
            raise RegistryError(
                f"the run's model directory has no readable {SPEC_FILE}: {exc}",
                where=f"MLflow run {run_id}, artifact {MODEL_DIR_ARTIFACT}/{SPEC_FILE}",
                fix="retrain the version: training stores the spec beside the model",
            ) from exc


def download_reference(tracking_uri: str, run_id: str, dest: Path) -> Path:
    """The run's reference sample (``reference/reference.parquet``), the drift monitor's baseline."""
    mlflow = _mlflow(tracking_uri)
    folder = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=str(dest))
    )
    return folder / "reference.parquet"


PROXIED_SCHEME = "mlflow-artifacts:"


def object_store_uri(artifact_uri: str, artifacts_destination: str | None) -> str:
    """Where an artifact lives in the object store, for readers that cannot talk to MLflow (KServe).

    A tracking server run with ``--serve-artifacts --artifacts-destination D``
    hands out ``mlflow-artifacts:/<path>`` URIs and stores ``<path>`` under ``D``.
    Other URIs (``s3://``, ``gs://``, local paths) are already where the bytes are.
    """
    if not artifact_uri.startswith(PROXIED_SCHEME):
        return artifact_uri
    if not artifacts_destination:
        raise ConfigError(
            f"the artifact URI {artifact_uri} is served by the MLflow server, and the object store "
            "path behind it is not configured",
            where="RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION",
            fix="set it to the server's --artifacts-destination (the chart's s3.artifactsDestination)",
        )
    rest = artifact_uri.removeprefix(PROXIED_SCHEME)
    if rest.startswith("//"):  # mlflow-artifacts://host:port/path: the path is what follows the authority
        rest = "/" + rest[2:].split("/", 1)[1] if "/" in rest[2:] else "/"
    return f"{artifacts_destination.rstrip('/')}/{rest.lstrip('/')}"


def run_info(tracking_uri: str, run_id: str) -> dict[str, Any]:
    r = client(tracking_uri).get_run(run_id)
    return {
        "run_id": run_id,
        "metrics": dict(r.data.metrics),
        "params": dict(r.data.params),
        "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
        "artifact_uri": r.info.artifact_uri,
        "status": r.info.status,
    }


def audit_anchors(tracking_uri: str, model_name: str) -> list[tuple[int, str]]:
    """Audit-log head hashes recorded with model versions: truncation of the log is detected."""
    try:
        versions = list_versions(tracking_uri, model_name)
    except Exception:  # no registry yet means no anchors
        return []
    return [
        (int(v.tags[AUDIT_SEQ_TAG]), v.tags[AUDIT_HASH_TAG])
        for v in versions
        if AUDIT_SEQ_TAG in v.tags and AUDIT_HASH_TAG in v.tags
    ]
