"""The dataset spec a registered version was trained under, read from the version itself.

Training writes the spec's exact text into the model directory
(``dataset_spec.yaml``, logged with the model as an MLflow artifact) and
registration records its sha256 on the version (tag ``dataset_spec_sha256``,
beside ``data_sha256``). :func:`version_spec` reads the text back and checks it
against the tag, so a policy in the spec (``require_approval``) cannot be lost
by deleting or editing a file on some machine, and cannot be swapped unnoticed
in the artifact store. :func:`check_given_spec` holds a ``--spec`` given on the
command line to the version's own spec.
"""

from __future__ import annotations

from riskloop.data.spec import SpecSource, read_spec_source, spec_difference
from riskloop.errors import ConfigError, ModelIntegrityError, RiskloopError
from riskloop.registry.mlflow_registry import SPEC_FILE, SPEC_SHA256_TAG, VersionInfo, download_spec_text
from riskloop.settings import env_var

# a predictor serving a model directory (KServe's /mnt/models) checks the spec in it against this, when set
EXPECTED_SPEC_SHA256_ENV = env_var("expected_spec_sha256")


def version_spec(tracking_uri: str, info: VersionInfo) -> SpecSource:
    """The spec text ``info`` was trained under, checked against its ``dataset_spec_sha256`` tag.

    Raises :class:`ModelIntegrityError` when the version records no spec hash, the
    text cannot be read, or it does not hash to the tag; the spec is parsed, so an
    unparsable text raises :class:`ConfigError`.
    """
    where = f"model {info.name} version {info.version}"
    recorded = info.tags.get(SPEC_SHA256_TAG)
    if not recorded:
        raise ModelIntegrityError(
            f"version {info.version} of {info.name} records no dataset spec "
            f"(tag {SPEC_SHA256_TAG}): it was registered before versions carried their spec",
            where=where,
            fix="retrain it: training stores the spec with the model",
        )
    try:
        text = download_spec_text(tracking_uri, info.run_id)
    except RiskloopError as exc:
        raise ModelIntegrityError(
            f"the dataset spec of version {info.version} of {info.name} cannot be read: {exc.what}",
            where=exc.where or where,
            fix=exc.fix,
        ) from exc
    source = SpecSource(text, f"{SPEC_FILE} of {info.name} v{info.version}")
    if source.sha256 != recorded:
        raise ModelIntegrityError(
            f"the dataset spec stored with version {info.version} of {info.name} has sha256 {source.sha256[:12]}…, "
            f"the version records {recorded[:12]}…: it was altered after registration",
            where=f"MLflow run {info.run_id}, artifact model_dir/{SPEC_FILE}",
            fix="restore the artifact from a backup, or retrain and register a new version",
        )
    source.parse()  # a stored spec that no longer parses is as unusable as a missing one
    return source


def check_given_spec(given: str | SpecSource, recorded: SpecSource, info: VersionInfo) -> None:
    """Stop unless the spec named on the command line is, byte for byte, the one ``info`` was trained under."""
    source = given if isinstance(given, SpecSource) else read_spec_source(given)
    label = source.where if isinstance(given, SpecSource) else given
    if source.sha256 == recorded.sha256:
        return
    name = recorded.parse().name
    raise ConfigError(
        f"--spec {label} (sha256 {source.sha256[:12]}…) is not the dataset spec version {info.version} of "
        f"{info.name} was trained under ({name}, sha256 {recorded.sha256[:12]}…); what differs:\n"
        f"{spec_difference(recorded, source) or '(whitespace or line endings only)'}",
        where=f"--spec {label}",
        fix="leave out --spec (the version carries its own spec), pass the file it was trained under, or "
        "retrain with the edited spec",
    )


__all__ = ["EXPECTED_SPEC_SHA256_ENV", "check_given_spec", "version_spec"]
