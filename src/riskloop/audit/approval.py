"""Human oversight: a person approves a model version before it may be promoted.

An approval is an ``approved`` audit event (actor = the person, ids = model,
version and run, details = the note, the version's ``model_sha256`` and the
sha256 of the dataset spec it was trained under) and, for people browsing the
registry, tags on the version (``approved_by``, ``approved_at``,
``approval_note``). The audit event is what counts, read from a log verified
against its hash chain and the registry's anchors; a registry tag proves nothing.
An approval covers exactly that version, run, model file and spec: not a later
version with the same file, nor a version whose hashes changed since.

Whether approval is required: ``require_approval: true`` in the dataset spec the
version was trained under (read from the version itself, see
:mod:`riskloop.registry.version_spec`; on for credit scoring), or
``RISKLOOP_AUDIT__REQUIRE_APPROVAL`` for every model. The setting can only add
the requirement: a spec that requires approval is never overridden.

Promotion (``riskloop canary promote``, ``delivery.rollout.promote``, the
progressive rollout, the delivery pipeline, ``make run``) fails closed: it refuses
a version that needs an approval it does not have, and also a version whose spec
cannot be read or does not match its recorded hash (the policy is unknown), or
does not match a ``--spec`` given on the command line. Each refusal is an
``approval_refused`` event, and the error says why and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from riskloop.audit.anchors import ANCHOR_HASH_TAG, ANCHOR_SEQ_TAG, anchor_event
from riskloop.audit.log import AuditEvent, AuditLog, open_audit_log
from riskloop.errors import ApprovalRefused, ConfigError, RiskloopError
from riskloop.settings import Settings

if TYPE_CHECKING:
    from riskloop.data.spec import DatasetSpec, SpecSource
    from riskloop.registry.mlflow_registry import VersionInfo

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
    run_id: str = ""
    dataset_spec_sha256: str = ""


@dataclass(frozen=True)
class Requirement:
    """Whether a version needs approval, and which setting says so (for messages and the audit)."""

    required: bool
    why: str


def _log(s: Settings) -> AuditLog:
    return open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn)


def approval_requirement(s: Settings, spec: DatasetSpec | None) -> Requirement:
    """Approval is required by the spec the version was trained under, or added by the settings.

    ``spec`` is the version's own spec (:func:`version_approval`); None only where there is no version
    yet. ``RISKLOOP_AUDIT__REQUIRE_APPROVAL`` off never removes a spec's requirement.
    """
    if spec is not None and spec.require_approval:
        return Requirement(True, f"dataset spec {spec.name} has require_approval: true")
    if s.audit.require_approval:
        return Requirement(True, "RISKLOOP_AUDIT__REQUIRE_APPROVAL is on")
    return Requirement(False, "approval is not required by the dataset spec or the settings")


def version_approval(
    s: Settings, info: VersionInfo, *, given_spec: str | SpecSource | None = None
) -> tuple[Requirement, SpecSource]:
    """The requirement of a registered version, from the spec it carries (checked against its hash and against
    ``given_spec``, a ``--spec`` from the command line); raises when the spec cannot be verified."""
    from riskloop.registry.version_spec import check_given_spec, version_spec

    source = version_spec(s.tracking_uri, info)
    if given_spec is not None:
        check_given_spec(given_spec, source, info)
    return approval_requirement(s, source.parse()), source


def approve(
    s: Settings, model_name: str, version: str, *, by: str, note: str, given_spec: str | None = None
) -> Approval:
    """Record that ``by`` approved ``version`` of ``model_name``: an audit event, then registry tags.

    The event names the version's run, model file and dataset spec (sha256): it approves exactly those.
    A version whose spec cannot be verified cannot be approved (nobody can say what was approved).
    """
    from riskloop.registry.mlflow_registry import resolve_version, set_version_tags

    if not by.strip():
        raise ConfigError("--by is empty", fix="name the person approving, e.g. --by 'Jane Doe'")
    if not note.strip():
        raise ConfigError(
            "--note is empty", fix="say what was reviewed, e.g. --note 'model card and fairness table reviewed'"
        )
    info = resolve_version(s.tracking_uri, model_name, version=version)
    _, source = version_approval(s, info, given_spec=given_spec)
    event = _log(s).append(
        "approved",
        actor=by.strip(),
        ids={"model": model_name, "model_version": info.version, "run_id": info.run_id},
        details={
            "note": note,
            "model_sha256": info.tags["model_sha256"],
            "dataset_spec": info.tags.get("dataset_spec"),
            "dataset_spec_sha256": source.sha256,
            "recorded_by": s.audit.actor,
        },
    )
    set_version_tags(
        s.tracking_uri,
        model_name,
        info.version,
        {
            APPROVED_BY_TAG: by.strip(),
            APPROVED_AT_TAG: event.time,
            APPROVAL_NOTE_TAG: note,
            ANCHOR_SEQ_TAG: str(event.seq),
            ANCHOR_HASH_TAG: event.hash,
        },
    )
    return _from_event(event)


def _from_event(e: AuditEvent) -> Approval:
    return Approval(
        model_name=e.ids.get("model", ""),
        version=e.ids.get("model_version", ""),
        by=e.actor,
        note=str(e.details.get("note", "")),
        time=e.time,
        model_sha256=str(e.details.get("model_sha256", "")),
        audit_seq=e.seq,
        run_id=e.ids.get("run_id", ""),
        dataset_spec_sha256=str(e.details.get("dataset_spec_sha256", "")),
    )


def approvals(events: list[AuditEvent], model_name: str, version: str) -> list[Approval]:
    """Approvals of ``version`` recorded in ``events`` (any model file or spec: compare them)."""
    return [
        _from_event(e)
        for e in events
        if e.event == "approved" and e.ids.get("model") == model_name and e.ids.get("model_version") == version
    ]


def find_approval(s: Settings, info: VersionInfo, spec_sha256: str) -> Approval | None:
    """The latest approval of exactly this version (its run, model file and spec), from the audit log verified
    against its hash chain and the registry's anchors.

    Registry tags (``approved_by``) are for people browsing MLflow and prove nothing: anyone with write
    access to the registry can set them. None if the log has no such ``approved`` event.
    """
    from riskloop.audit.anchors import collect_anchors

    log = _log(s)
    # an approval read from a tampered log proves nothing: the chain, and the anchors kept in the registry
    # (a log whose end was cut or rewritten fails them)
    log.verify(collect_anchors(s)).raise_if_broken(where=repr(log))
    found = [
        a
        for a in approvals(log.events(), info.name, info.version)
        if (a.model_sha256, a.run_id, a.dataset_spec_sha256) == (info.tags["model_sha256"], info.run_id, spec_sha256)
    ]
    return found[-1] if found else None


def approve_command(s: Settings, model_name: str, version: str) -> str:
    model = f" --model {model_name}" if model_name != s.mlflow.model_name else ""
    return f"riskloop approve {version}{model} --by NAME --note 'what was reviewed'"


def check_approved(
    s: Settings, model_name: str, version: str, *, action: str, given_spec: str | None = None
) -> Approval | None:
    """Raise :class:`ApprovalRefused` (after auditing ``approval_refused``) unless ``version`` may be promoted:
    its spec verifies (and matches ``given_spec``) and, when approval is required, it has one.
    Returns the approval (None when none is required)."""
    from riskloop.registry.mlflow_registry import resolve_version

    info = resolve_version(s.tracking_uri, model_name, version=version)
    try:
        requirement, source = version_approval(s, info, given_spec=given_spec)
    except RiskloopError as exc:  # the policy cannot be read: fail closed
        _refuse(
            s,
            info,
            action,
            f"its dataset spec cannot be verified: {exc.what}",
            fix=exc.fix or "retrain and register the version",
            where=exc.where,
        )
    if not requirement.required:
        return None
    found = find_approval(s, info, source.sha256)
    if found is not None:
        return found
    _refuse(
        s,
        info,
        action,
        f"it has no recorded approval ({requirement.why})",
        fix=f"have a reviewer approve it: `{approve_command(s, model_name, info.version)}`, then retry the {action}",
        spec_sha256=source.sha256,
    )


def _refuse(
    s: Settings,
    info: VersionInfo,
    action: str,
    why: str,
    *,
    fix: str,
    where: str | None = None,
    spec_sha256: str | None = None,
) -> NoReturn:
    refused = _log(s).append(
        "approval_refused",
        actor=s.audit.actor,
        ids={"model": info.name, "model_version": info.version},
        details={
            "action": action,
            "required_because": why,
            "run_id": info.run_id,
            "model_sha256": info.tags.get("model_sha256"),
            "dataset_spec_sha256": spec_sha256,
        },
    )
    anchor_event(s, info.name, info.version, refused)
    raise ApprovalRefused(
        f"{action} refused: version {info.version} of {info.name}: {why}",
        where=where or f"model {info.name} version {info.version}",
        fix=fix,
    )


__all__ = [
    "Approval",
    "Requirement",
    "approval_requirement",
    "approvals",
    "approve",
    "check_approved",
    "find_approval",
    "version_approval",
]
