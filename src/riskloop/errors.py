"""The riskloop exception tree.

Every error a user can cause says what went wrong, where, and how to fix it::

    RiskloopError
     ├── ConfigError            a setting, spec file or CLI argument is invalid
     ├── DataError
     │    ├── DataContractError  a batch breaks the data contract as a whole
     │    │                      (missing column, wrong type, empty file)
     │    └── QualityGateFailed  too many rows were quarantined
     ├── FeatureStoreError      Feast could not apply, materialize or retrieve
     ├── TrainingError          training or evaluation cannot proceed
     ├── RegistryError          MLflow tracking / model registry failures
     ├── ModelIntegrityError    a model file does not match its recorded hash
     ├── AuditError
     │    └── AuditChainBroken  the audit log's hash chain does not verify
     ├── DeploymentError        serving or delivery could not reach the desired state
     │    └── ApprovalRefused    a promotion was refused (and audited): no approval, or an unverifiable spec
     └── ServiceUnavailable     a required external service is not reachable

Failing a quality gate of the *model* (champion/challenger) is not an error:
it is a ``GateResult`` returned as data.
"""

from __future__ import annotations


class RiskloopError(Exception):
    """Base of every error raised on purpose by riskloop."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        parts = [what]
        if where:
            parts.append(f"where: {where}")
        if fix:
            parts.append(f"how to fix: {fix}")
        super().__init__("\n  ".join(parts))


class ConfigError(RiskloopError):
    """A setting, dataset spec, pipeline parameter or CLI argument is invalid."""


class DataError(RiskloopError):
    """A data batch cannot be used."""


class DataContractError(DataError):
    """A batch breaks the contract as a whole: missing column, wrong type, empty file."""


class QualityGateFailed(DataError):
    """The share of quarantined rows exceeds the allowed threshold."""


class FeatureStoreError(RiskloopError):
    """Feast could not apply definitions, materialize or retrieve features."""


class TrainingError(RiskloopError):
    """Training or evaluation cannot proceed (e.g. no positive labels in a split)."""


class RegistryError(RiskloopError):
    """The MLflow tracking server or model registry failed or lacks an object."""


class ModelIntegrityError(RiskloopError):
    """A model file does not match the sha256 recorded at registration."""


class AuditError(RiskloopError):
    """The audit log cannot be read or written."""


class AuditChainBroken(AuditError):
    """The audit log's hash chain does not verify (a line edited, inserted or removed)."""


class DeploymentError(RiskloopError):
    """Serving or delivery could not reach the desired state."""


class ApprovalRefused(DeploymentError):
    """A promotion was refused and the refusal audited: the version lacks a required approval, or its
    dataset spec (the approval policy) cannot be verified."""


class ServiceUnavailable(RiskloopError):
    """A required external service (Redis, PostgreSQL, Prometheus...) is not reachable."""
