"""Deploy, promote and roll back: the registry aliases, the desired state and the audit log, kept consistent.

Every operation resolves what it acts on to an immutable registry version first,
moves the MLflow aliases (``champion``, ``challenger``, ``previous``), writes the
desired state and appends an audit event that carries the analysis result that
justified it. The desired state lives where ``settings.delivery.target`` says:

* ``local``: the deployment record (``registry/deployment.py``) that ``riskloop serve`` follows;
* ``kubernetes``: the InferenceService, through ``delivery/kube.py``. Pipeline
  steps run in throwaway pods, so there the current state is read back from the
  InferenceService's status and the registry aliases, never from a local file.
  KServe has no shadow mode (kserve/kserve#2978): shadow is local-only.

Order, so that a crash between steps leaves nothing inconsistent that matters:
the desired state is written before the aliases move on promote (a server never
serves a version the aliases do not name for long), and the audit event is
appended last, once the change took effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from riskloop.audit.log import open_audit_log
from riskloop.errors import DeploymentError
from riskloop.registry.deployment import Deployment, Drill, Mode, deployment_path, read_deployment, update_deployment
from riskloop.settings import Settings

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


def _audit(s: Settings, event: str, d: Deployment, details: Mapping[str, Any]) -> None:
    ids = {"model": d.model_name, "champion_version": d.champion_version}
    if d.challenger_version is not None:
        ids["challenger_version"] = d.challenger_version
    from riskloop.audit.anchors import anchor_event

    appended = open_audit_log(s.audit.backend, path=s.audit_path, dsn=s.audit.postgres_dsn).append(
        event,
        actor=s.audit.actor,
        ids=ids,
        details={"revision": d.revision, "canary_percent": d.canary_percent, "mode": d.mode, **details},
    )
    for version in {d.champion_version, d.challenger_version} - {None}:
        assert version is not None
        anchor_event(s, d.model_name, version, appended)  # the log's new end is anchored outside it


def resolve_version(s: Settings, model_name: str, *, alias: str | None = None, version: str | None = None) -> str:
    """An alias or version → an immutable version that exists and carries its model hash."""
    from riskloop.registry.mlflow_registry import resolve_version as resolve

    return resolve(s.tracking_uri, model_name, alias=alias, version=version).version


def _on_cluster(s: Settings) -> bool:
    if s.delivery.target not in ("local", "kubernetes"):
        raise DeploymentError(
            f"unknown delivery target {s.delivery.target!r}",
            where="RISKLOOP_DELIVERY__TARGET",
            fix="use 'local' or 'kubernetes'",
        )
    return s.delivery.target == "kubernetes"


def current(s: Settings, model_name: str) -> Deployment | None:
    """The desired state now: the local record, or the InferenceService and aliases on the cluster."""
    if not _on_cluster(s):
        return read_deployment(deployment_path(s.root, model_name))
    from riskloop.delivery import kube
    from riskloop.registry.mlflow_registry import version_by_alias

    champion = version_by_alias(s.tracking_uri, model_name, CHAMPION)
    if champion is None:
        return None
    st = kube.find_status(s.delivery.service_name, s.delivery.namespace)
    if st is None:  # a champion nothing serves yet: ensure_deployment creates its InferenceService
        return None
    canary = st.rollout_in_progress and st.model_version not in (None, champion.version)
    return Deployment(
        model_name=model_name,
        champion_version=champion.version,
        challenger_version=st.model_version if canary else None,
        canary_percent=(st.canary_percent or 0) if canary else 0,
        reason="read from the InferenceService status",
    )


def _commit(s: Settings, model_name: str, change: str, new: Deployment) -> Deployment:
    """Make ``new`` the desired state (``change`` names the transition, for the cluster's patch)."""
    if not _on_cluster(s):
        return update_deployment(deployment_path(s.root, model_name), lambda cur: new)
    from riskloop.delivery import kube

    name, ns = s.delivery.service_name, s.delivery.namespace
    if new.mode == "shadow":
        raise DeploymentError(
            "KServe has no shadow mode (kserve/kserve#2978)",
            where="RISKLOOP_DELIVERY__TARGET",
            fix="use a canary on the cluster; shadow runs with `riskloop serve` locally",
        )
    if change == "deploy":
        assert new.challenger_version is not None
        kube.deploy_challenger(
            _service_params(s, model_name, new.challenger_version), canary_percent=new.canary_percent
        )
    elif change == "canary_percent":
        kube.set_canary_percent(name, ns, new.canary_percent)
    elif change == "promote":
        kube.promote(name, ns)
    elif change == "rollback":
        kube.rollback(name, ns)
    elif change == "restore":  # the old champion comes back the way every version does: canary at 100, promote
        kube.deploy_challenger(_service_params(s, model_name, new.champion_version), canary_percent=100)
        kube.promote(name, ns)
    else:
        raise ValueError(f"unknown delivery change {change!r}")
    return new


def _service_params(s: Settings, model_name: str, version: str) -> Any:
    """The InferenceService's inputs for a registered version (its run's model directory is the storageUri)."""
    from riskloop.delivery.inference_service import InferenceServiceParams
    from riskloop.registry.mlflow_registry import (
        MODEL_DIR_ARTIFACT,
        SPEC_SHA256_TAG,
        get_version,
        object_store_uri,
        run_info,
    )
    from riskloop.version import runtime_image

    info = get_version(s.tracking_uri, model_name, version)
    artifact_uri = object_store_uri(
        run_info(s.tracking_uri, info.run_id)["artifact_uri"], s.mlflow.artifacts_destination
    )
    return InferenceServiceParams(
        name=s.delivery.service_name,
        namespace=s.delivery.namespace,
        image=runtime_image(),
        storage_uri=f"{artifact_uri.rstrip('/')}/{MODEL_DIR_ARTIFACT}",
        model_sha256=info.tags["model_sha256"],
        spec_sha256=info.tags[SPEC_SHA256_TAG],
        model_version=version,
        model_name=model_name,
        role="challenger",
    )


def ensure_deployment(s: Settings, model_name: str) -> Deployment:
    """The record, created from the ``champion`` alias if there is none yet.

    On the cluster, a champion without an InferenceService (the first deploy after training registered one) gets
    its InferenceService created here, with all traffic, before any challenger is put beside it.
    """
    existing = current(s, model_name)
    if existing is not None:
        return existing
    from riskloop.registry.mlflow_registry import version_by_alias

    if version_by_alias(s.tracking_uri, model_name, CHAMPION) is None:
        waiting = version_by_alias(s.tracking_uri, model_name, CHALLENGER)
        if waiting is not None:  # a first version that needs approval: nothing may serve before it goes live
            raise DeploymentError(
                f"{model_name} has no champion yet: version {waiting.version} is registered as challenger and "
                "goes live only when promoted (with an approval when its spec requires one)",
                where=f"model {model_name}",
                fix=f"review it (`riskloop card {waiting.version} --model {model_name}`), approve it (`riskloop "
                f"approve {waiting.version} --model {model_name} --by NAME --note '...'`) and promote it "
                f"(`riskloop canary promote --model {model_name}`)",
            )
    version = resolve_version(s, model_name, alias=CHAMPION)  # on the cluster, current() found no alias: raises
    from riskloop.audit.approval import check_approved

    # the alias alone is no licence to serve (it may predate the rule, or have been set by hand)
    check_approved(s, model_name, version, action="deployment as champion")
    first = Deployment(model_name=model_name, champion_version=version, reason="first deployment of the champion")
    if _on_cluster(s):  # the champion's InferenceService, created with all traffic (a local record would be lost)
        d = _commit(s, model_name, "restore", first)
    else:
        d = update_deployment(deployment_path(s.root, model_name), lambda cur: cur if cur is not None else first)
    _audit(s, "deployed", d, {"reason": d.reason})
    return d


def deploy_challenger(
    s: Settings,
    model_name: str,
    *,
    alias: str | None = None,
    version: str | None = None,
    canary_percent: int = 10,
    mode: Mode = "canary",
    sticky: bool = False,
    drill: Drill | None = None,
    reason: str = "",
) -> Deployment:
    """Put a version beside the champion: a canary (its canary percent of live requests), or a shadow."""
    champion = ensure_deployment(s, model_name).champion_version
    target = resolve_version(s, model_name, alias=alias, version=version)
    if target == champion:
        raise DeploymentError(
            f"version {target} is already the champion of {model_name}", fix="deploy a newer version as challenger"
        )
    from riskloop.registry.mlflow_registry import set_alias

    d = _commit(
        s,
        model_name,
        "deploy",
        Deployment(
            model_name=model_name,
            champion_version=champion,
            challenger_version=target,
            canary_percent=0 if mode == "shadow" else canary_percent,
            mode=mode,
            sticky=sticky,
            drill=drill,
            reason=reason or f"challenger v{target} deployed ({mode})",
        ),
    )
    set_alias(s.tracking_uri, model_name, CHALLENGER, target)
    _audit(
        s,
        "canary_deployed",
        d,
        {
            "resolved_from": f"alias {alias}" if alias else f"version {version}",
            "sticky": sticky,
            "drill": drill.model_dump() if drill else None,
            "reason": d.reason,
        },
    )
    return d


def _with_challenger(s: Settings, model_name: str) -> Deployment:
    d = current(s, model_name)
    if d is None or d.challenger_version is None:
        raise DeploymentError(
            f"{model_name} has no challenger deployed",
            fix="deploy one first: `riskloop canary deploy --challenger-alias challenger`",
        )
    return d


def set_canary_percent(
    s: Settings, model_name: str, canary_percent: int, *, verdict: Mapping[str, Any] | None = None
) -> Deployment:
    """Set the canary percent (a step of a progressive rollout)."""
    before = _with_challenger(s, model_name)
    d = _commit(
        s,
        model_name,
        "canary_percent",
        before.model_copy(
            update={"canary_percent": canary_percent, "mode": "canary", "reason": f"canary at {canary_percent}%"}
        ),
    )
    _audit(s, "canary_traffic_set", d, {"verdict": dict(verdict) if verdict else None})
    return d


def promote(
    s: Settings,
    model_name: str,
    *,
    verdict: Mapping[str, Any] | None = None,
    reason: str = "",
    given_spec: str | None = None,
) -> Deployment:
    """The challenger becomes champion; the old champion stays reachable as ``previous``.

    The first go-live of a model (no champion yet: its first version waited for approval, see
    ``steps.register``) promotes the ``challenger`` alias's version to champion directly.

    Fails closed (:func:`riskloop.audit.approval.check_approved`): a challenger that needs an approval it
    does not have, whose dataset spec cannot be verified, or that does not match ``given_spec`` (a
    ``--spec`` from the command line) is refused: an ``approval_refused`` event and a
    :class:`DeploymentError` saying why and how to fix it.
    """
    from riskloop.audit.approval import check_approved
    from riskloop.registry.mlflow_registry import delete_alias, set_alias, version_by_alias

    if current(s, model_name) is None and version_by_alias(s.tracking_uri, model_name, CHAMPION) is None:
        return _first_champion(s, model_name, reason=reason, given_spec=given_spec)
    before = _with_challenger(s, model_name)
    new, old = before.challenger_version, before.champion_version
    assert new is not None
    approval = check_approved(s, model_name, new, action="promotion", given_spec=given_spec)
    d = _commit(
        s,
        model_name,
        "promote",
        Deployment(model_name=model_name, champion_version=new, reason=reason or f"v{new} promoted over v{old}"),
    )
    set_alias(s.tracking_uri, model_name, PREVIOUS, old)
    set_alias(s.tracking_uri, model_name, CHAMPION, new)
    delete_alias(s.tracking_uri, model_name, CHALLENGER)
    _audit(
        s,
        "promoted",
        d,
        {
            "previous_version": old,
            "promoted_version": new,
            "reason": d.reason,
            "verdict": dict(verdict) if verdict else None,
            "approval": _approval_details(approval),
        },
    )
    return d


def _approval_details(approval: Any) -> dict[str, Any] | None:
    return None if approval is None else {"by": approval.by, "time": approval.time, "audit_seq": approval.audit_seq}


def _first_champion(s: Settings, model_name: str, *, reason: str, given_spec: str | None) -> Deployment:
    """No champion yet: the ``challenger`` alias's version goes live as the first champion, if it may."""
    from riskloop.audit.approval import check_approved
    from riskloop.registry.mlflow_registry import delete_alias, set_alias, version_by_alias

    challenger = version_by_alias(s.tracking_uri, model_name, CHALLENGER)
    if challenger is None:
        raise DeploymentError(
            f"{model_name} has no champion yet and no challenger deployed or registered",
            fix="run the training pipeline first (`riskloop run training`)",
        )
    new = challenger.version
    approval = check_approved(s, model_name, new, action="promotion", given_spec=given_spec)
    # locally a new deployment record; on the cluster the InferenceService is created with all traffic
    d = _commit(
        s,
        model_name,
        "restore",
        Deployment(
            model_name=model_name, champion_version=new, reason=reason or f"v{new} goes live as the first champion"
        ),
    )
    set_alias(s.tracking_uri, model_name, CHAMPION, new)
    delete_alias(s.tracking_uri, model_name, CHALLENGER)
    _audit(
        s,
        "promoted",
        d,
        {
            "previous_version": None,
            "promoted_version": new,
            "reason": d.reason,
            "first_champion": True,
            "approval": _approval_details(approval),
        },
    )
    return d


def rollback(s: Settings, model_name: str, *, verdict: Mapping[str, Any] | None = None, reason: str = "") -> Deployment:
    """Take the challenger out of traffic; the champion serves everything."""
    from riskloop.registry.mlflow_registry import delete_alias

    before = _with_challenger(s, model_name)
    gone = before.challenger_version
    d = _commit(
        s,
        model_name,
        "rollback",
        Deployment(
            model_name=model_name,
            champion_version=before.champion_version,
            reason=reason or f"challenger v{gone} rolled back",
        ),
    )
    delete_alias(s.tracking_uri, model_name, CHALLENGER)
    _audit(
        s,
        "rolled_back",
        d,
        {"rolled_back_version": gone, "reason": d.reason, "verdict": dict(verdict) if verdict else None},
    )
    return d


def restore_previous(s: Settings, model_name: str, *, reason: str = "") -> Deployment:
    """Instant rollback after a promotion: the ``previous`` version is champion again."""
    from riskloop.registry.mlflow_registry import set_alias

    before = ensure_deployment(s, model_name)
    previous = resolve_version(s, model_name, alias=PREVIOUS)
    demoted = before.champion_version
    if previous == demoted:
        raise DeploymentError(f"v{previous} is already the champion", fix="nothing to restore")
    from riskloop.audit.approval import check_approved

    check_approved(s, model_name, previous, action="restore")  # a champion again: the same rule as a promotion
    d = _commit(
        s,
        model_name,
        "restore",
        Deployment(
            model_name=model_name, champion_version=previous, reason=reason or f"v{previous} restored over v{demoted}"
        ),
    )
    set_alias(s.tracking_uri, model_name, CHAMPION, previous)
    set_alias(s.tracking_uri, model_name, PREVIOUS, demoted)
    _audit(s, "champion_restored", d, {"demoted_version": demoted, "reason": d.reason})
    return d


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "current",
    "deploy_challenger",
    "ensure_deployment",
    "promote",
    "resolve_version",
    "restore_previous",
    "rollback",
    "set_canary_percent",
]
