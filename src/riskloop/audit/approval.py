"""Human oversight: a person approves a model version before it may be promoted.

An approval is an ``approved`` audit event (actor = the person, ids = model and
version, details = the note and the version's ``model_sha256``) and, for people
browsing the registry, tags on the version (``approved_by``, ``approved_at``,
``approval_note``). The audit event is what counts: it sits in the hash chain,
a registry tag does not. An approval covers exactly the model file it names: a
version whose ``model_sha256`` tag changed since is not approved.

Whether approval is required: ``RISKLOOP_AUDIT__REQUIRE_APPROVAL`` for every
model, or ``require_approval: true`` in the dataset spec the version was trained
on (its ``dataset_spec`` tag), on for credit scoring. When required, promotion
(``riskloop canary promote``, ``delivery.rollout.promote``, the progressive
rollout and the delivery pipeline) refuses an unapproved version, records the
refusal as an ``approval_refused`` event and says how to approve.
"""

from __future__ import annotations

from dataclasses import dataclass

from riskloop.audit.anchors import ANCHOR_HASH_TAG, ANCHOR_SEQ_TAG, anchor_event
from riskloop.audit.log import AuditEvent, AuditLog, open_audit_log
from riskloop.errors import ConfigError, DeploymentError, RiskloopError
from riskloop.settings import Settings

APPROVED_BY_TAG, APPROVED_AT_TAG, APPROVAL_NOTE_TAG = "approved_by", "approved_at", "approval_note"


@dataclass(frozen=True)
class Approval:
    """One recorded approval of a model version."""

    model_name: str
    version: str
    by: str
    note: str
    time: str
    model_sha256: str
    audit_seq: int


@dataclass(frozen=True)
class Requirement:
    """Whether a version needs approval, and which setting says so (for messages and the audit)."""

    required: bool
    why: str


def _log(s: Settings) -> AuditLog:
    return open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)


def approval_requirement(s: Settings, dataset_spec: str | None) -> Requirement:
    """Approval is required by the settings or by the spec the version was trained on."""
    if s.audit.require_approval:
        return Requirement(True, "RISKLOOP_AUDIT__REQUIRE_APPROVAL is on")
    if dataset_spec:
        from riskloop.data.spec import load_spec

        try:
            spec = load_spec(dataset_spec)
        except RiskloopError:
            # a version trained on a spec file this machine does not have: the settings decide
            return Requirement(False, f"dataset spec {dataset_spec!r} is not available here")
        if spec.require_approval:
            return Requirement(True, f"dataset spec {spec.name} has require_approval: true")
    return Requirement(False, "approval is not required by the settings or the dataset spec")


def approve(s: Settings, model_name: str, version: str, *, by: str, note: str) -> Approval:
    """Record that ``by`` approved ``version`` of ``model_name``: an audit event, then registry tags."""
    from riskloop.registry.mlflow_registry import resolve_version, set_version_tags

    if not by.strip():
        raise ConfigError("--by is empty", fix="name the person approving, e.g. --by 'Jane Doe'")
    if not note.strip():
        raise ConfigError("--note is empty", fix="say what was reviewed, e.g. --note 'model card and fairness "
                          "table reviewed'")
    info = resolve_version(s.tracking_uri, model_name, version=version)
    event = _log(s).append(
        "approved", actor=by.strip(),
        ids={"model": model_name, "model_version": info.version, "run_id": info.run_id},
        details={"note": note, "model_sha256": info.tags["model_sha256"],
                 "dataset_spec": info.tags.get("dataset_spec"), "recorded_by": s.audit.actor})
    set_version_tags(s.tracking_uri, model_name, info.version, {
        APPROVED_BY_TAG: by.strip(), APPROVED_AT_TAG: event.time, APPROVAL_NOTE_TAG: note,
        ANCHOR_SEQ_TAG: str(event.seq), ANCHOR_HASH_TAG: event.hash})
    return _from_event(event)


def _from_event(e: AuditEvent) -> Approval:
    return Approval(model_name=e.ids.get("model", ""), version=e.ids.get("model_version", ""), by=e.actor,
                    note=str(e.details.get("note", "")), time=e.time,
                    model_sha256=str(e.details.get("model_sha256", "")), audit_seq=e.seq)


def approvals(events: list[AuditEvent], model_name: str, version: str) -> list[Approval]:
    """Approvals of ``version`` recorded in ``events`` (any model file; compare ``model_sha256``)."""
    return [_from_event(e) for e in events
            if e.event == "approved" and e.ids.get("model") == model_name and e.ids.get("model_version") == version]


def find_approval(s: Settings, model_name: str, version: str, model_sha256: str) -> Approval | None:
    """The latest approval of this version's model file, from a verified audit log; None if there is none."""
    log = _log(s)
    log.verify().raise_if_broken(where=repr(log))  # an approval read from a tampered log proves nothing
    found = [a for a in approvals(log.events(), model_name, version) if a.model_sha256 == model_sha256]
    return found[-1] if found else None


def approve_command(model_name: str, version: str, dataset_spec: str | None) -> str:
    spec = f" --spec {dataset_spec}" if dataset_spec and dataset_spec != "synthetic-fraud" else ""
    return f"riskloop approve {version}{spec} --by NAME --note 'what was reviewed'"


def check_approved(s: Settings, model_name: str, version: str, *, action: str) -> Approval | None:
    """Raise :class:`DeploymentError` (after auditing ``approval_refused``) if ``version`` needs an approval
    it does not have; return the approval (None when none is required)."""
    from riskloop.registry.mlflow_registry import resolve_version

    info = resolve_version(s.tracking_uri, model_name, version=version)
    spec = info.tags.get("dataset_spec")
    requirement = approval_requirement(s, spec)
    if not requirement.required:
        return None
    found = find_approval(s, model_name, info.version, info.tags["model_sha256"])
    if found is not None:
        return found
    how = approve_command(model_name, info.version, spec)
    refused = _log(s).append("approval_refused", actor=s.audit.actor,
                   ids={"model": model_name, "model_version": info.version},
                   details={"action": action, "required_because": requirement.why,
                            "model_sha256": info.tags["model_sha256"]})
    anchor_event(s, model_name, info.version, refused)
    raise DeploymentError(
        f"{action} refused: version {info.version} of {model_name} has no recorded approval "
        f"({requirement.why})",
        where=f"model {model_name} version {info.version}",
        fix=f"have a reviewer approve it: `{how}`, then {action} again")


__all__ = ["Approval", "Requirement", "approval_requirement", "approvals", "approve", "check_approved",
           "find_approval"]
