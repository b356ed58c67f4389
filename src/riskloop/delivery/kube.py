"""Progressive delivery on a cluster: the predictor InferenceService created, canaried, promoted, rolled back.

The only delivery code that talks to the Kubernetes API, through the
``kubernetes`` client's ``CustomObjectsApi`` (injected as ``api``;
``custom_objects_api()`` is the production default). Every body it sends is
built by a pure function — the object and the model patches by
``inference_service.py``, the rest here — and every change is a JSON merge
patch: the pinned client's ``patch_namespaced_custom_object`` sends
``application/merge-patch+json``, its only content type.

A rollout, on Knative revisions (Knative mode, see ``inference_service.py``):

1. ``deploy_challenger`` creates the InferenceService if absent: its first
   model takes all traffic, there is nothing to compare it with. Otherwise it
   stores the spec now served in the ``riskloop.io/previous-spec`` annotation
   and patches in the candidate with ``canaryTrafficPercent``: a new revision
   gets that canary percent, the last rolled-out revision the rest.
2. ``set_canary_percent`` moves the canary percent while the analysis runs.
3. ``promote`` removes ``canaryTrafficPercent``, KServe's documented promotion:
   the latest revision takes 100 % and becomes the rolled-out one. Or
   ``rollback`` pins all traffic on the rolled-out revision at once
   (``canaryTrafficPercent: 0``) and restores the stored spec exactly, so the
   object says what is served; the restored spec runs as one more idle
   revision until a later ``promote`` settles it. Both end the rollout and drop
   the annotation, so ``rollback`` after a promotion is refused: to go back
   then, deploy the earlier version as a challenger.

Each read-then-write patch carries the ``metadata.resourceVersion`` it was
computed from, so the API server refuses it (409) if another writer got in
between; the operation then reads again and recomputes, up to three times.
Every write asks for strict field validation: a field the cluster's CRD does
not know is refused (400), never dropped.

``status`` reports what KServe observed: readiness, URL and the traffic per
Knative revision (``.status.components.predictor.traffic``), as our own types.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from riskloop.delivery.inference_service import (
    CONTAINER_NAME,
    LABEL_MODEL_VERSION,
    InferenceServiceParams,
    apply_merge_patch,
    build_inference_service,
    canary_patch,
    promote_patch,
)
from riskloop.errors import ConfigError, DeploymentError, ServiceUnavailable
from riskloop.settings import ENV_EXPECTED_MODEL_SHA256

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
RESOURCE = f"{PLURAL}.{GROUP}"

PREVIOUS_SPEC_ANNOTATION = "riskloop.io/previous-spec"
FIELD_MANAGER = "riskloop"  # names riskloop as the writer in the object's managedFields
# Without it the API server drops a field its CRD does not know and only warns (its default since 1.23, seen on
# the node in tests/cluster): a KServe older than the builder would silently lose part of the predictor's spec.
FIELD_VALIDATION = "Strict"
REQUEST_TIMEOUT_SECONDS = (5.0, 30.0)  # connect, read: a hung API server must not hang a pipeline step
ATTEMPTS = 3  # read-then-write tries when another writer changes the object in between

RolloutChange = Literal["created", "canary", "canary_percent", "promoted", "rolled_back", "unchanged"]
"""What one delivery operation changed on the InferenceService (not the monitor's action: docs/glossary.md)."""


class CustomObjects(Protocol):
    """The methods of ``kubernetes.client.CustomObjectsApi`` this module calls."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> Any: ...

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class PreviousSpec:
    """What ``rollback`` restores: the spec and model version served before the canary."""

    model_version: str | None
    spec: dict[str, Any]


@dataclass(frozen=True)
class Rollout:
    """What one delivery operation did: for the audit log and the step's summary.

    ``from_model_version`` → ``to_model_version`` is the move it made: the
    champion → the challenger for ``canary``, ``canary_percent`` and ``promoted``, the
    challenger → the champion for ``rolled_back``. ``canary_percent`` is
    the canary percent the spec gives the latest revision afterwards (``None``: no
    canary field, the latest revision takes everything).
    """

    change: RolloutChange
    name: str
    namespace: str
    from_model_version: str | None
    to_model_version: str | None
    canary_percent: int | None


@dataclass(frozen=True)
class RevisionTraffic:
    """One Knative traffic target: a revision and its share of the requests."""

    revision: str | None
    percent: int
    tag: str | None  # KServe tags the canary "latest" and the rolled-out revision "prev"
    latest: bool  # follows the latest ready revision
    url: str | None  # the tagged route that reaches this revision alone


@dataclass(frozen=True)
class DeliveryStatus:
    """The InferenceService as KServe reports it, in our terms.

    ``model_version`` is the version the spec declares (the canary's during a
    rollout); ``previous_model_version`` is the rollback target while a rollout
    is in progress, ``None`` otherwise. ``reconciled`` is false while KServe has
    not yet observed the latest spec: ``ready`` and ``traffic`` then describe
    the spec before it.
    """

    name: str
    namespace: str
    ready: bool
    reason: str | None  # why not ready, from the Ready condition
    url: str | None
    model_version: str | None
    previous_model_version: str | None
    canary_percent: int | None
    traffic: tuple[RevisionTraffic, ...]
    latest_created_revision: str | None
    latest_ready_revision: str | None
    rolled_out_revision: str | None
    previous_rolled_out_revision: str | None
    reconciled: bool

    @property
    def rollout_in_progress(self) -> bool:
        return self.previous_model_version is not None

    @property
    def latest_revision_ready(self) -> bool:
        """Whether the newest revision serves: until it does, Knative sends its share to the last ready one."""
        return self.latest_created_revision is not None and self.latest_created_revision == self.latest_ready_revision


def custom_objects_api() -> CustomObjects:
    """A ``CustomObjectsApi`` from the in-cluster config, else from the kubeconfig (``$KUBECONFIG`` or ~/.kube/config).

    The configuration is the client's own, never the process-wide default.
    Raises ``DeploymentError`` when neither is available.
    """
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException as in_cluster:
        try:
            # Read at call time: the client resolves $KUBECONFIG once, when it is imported.
            k8s_config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
        except k8s_config.ConfigException as kubeconfig:
            raise DeploymentError(
                f"no Kubernetes configuration: not in a pod ({in_cluster}) and no usable kubeconfig ({kubeconfig})",
                fix="run the step in the cluster, or point KUBECONFIG at a kubeconfig whose current context is "
                "the cluster",
            ) from kubeconfig
    return cast(CustomObjects, k8s.CustomObjectsApi(k8s.ApiClient(configuration)))


def deploy_challenger(
    params: InferenceServiceParams, *, canary_percent: int, api: CustomObjects | None = None
) -> Rollout:
    """Serve ``params``'s model: create the InferenceService, or start a canary of the model on it.

    ``params`` describes the candidate (name, namespace, image, model). If the
    object is absent it is created from ``params`` and takes all traffic;
    otherwise ``canary_patch`` swaps in the candidate's container and model
    version, gives it ``canary_percent`` of the traffic and stores the
    spec served until now for ``rollback``. ``params.canary_percent`` is
    ignored: the canary percent is this call's argument. Settings outside the container
    (replicas, service account) stay as the object has them.

    Safe to retry: the same version again repeats the canary patch (keeping the
    stored spec), or does nothing if that version is already all that is served.
    Raises ``DeploymentError`` if a rollout of another version is in progress,
    or the same version is served with another model hash.
    """
    _check_percent(canary_percent)
    api = api or custom_objects_api()
    live = _find(api, params.name, params.namespace)
    if live is None:
        return _rollout("created", _create(api, params), from_model_version=None)

    before, after = _update(
        api, params.name, params.namespace, lambda current: canary_body(current, params, canary_percent), first=live
    )
    if after is None:
        return _rollout("unchanged", before, from_model_version=_model_version(before))
    return _rollout("canary", after, from_model_version=_previous_version(after))


def set_canary_percent(name: str, namespace: str, canary_percent: int, *, api: CustomObjects | None = None) -> Rollout:
    """Give the canary ``canary_percent`` of the traffic; the rolled-out revision keeps the rest.

    Raises ``DeploymentError`` if no rollout is in progress.
    """
    _check_percent(canary_percent)
    api = api or custom_objects_api()
    _, after = _update(api, name, namespace, lambda live: canary_percent_body(live, canary_percent))
    assert after is not None
    return _rollout("canary_percent", after, from_model_version=_previous_version(after))


def promote(name: str, namespace: str, *, api: CustomObjects | None = None) -> Rollout:
    """End the rollout in favour of the canary: remove ``canaryTrafficPercent`` and the stored previous spec.

    Promote once ``status`` shows the canary's revision ready: until then
    Knative keeps routing to the last ready revision. Also settles the object
    after a ``rollback``; does nothing when there is nothing to promote.
    """
    api = api or custom_objects_api()
    before, after = _update(api, name, namespace, promote_body)
    if after is None:
        return _rollout("unchanged", before, from_model_version=_model_version(before))
    return _rollout("promoted", after, from_model_version=_previous_version(before))


def rollback(name: str, namespace: str, *, api: CustomObjects | None = None) -> Rollout:
    """End the rollout against the canary: all traffic to the rolled-out revision, the previous spec restored.

    Raises ``DeploymentError`` if no rollout is in progress (nothing stored to
    restore, e.g. after a promotion).
    """
    api = api or custom_objects_api()
    before, after = _update(api, name, namespace, rollback_body)
    assert after is not None
    return _rollout("rolled_back", after, from_model_version=_model_version(before))


def status(name: str, namespace: str, *, api: CustomObjects | None = None) -> DeliveryStatus:
    """The InferenceService's readiness, URL, versions and traffic split as KServe reports them."""
    return parse_status(_get(api or custom_objects_api(), name, namespace))


def find_status(name: str, namespace: str, *, api: CustomObjects | None = None) -> DeliveryStatus | None:
    """``status``, or ``None`` when the InferenceService does not exist (still an error if the CRD is missing)."""
    live = _find(api or custom_objects_api(), name, namespace)
    return None if live is None else parse_status(live)


# Pure: the bodies and the readings. Each takes the object as the API server returned it.


def previous_spec_annotation(live: Mapping[str, Any]) -> str:
    """The annotation value that lets ``rollback`` restore ``live``: its spec and model version, as JSON."""
    payload = {"modelVersion": _model_version(live), "spec": live.get("spec") or {}}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def read_previous_spec(live: Mapping[str, Any]) -> PreviousSpec | None:
    """The spec stored by ``deploy_challenger``, or ``None`` when no rollout is in progress.

    Raises ``DeploymentError`` when the annotation is not what riskloop writes.
    """
    text = _annotations(live).get(PREVIOUS_SPEC_ANNOTATION)
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise _bad_annotation(live, f"not JSON ({exc})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("spec"), dict):
        raise _bad_annotation(live, "no 'spec' mapping")
    version = payload.get("modelVersion")
    if version is not None and not isinstance(version, str):
        raise _bad_annotation(live, f"'modelVersion' is {type(version).__name__}, not a string")
    return PreviousSpec(model_version=version, spec=payload["spec"])


def canary_body(live: Mapping[str, Any], params: InferenceServiceParams, canary_percent: int) -> dict[str, Any] | None:
    """Merge patch that starts (or, retried, repeats) a canary of ``params``'s model on ``live``; ``None``: nothing
    to do.

    ``canary_patch`` of the candidate, plus the ``previous-spec`` annotation
    holding ``live``'s spec unless a rollout of the same version already stored
    one, plus ``live``'s resourceVersion as a precondition.
    """
    previous = read_previous_spec(live)
    version, sha256 = _model_version(live), _model_sha256(live)
    where = _where(live)
    if version == params.model_version and sha256 not in (None, params.model_sha256):
        raise DeploymentError(
            f"model version {version} is served with model sha256 {sha256}, but the registry's version "
            f"{params.model_version} has {params.model_sha256}",
            where=where,
            fix="the registry and the cluster disagree about this version: check the version's 'model_sha256' tag "
            "and the object's RISKLOOP_EXPECTED_MODEL_SHA256 before deploying",
        )
    if previous is not None and version != params.model_version:
        raise DeploymentError(
            f"a rollout of model version {version} is in progress (previous version {previous.model_version})",
            where=where,
            fix=f"promote or roll back version {version} before deploying version {params.model_version}",
        )
    if previous is None and version == params.model_version:
        return None  # already served, and no rollout to repeat
    patch = canary_patch(
        params,
        storage_uri=params.storage_uri,
        model_sha256=params.model_sha256,
        spec_sha256=params.spec_sha256,
        model_version=params.model_version,
        canary_percent=canary_percent,
    )
    metadata: dict[str, Any] = {"resourceVersion": _resource_version(live)}
    if previous is None:
        metadata["annotations"] = {PREVIOUS_SPEC_ANNOTATION: previous_spec_annotation(live)}
    return _combined(patch, {"metadata": metadata})


def canary_percent_body(live: Mapping[str, Any], canary_percent: int) -> dict[str, Any]:
    """Merge patch that sets the canary percent; refused (``DeploymentError``) when no rollout is in progress."""
    _check_percent(canary_percent)
    if read_previous_spec(live) is None:
        raise DeploymentError(
            "no rollout is in progress, so there is no canary to give traffic to",
            where=_where(live),
            fix="deploy a challenger first (deploy_challenger)",
        )
    return {
        "metadata": {"resourceVersion": _resource_version(live)},
        "spec": {"predictor": {"canaryTrafficPercent": canary_percent}},
    }


def promote_body(live: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge patch that promotes: ``promote_patch`` and the stored spec dropped; ``None`` if nothing to promote."""
    if read_previous_spec(live) is None and "canaryTrafficPercent" not in _predictor(live):
        return None
    return _combined(
        promote_patch(),
        {"metadata": {"resourceVersion": _resource_version(live), "annotations": {PREVIOUS_SPEC_ANNOTATION: None}}},
    )


def rollback_body(live: Mapping[str, Any]) -> dict[str, Any]:
    """Merge patch that restores the stored spec exactly, with ``canaryTrafficPercent: 0``, and its model version.

    The patch removes what the canary added and puts back what it changed
    (``diff_merge_patch``), so any spec field comes back as it was, not only
    the ones ``InferenceServiceParams`` models. Refused (``DeploymentError``) when no
    rollout is in progress.
    """
    previous = read_previous_spec(live)
    if previous is None:
        raise DeploymentError(
            "no rollout is in progress, so there is no previous spec to roll back to",
            where=_where(live),
            fix="after a promotion, go back by deploying the earlier version as a challenger and promoting it",
        )
    target = apply_merge_patch(previous.spec, {"predictor": {"canaryTrafficPercent": 0}})
    return {
        "metadata": {
            "resourceVersion": _resource_version(live),
            "labels": {LABEL_MODEL_VERSION: previous.model_version},
            "annotations": {PREVIOUS_SPEC_ANNOTATION: None},
        },
        "spec": diff_merge_patch(dict(live.get("spec") or {}), target),
    }


def diff_merge_patch(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns ``source`` into ``target``: removed keys null, lists whole.

    ``apply_merge_patch(source, diff_merge_patch(source, target)) == target``
    for any ``target`` without null values (a merge patch cannot set a null).
    """
    patch: dict[str, Any] = {key: None for key in source if key not in target}
    for key, value in target.items():
        old = source.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = diff_merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in source or old != value or type(old) is not type(value):
            patch[key] = value
    return patch


def parse_status(manifest: Mapping[str, Any]) -> DeliveryStatus:
    """``manifest``'s ``.status`` (KServe's InferenceServiceStatus) and versions as a ``DeliveryStatus``.

    Tolerates an object KServe has not reconciled yet (no status at all).
    """
    metadata = _mapping(manifest.get("metadata"))
    st = _mapping(manifest.get("status"))
    predictor = _mapping(_mapping(st.get("components")).get("predictor"))
    conditions = [c for c in _list(st.get("conditions")) if isinstance(c, dict)]
    ready_condition = next((c for c in conditions if c.get("type") == "Ready"), None)
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    reason = None
    if not ready:
        if ready_condition is None:
            reason = "KServe has not reported readiness yet"
        else:
            reason = ": ".join(str(p) for p in (ready_condition.get("reason"), ready_condition.get("message")) if p)
            reason = reason or f"Ready is {ready_condition.get('status')}"
    previous = read_previous_spec(manifest)
    generation, observed = metadata.get("generation"), st.get("observedGeneration")
    return DeliveryStatus(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        ready=ready,
        reason=reason,
        url=_str(st.get("url")),
        model_version=_model_version(manifest),
        previous_model_version=previous.model_version if previous is not None else None,
        canary_percent=_int(_predictor(manifest).get("canaryTrafficPercent")),
        traffic=tuple(_traffic(t) for t in _list(predictor.get("traffic")) if isinstance(t, dict)),
        latest_created_revision=_str(predictor.get("latestCreatedRevision")),
        latest_ready_revision=_str(predictor.get("latestReadyRevision")),
        rolled_out_revision=_str(predictor.get("latestRolledoutRevision")),
        previous_rolled_out_revision=_str(predictor.get("previousRolledoutRevision")),
        reconciled=isinstance(observed, int) and isinstance(generation, int) and observed >= generation,
    )


def deployment_error(exc: ApiException, *, verb: str, name: str, namespace: str) -> DeploymentError:
    """``exc`` from the Kubernetes API as a ``DeploymentError`` that says what happened and how to fix it."""
    code = int(exc.status or 0)
    message = _server_message(exc)
    where = f"{RESOURCE}/{name} in namespace {namespace}"
    if code == 403 and "admission webhook" not in message:
        return DeploymentError(
            f"the service account running this step may not {verb} {PLURAL} in namespace {namespace} ({message})",
            where=where,
            fix=f"the pipeline runner's service account lacks RBAC on {PLURAL} in namespace {namespace}: install the "
            "chart's delivery Role and RoleBinding for the service account the step runs as (KFP: pipeline-runner "
            "in the KFP namespace); riskloop.delivery.rbac.delivery_rbac renders both for kubectl apply",
        )
    if code in (400, 403, 422):
        return DeploymentError(
            f"the API server refused to {verb} the {RESOURCE} as invalid: {message}",
            where=where,
            fix="the message names the field KServe's webhook or the CRD schema rejects; fix the "
            "InferenceServiceParams or the object and retry",
        )
    if code == 404:
        if _crd_missing(message):
            return DeploymentError(
                f"the cluster does not serve {RESOURCE}/{VERSION} ({message})",
                where=where,
                fix=f"install KServe so that its CRDs exist (kubectl get crd {RESOURCE}), or "
                "point the kubeconfig at the cluster that runs it",
            )
        return DeploymentError(
            f"InferenceService {name} does not exist in namespace {namespace}",
            where=where,
            fix="deploy a model first (deploy_challenger creates the object), or check the name and namespace",
        )
    if code == 409:
        return DeploymentError(
            f"conflict on {verb}: another writer created or changed the InferenceService at the same time ({message})",
            where=where,
            fix="check who else manages the object (kubectl get isvc -o yaml "
            "--show-managed-fields), then rerun the step: it reads the object again",
        )
    if code == 401:
        return DeploymentError(
            f"the Kubernetes API did not accept the credentials ({message})",
            where=where,
            fix="refresh the kubeconfig's credentials, or check the pod's service account token",
        )
    return DeploymentError(
        f"the Kubernetes API answered {code} {exc.reason} to {verb}: {message}",
        where=where,
        fix="check the API server's health (kubectl get --raw /readyz) and retry",
    )


# The thin client calls.


def _get(api: CustomObjects, name: str, namespace: str) -> dict[str, Any]:
    with _translated("get", name, namespace):
        return _object(
            api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        )


def _find(api: CustomObjects, name: str, namespace: str) -> dict[str, Any] | None:
    """The object, or ``None`` if it does not exist (but an error if the cluster lacks the CRD)."""
    with _translated("get", name, namespace):
        try:
            return _object(
                api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_SECONDS
                )
            )
        except ApiException as exc:
            if exc.status == 404 and not _crd_missing(_server_message(exc)):
                return None
            raise


def _create(api: CustomObjects, params: InferenceServiceParams) -> dict[str, Any]:
    body = build_inference_service(params.model_copy(update={"canary_percent": None}))
    with _translated("create", params.name, params.namespace):
        return _object(
            api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                params.namespace,
                PLURAL,
                body,
                field_manager=FIELD_MANAGER,
                field_validation=FIELD_VALIDATION,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        )


def _update(
    api: CustomObjects,
    name: str,
    namespace: str,
    body_for: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    first: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read, build the body, patch; again if another writer got in between. (object before, after or ``None``).

    tenacity retries only the patch's 409 Conflict, at once and ``ATTEMPTS``
    times in all, reading the object again each time; any other error (a
    ConfigError or DeploymentError from ``body_for``, a failed read) ends it.
    """
    live = first

    def attempt() -> tuple[dict[str, Any], dict[str, Any] | None]:
        nonlocal live
        current = live if live is not None else _get(api, name, namespace)
        live = None  # a retry reads the object again
        body = body_for(current)
        if body is None:
            return current, None
        return current, _object(
            api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER,
                field_validation=FIELD_VALIDATION,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        )

    retrying = Retrying(
        stop=stop_after_attempt(ATTEMPTS),
        reraise=True,
        retry=retry_if_exception(lambda exc: isinstance(exc, ApiException) and exc.status == 409),
    )
    with _translated("patch", name, namespace):
        return retrying(attempt)


@contextmanager
def _translated(verb: str, name: str, namespace: str) -> Iterator[None]:
    """Client errors inside as ``DeploymentError`` / ``ServiceUnavailable``."""
    try:
        yield
    except ApiException as exc:
        raise deployment_error(exc, verb=verb, name=name, namespace=namespace) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot reach the Kubernetes API server to {verb} {RESOURCE}/{name}: {exc}",
            where=f"namespace {namespace}",
            fix="check the kubeconfig's server address or the pod's network policy, and that the API server is up",
        ) from exc


def _object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise DeploymentError(
            f"the Kubernetes API answered with {type(result).__name__}, not an object",
            fix="check that the API server is a Kubernetes API server",
        )
    return result


# Readings of a manifest, tolerant of missing parts.


def _rollout(change: RolloutChange, obj: Mapping[str, Any], *, from_model_version: str | None) -> Rollout:
    metadata = _mapping(obj.get("metadata"))
    return Rollout(
        change=change,
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        from_model_version=from_model_version,
        to_model_version=_model_version(obj),
        canary_percent=_int(_predictor(obj).get("canaryTrafficPercent")),
    )


def _previous_version(obj: Mapping[str, Any]) -> str | None:
    previous = read_previous_spec(obj)
    return previous.model_version if previous is not None else None


def _model_version(obj: Mapping[str, Any]) -> str | None:
    return _str(_mapping(_mapping(obj.get("metadata")).get("labels")).get(LABEL_MODEL_VERSION))


def _model_sha256(obj: Mapping[str, Any]) -> str | None:
    for container in _list(_predictor(obj).get("containers")):
        if isinstance(container, dict) and container.get("name") == CONTAINER_NAME:
            for env in _list(container.get("env")):
                if isinstance(env, dict) and env.get("name") == ENV_EXPECTED_MODEL_SHA256:
                    return _str(env.get("value"))
    return None


def _annotations(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _mapping(_mapping(obj.get("metadata")).get("annotations"))


def _predictor(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _mapping(_mapping(obj.get("spec")).get("predictor"))


def _resource_version(obj: Mapping[str, Any]) -> str:
    version = _mapping(obj.get("metadata")).get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise DeploymentError(
            "the object has no metadata.resourceVersion to patch against",
            where=_where(obj),
            fix="pass the object as the API server returned it",
        )
    return version


def _where(obj: Mapping[str, Any]) -> str:
    metadata = _mapping(obj.get("metadata"))
    return f"{RESOURCE}/{metadata.get('name')} in namespace {metadata.get('namespace')}"


def _bad_annotation(obj: Mapping[str, Any], problem: str) -> DeploymentError:
    return DeploymentError(
        f"the {PREVIOUS_SPEC_ANNOTATION} annotation is not what riskloop writes: {problem}",
        where=_where(obj),
        fix="it was edited by hand: restore the previous spec with kubectl edit and remove the annotation, or "
        "deploy the champion again as a challenger and promote it",
    )


def _traffic(target: Mapping[str, Any]) -> RevisionTraffic:
    return RevisionTraffic(
        revision=_str(target.get("revisionName")),
        percent=_int(target.get("percent")) or 0,
        tag=_str(target.get("tag")),
        latest=target.get("latestRevision") is True,
        url=_str(target.get("url")),
    )


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status body, else the HTTP reason."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return cast(str, parsed["message"])
        if body.strip():
            return body.strip()
    return str(exc.reason or "no message")


def _crd_missing(message: str) -> bool:
    # What the API server answers for an unknown group/version/resource, unlike "... not found" for an object.
    return "could not find the requested resource" in message


def _combined(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two merge patches as one; unlike applying one to the other, nulls (deletions) are kept."""
    result = dict(a)
    for key, value in b.items():
        old = result.get(key)
        result[key] = _combined(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return result


def _check_percent(percent: int) -> None:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ConfigError(
            f"canary_percent must be an integer from 0 to 100, got {percent!r}",
            fix="pass the challenger's percentage of live requests, e.g. 10",
        )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = [
    "ATTEMPTS",
    "FIELD_MANAGER",
    "FIELD_VALIDATION",
    "GROUP",
    "PLURAL",
    "PREVIOUS_SPEC_ANNOTATION",
    "VERSION",
    "CustomObjects",
    "DeliveryStatus",
    "PreviousSpec",
    "RevisionTraffic",
    "Rollout",
    "RolloutChange",
    "canary_body",
    "canary_percent_body",
    "custom_objects_api",
    "deploy_challenger",
    "deployment_error",
    "diff_merge_patch",
    "find_status",
    "parse_status",
    "previous_spec_annotation",
    "promote",
    "promote_body",
    "read_previous_spec",
    "rollback",
    "rollback_body",
    "set_canary_percent",
    "status",
]
