"""Cluster operations of progressive delivery: the pure bodies and readings, and the call sequence on a fake API.

No Kubernetes API server can run here, so the call sequence runs against
``FakeCustomObjectsApi`` below; one test drives the real ``CustomObjectsApi``
down to its HTTP pool to pin what goes over the wire.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3.exceptions
import yaml
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from riskloop.delivery import kube
from riskloop.delivery.inference_service import (
    InferenceServiceParams,
    apply_merge_patch,
    build_inference_service,
    canary_patch,
    promote_patch,
)
from riskloop.delivery.kube import (
    PREVIOUS_SPEC_ANNOTATION,
    DeliveryStatus,
    PreviousSpec,
    RevisionTraffic,
    Rollout,
    canary_body,
    canary_percent_body,
    deploy_challenger,
    deployment_error,
    diff_merge_patch,
    parse_status,
    previous_spec_annotation,
    promote,
    promote_body,
    read_previous_spec,
    rollback,
    rollback_body,
    set_canary_percent,
    status,
)
from riskloop.delivery.rbac import delivery_rbac
from riskloop.errors import ConfigError, DeploymentError, ServiceUnavailable
from tests.unit.kserve_schema import validate_manifest

SHA_V3 = hashlib.sha256(b"model.ubj of version 3").hexdigest()
SHA_V4 = hashlib.sha256(b"model.ubj of version 4").hexdigest()
SHA_V5 = hashlib.sha256(b"model.ubj of version 5").hexdigest()
CHAMPION = InferenceServiceParams(
    name="fraud-detector",
    namespace="riskloop",
    image="ghcr.io/riskloop/riskloop:0.1.0-3f9c2e1",
    storage_uri="s3://riskloop-mlflow/artifacts/1/6f1d2c/artifacts/model",
    model_sha256=SHA_V3,
    spec_sha256=hashlib.sha256(b"dataset_spec.yaml").hexdigest(),
    model_version="3",
)
CANDIDATE = CHAMPION.model_copy(
    update={
        "storage_uri": "s3://riskloop-mlflow/artifacts/1/9a7e40/artifacts/model",
        "model_sha256": SHA_V4,
        "model_version": "4",
    }
)
THIRD = CHAMPION.model_copy(
    update={
        "storage_uri": "s3://riskloop-mlflow/artifacts/1/0b11aa/artifacts/model",
        "model_sha256": SHA_V5,
        "model_version": "5",
    }
)
NAME, NS = CHAMPION.name, CHAMPION.namespace
ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})


def _status_error(code: int, reason: str, message: str) -> ApiException:
    """An ``ApiException`` as the client raises it: HTTP status and reason, the API server's Status as the body."""
    exc = ApiException(status=code, reason=reason)
    exc.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason.replace(" ", ""),
            "code": code,
        }
    )
    return exc


@dataclass
class Call:
    verb: str
    name: str | None
    body: dict[str, Any] | None
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeCustomObjectsApi:
    """In-memory stand-in for the ``CustomObjectsApi`` methods ``delivery/kube.py`` calls.

    It stands in because no Kubernetes API server can run on this machine (no
    container engine, no cluster). It answers as the API server does for these
    calls: ``ApiException`` 404 for a missing object, and for any group,
    version or plural other than KServe's InferenceService (or all of them when
    ``crd_installed`` is false: the CRD is missing); 409 on creating an object
    that exists and on a patch whose ``metadata.resourceVersion`` is not the
    stored one; a patch is a JSON merge patch applied with
    ``apply_merge_patch``, ``status`` in it ignored (a subresource); every
    write bumps ``resourceVersion`` and a spec change bumps ``generation``.
    Bodies go through JSON as they would on the wire; callers get copies.
    Verbs outside ``allowed_verbs`` are refused 403 as RBAC refuses them.
    """

    def __init__(self, *, allowed_verbs: Iterable[str] = ALL_VERBS, crd_installed: bool = True) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.allowed_verbs = frozenset(allowed_verbs)
        self.crd_installed = crd_installed
        self.failures: dict[str, list[BaseException]] = {}
        self.before_patch: list[Callable[[], None]] = []
        self._resource_version = 100

    # What other actors do: KServe's controller writes the status, another client edits the object.

    def write_status(self, name: str, namespace: str, st: dict[str, Any]) -> None:
        obj = self.objects[(namespace, name)]
        obj["status"] = copy.deepcopy(st)
        obj["metadata"]["resourceVersion"] = self._next_version()

    def edit(self, name: str, namespace: str, patch: dict[str, Any]) -> None:
        obj = self.objects[(namespace, name)]
        self.objects[(namespace, name)] = self._written(obj, apply_merge_patch(obj, patch))

    def fail_next(self, verb: str, exc: BaseException) -> None:
        self.failures.setdefault(verb, []).append(exc)

    # The CustomObjectsApi methods.

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any:
        self._enter("get", group, version, namespace, plural, name, None, kwargs)
        return copy.deepcopy(self._stored(namespace, name))

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> Any:
        body = json.loads(json.dumps(body))
        name = body["metadata"]["name"]
        self._enter("create", group, version, namespace, plural, name, body, kwargs)
        if body["metadata"].get("namespace", namespace) != namespace:
            raise _status_error(
                400,
                "Bad Request",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if (namespace, name) in self.objects:
            raise _status_error(409, "Conflict", f'{kube.RESOURCE} "{name}" already exists')
        body["metadata"].update(
            namespace=namespace,
            uid=f"uid-{name}",
            generation=1,
            creationTimestamp="2025-11-27T10:00:00Z",
            resourceVersion=self._next_version(),
        )
        self.objects[(namespace, name)] = body
        return copy.deepcopy(body)

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kwargs: Any
    ) -> Any:
        body = json.loads(json.dumps(body))
        self._enter("patch", group, version, namespace, plural, name, body, kwargs)
        assert isinstance(body, dict), "a JSON merge patch is an object"
        if self.before_patch:  # another writer, between the caller's read and this write
            self.before_patch.pop(0)()
        stored = self._stored(namespace, name)
        expected = body.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != stored["metadata"]["resourceVersion"]:
            raise _status_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kube.RESOURCE} "{name}": the '
                "object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        body.pop("status", None)
        self.objects[(namespace, name)] = self._written(stored, apply_merge_patch(stored, body))
        return copy.deepcopy(self.objects[(namespace, name)])

    def verbs(self) -> list[str]:
        return [c.verb for c in self.calls]

    def _enter(
        self,
        verb: str,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str | None,
        body: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        self.calls.append(Call(verb, name, copy.deepcopy(body), kwargs))
        if not self.crd_installed or (group, version, plural) != (kube.GROUP, kube.VERSION, kube.PLURAL):
            raise _status_error(404, "Not Found", "the server could not find the requested resource")
        if verb not in self.allowed_verbs:
            raise _status_error(
                403,
                "Forbidden",
                f'{plural}.{group} "{name}" is forbidden: User '
                '"system:serviceaccount:kubeflow:pipeline-runner" cannot '
                f'{verb} resource "{plural}" in API group "{group}" in the '
                f'namespace "{namespace}"',
            )
        if self.failures.get(verb):
            raise self.failures[verb].pop(0)

    def _stored(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.objects:
            raise _status_error(404, "Not Found", f'{kube.RESOURCE} "{name}" not found')
        return self.objects[(namespace, name)]

    def _written(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        for server_owned in ("uid", "creationTimestamp", "generation"):
            new["metadata"][server_owned] = old["metadata"][server_owned]
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] += 1
        new["metadata"]["resourceVersion"] = self._next_version()
        if "status" in old:
            new["status"] = old["status"]
        return new

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)


def _spec_of(spec: InferenceServiceParams, **changes: Any) -> dict[str, Any]:
    return dict(build_inference_service(spec.model_copy(update=changes))["spec"])


def _live(spec: InferenceServiceParams = CHAMPION, **changes: Any) -> dict[str, Any]:
    """The object as the API server returns it after creating ``spec``."""
    obj = build_inference_service(spec.model_copy(update=changes))
    obj["metadata"].update(uid="uid-1", generation=1, resourceVersion="41", creationTimestamp="2025-11-27T10:00:00Z")
    return obj


def _in_rollout() -> dict[str, Any]:
    return apply_merge_patch(_live(), canary_body(_live(), CANDIDATE, 10) or {})


def _deployed(api: FakeCustomObjectsApi, spec: InferenceServiceParams = CHAMPION) -> None:
    assert deploy_challenger(spec, canary_percent=10, api=api).change == "created"


# The pure pieces.


def test_previous_spec_annotation_round_trip() -> None:
    live = _live()
    text = previous_spec_annotation(live)
    assert json.loads(text) == {"modelVersion": "3", "spec": live["spec"]}
    assert text == previous_spec_annotation(copy.deepcopy(live)), "deterministic: same spec, same annotation"
    annotated = apply_merge_patch(live, {"metadata": {"annotations": {PREVIOUS_SPEC_ANNOTATION: text}}})
    assert read_previous_spec(annotated) == PreviousSpec(model_version="3", spec=live["spec"])
    # Through YAML as kubectl shows it, too.
    assert read_previous_spec(yaml.safe_load(yaml.safe_dump(annotated))) == PreviousSpec("3", live["spec"])


def test_read_previous_spec_is_none_outside_a_rollout() -> None:
    assert read_previous_spec(_live()) is None
    assert read_previous_spec({"metadata": {"annotations": None}}) is None
    assert read_previous_spec({}) is None


def test_an_unlabelled_object_round_trips_without_a_version() -> None:
    live = apply_merge_patch(_live(), {"metadata": {"labels": None}})
    annotated = apply_merge_patch(
        live, {"metadata": {"annotations": {PREVIOUS_SPEC_ANNOTATION: previous_spec_annotation(live)}}}
    )
    assert read_previous_spec(annotated) == PreviousSpec(model_version=None, spec=live["spec"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "no 'spec' mapping"),
        ('{"modelVersion": "3"}', "no 'spec' mapping"),
        ('{"modelVersion": 3, "spec": {}}', "'modelVersion' is int"),
    ],
)
def test_a_hand_edited_annotation_is_refused_with_a_fix(value: str, message: str) -> None:
    live = apply_merge_patch(_live(), {"metadata": {"annotations": {PREVIOUS_SPEC_ANNOTATION: value}}})
    with pytest.raises(DeploymentError, match=message) as info:
        read_previous_spec(live)
    assert "fraud-detector in namespace riskloop" in str(info.value) and "kubectl edit" in str(info.value)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ({"a": 1}, {"a": 1}),
        ({"a": 1, "b": 2}, {"a": 1}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}),
        ({"a": {"b": 1}}, {"a": {"b": 1}, "d": {"e": [1, 2]}}),
        ({"l": [{"x": 1}, {"y": 2}]}, {"l": [{"x": 1}]}),
        ({"a": {"b": 1}}, {"a": "scalar"}),
        ({"a": "scalar"}, {"a": {"b": 1}}),
        ({"a": 1}, {"a": True}),
        ({"a": 1}, {"a": 1.0}),
        ({"p": {"canaryTrafficPercent": 10, "x": 1}}, {"p": {"x": 1}}),
    ],
)
def test_diff_merge_patch_turns_source_into_target(source: dict[str, Any], target: dict[str, Any]) -> None:
    patch = diff_merge_patch(source, target)
    result = apply_merge_patch(source, patch)
    assert result == target and [type(v) for v in result.values()] == [type(v) for v in target.values()]


def test_diff_merge_patch_is_minimal() -> None:
    assert diff_merge_patch({"a": {"b": 1}, "c": [1]}, {"a": {"b": 1}, "c": [1]}) == {}
    assert diff_merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == {"a": {"c": None}}


def test_canary_body_is_the_canary_patch_plus_the_stored_spec_and_a_precondition() -> None:
    live = _live()
    body = canary_body(live, CANDIDATE, 10)
    assert body is not None
    expected = canary_patch(
        CANDIDATE,
        storage_uri=CANDIDATE.storage_uri,
        model_sha256=SHA_V4,
        spec_sha256=CANDIDATE.spec_sha256,
        model_version="4",
        canary_percent=10,
    )
    assert body["spec"] == expected["spec"]
    assert body["metadata"] == {
        "labels": {"riskloop.io/model-version": "4"},
        "resourceVersion": "41",
        "annotations": {PREVIOUS_SPEC_ANNOTATION: previous_spec_annotation(live)},
    }
    assert live == _live(), "the body must not change its input"
    # The same as canary_patch of the champion (golden-tested): the candidate differs only in its model.
    assert (
        body["spec"]
        == canary_patch(
            CHAMPION,
            storage_uri=CANDIDATE.storage_uri,
            model_sha256=SHA_V4,
            spec_sha256=CANDIDATE.spec_sha256,
            model_version="4",
            canary_percent=10,
        )["spec"]
    )


def test_canary_body_repeated_keeps_the_first_stored_spec() -> None:
    in_rollout = _in_rollout()
    again = canary_body(in_rollout, CANDIDATE, 25)
    assert again is not None and "annotations" not in again["metadata"]
    assert again["spec"]["predictor"]["canaryTrafficPercent"] == 25
    stored = read_previous_spec(apply_merge_patch(in_rollout, again))
    assert stored == PreviousSpec("3", _spec_of(CHAMPION))


def test_canary_body_has_nothing_to_do_when_the_version_is_all_that_is_served() -> None:
    assert canary_body(_live(), CHAMPION, 10) is None


@pytest.mark.parametrize(
    ("live", "params", "message"),
    [
        (_in_rollout(), THIRD, "a rollout of model version 4 is in progress"),
        (_live(), CHAMPION.model_copy(update={"model_sha256": SHA_V5}), "model version 3 is served with model sha256"),
        (_in_rollout(), CANDIDATE.model_copy(update={"model_sha256": SHA_V5}), "model version 4 is served with"),
    ],
)
def test_canary_body_refuses_what_would_lose_track(
    live: dict[str, Any], params: InferenceServiceParams, message: str
) -> None:
    with pytest.raises(DeploymentError, match=message):
        canary_body(live, params, 10)


def test_rollback_body_restores_the_stored_spec_exactly() -> None:
    live = _live()
    # A field InferenceServiceParams does not model, which the canary's whole-container patch drops.
    live["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    canary = apply_merge_patch(live, canary_body(live, CANDIDATE, 10) or {})
    assert "imagePullPolicy" not in canary["spec"]["predictor"]["containers"][0]

    rolled_back = apply_merge_patch(canary, rollback_body(canary))
    assert rolled_back["spec"] == apply_merge_patch(live["spec"], {"predictor": {"canaryTrafficPercent": 0}})
    assert rolled_back["metadata"]["labels"] == live["metadata"]["labels"]
    assert PREVIOUS_SPEC_ANNOTATION not in rolled_back["metadata"].get("annotations", {})


def test_rollback_body_pins_traffic_and_restores_the_champion_as_built() -> None:
    canary = _in_rollout()
    rolled_back = apply_merge_patch(canary, rollback_body(canary))
    validate_manifest(rolled_back)
    expected = build_inference_service(CHAMPION.model_copy(update={"canary_percent": 0}))
    assert rolled_back["spec"] == expected["spec"]
    assert rolled_back["metadata"]["labels"] == expected["metadata"]["labels"]
    # settling after a rollback: promoting the restored spec leaves exactly the original object's spec
    assert apply_merge_patch(rolled_back, promote_body(rolled_back) or {})["spec"] == _live()["spec"]


def test_rollback_body_removes_a_label_the_previous_object_did_not_have() -> None:
    live = apply_merge_patch(_live(), {"metadata": {"labels": {"riskloop.io/model-version": None}}})
    canary = apply_merge_patch(live, canary_body(live, CANDIDATE, 10) or {})
    rolled_back = apply_merge_patch(canary, rollback_body(canary))
    assert "riskloop.io/model-version" not in rolled_back["metadata"]["labels"]


def test_traffic_and_rollback_bodies_need_a_rollout() -> None:
    with pytest.raises(DeploymentError, match=r"(?s)no rollout is in progress.*deploy a challenger first"):
        canary_percent_body(_live(), 50)
    with pytest.raises(DeploymentError, match="no previous spec to roll back to"):
        rollback_body(_live())
    assert canary_percent_body(_in_rollout(), 50) == {
        "metadata": {"resourceVersion": "41"},
        "spec": {"predictor": {"canaryTrafficPercent": 50}},
    }


def test_promote_body_is_the_golden_promote_patch_and_drops_the_stored_spec() -> None:
    body = promote_body(_in_rollout())
    assert body is not None
    assert body["spec"] == promote_patch()["spec"]
    assert body["metadata"] == {"resourceVersion": "41", "annotations": {PREVIOUS_SPEC_ANNOTATION: None}}
    assert promote_body(_live()) is None, "nothing to promote"
    after_rollback = apply_merge_patch(_in_rollout(), rollback_body(_in_rollout()))
    assert promote_body(after_rollback) is not None, "promote settles a rolled-back object"


@pytest.mark.parametrize("percent", [-1, 101, True, 10.0, "10"])
def test_bad_percentages_are_config_errors(percent: Any) -> None:
    with pytest.raises(ConfigError, match="canary_percent must be an integer from 0 to 100"):
        canary_percent_body(_in_rollout(), percent)


# Status, from what KServe writes (InferenceServiceStatus; traffic targets as Knative reports them).

CANARY_STATUS = yaml.safe_load("""
address:
  url: http://fraud-detector.riskloop.svc.cluster.local
components:
  predictor:
    address:
      url: http://fraud-detector-predictor.riskloop.svc.cluster.local
    latestCreatedRevision: fraud-detector-predictor-00002
    latestReadyRevision: fraud-detector-predictor-00002
    latestRolledoutRevision: fraud-detector-predictor-00001
    traffic:
    - latestRevision: true
      percent: 10
      revisionName: fraud-detector-predictor-00002
      tag: latest
      url: http://latest-fraud-detector-predictor-riskloop.example.com
    - latestRevision: false
      percent: 90
      revisionName: fraud-detector-predictor-00001
      tag: prev
      url: http://prev-fraud-detector-predictor-riskloop.example.com
    url: http://fraud-detector-predictor-riskloop.example.com
conditions:
- lastTransitionTime: "2025-11-27T10:04:51Z"
  status: "True"
  type: IngressReady
- lastTransitionTime: "2025-11-27T10:04:50Z"
  severity: Info
  status: "True"
  type: LatestDeploymentReady
- lastTransitionTime: "2025-11-27T10:04:50Z"
  severity: Info
  status: "True"
  type: PredictorConfigurationReady
- lastTransitionTime: "2025-11-27T10:04:51Z"
  status: "True"
  type: PredictorReady
- lastTransitionTime: "2025-11-27T10:04:51Z"
  severity: Info
  status: "True"
  type: PredictorRouteReady
- lastTransitionTime: "2025-11-27T10:04:51Z"
  status: "True"
  type: Ready
- lastTransitionTime: "2025-11-27T10:04:51Z"
  severity: Info
  status: "True"
  type: RoutesReady
deploymentMode: Knative
modelStatus:
  copies:
    failedCopies: 0
    totalCopies: 1
  states:
    activeModelState: Loaded
    targetModelState: Loaded
  transitionStatus: UpToDate
observedGeneration: 2
url: http://fraud-detector-riskloop.example.com
""")

# The candidate's revision fails to start (e.g. its model.ubj does not match the expected sha256): Knative
# resolves the "latest" target to the last ready revision, so both targets name revision 00001.
FAILED_CANARY_STATUS = yaml.safe_load("""
components:
  predictor:
    latestCreatedRevision: fraud-detector-predictor-00002
    latestReadyRevision: fraud-detector-predictor-00001
    latestRolledoutRevision: fraud-detector-predictor-00001
    traffic:
    - latestRevision: true
      percent: 10
      revisionName: fraud-detector-predictor-00001
      tag: latest
      url: http://latest-fraud-detector-predictor-riskloop.example.com
    - latestRevision: false
      percent: 90
      revisionName: fraud-detector-predictor-00001
      tag: prev
      url: http://prev-fraud-detector-predictor-riskloop.example.com
conditions:
- lastTransitionTime: "2025-11-27T10:09:12Z"
  status: "True"
  type: IngressReady
- lastTransitionTime: "2025-11-27T10:09:12Z"
  message: 'Revision "fraud-detector-predictor-00002" failed with message: Container failed with: model.ubj does not
    match RISKLOOP_EXPECTED_MODEL_SHA256.'
  reason: RevisionFailed
  status: "False"
  type: PredictorReady
- lastTransitionTime: "2025-11-27T10:09:12Z"
  message: 'Revision "fraud-detector-predictor-00002" failed with message: Container failed with: model.ubj does not
    match RISKLOOP_EXPECTED_MODEL_SHA256.'
  reason: RevisionFailed
  status: "False"
  type: Ready
modelStatus:
  lastFailureInfo:
    exitCode: 1
    message: model.ubj does not match RISKLOOP_EXPECTED_MODEL_SHA256.
    reason: ModelLoadFailed
  states:
    activeModelState: Loaded
    targetModelState: FailedToLoad
  transitionStatus: BlockedByFailedLoad
observedGeneration: 2
url: http://fraud-detector-riskloop.example.com
""")


def _with_status(obj: dict[str, Any], st: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "generation": generation}, "status": st}


def test_status_of_a_canary_in_progress() -> None:
    st = parse_status(_with_status(_in_rollout(), CANARY_STATUS))
    assert st == DeliveryStatus(
        name="fraud-detector",
        namespace="riskloop",
        ready=True,
        reason=None,
        url="http://fraud-detector-riskloop.example.com",
        model_version="4",
        previous_model_version="3",
        canary_percent=10,
        traffic=(
            RevisionTraffic(
                revision="fraud-detector-predictor-00002",
                percent=10,
                tag="latest",
                latest=True,
                url="http://latest-fraud-detector-predictor-riskloop.example.com",
            ),
            RevisionTraffic(
                revision="fraud-detector-predictor-00001",
                percent=90,
                tag="prev",
                latest=False,
                url="http://prev-fraud-detector-predictor-riskloop.example.com",
            ),
        ),
        latest_created_revision="fraud-detector-predictor-00002",
        latest_ready_revision="fraud-detector-predictor-00002",
        rolled_out_revision="fraud-detector-predictor-00001",
        previous_rolled_out_revision=None,
        reconciled=True,
    )
    assert st.rollout_in_progress and st.latest_revision_ready
    assert sum(t.percent for t in st.traffic) == 100


def test_status_of_a_failed_canary_says_why_and_where_its_traffic_goes() -> None:
    st = parse_status(_with_status(_in_rollout(), FAILED_CANARY_STATUS))
    assert not st.ready and not st.latest_revision_ready
    assert st.reason is not None and st.reason.startswith('RevisionFailed: Revision "fraud-detector-predictor-00002"')
    assert {t.revision for t in st.traffic} == {"fraud-detector-predictor-00001"}


def test_status_before_kserve_reconciles() -> None:
    st = parse_status(_live())
    assert (st.ready, st.url, st.traffic, st.reconciled) == (False, None, (), False)
    assert st.reason == "KServe has not reported readiness yet"
    assert (st.model_version, st.previous_model_version, st.canary_percent) == ("3", None, None)
    stale = parse_status(_with_status(_in_rollout(), CANARY_STATUS, generation=3))
    assert stale.ready and not stale.reconciled, "status observed generation 2, the spec is at 3"


def test_status_tolerates_odd_shapes() -> None:
    st = parse_status(
        {
            "metadata": {"name": "x", "namespace": "y"},
            "status": {
                "conditions": [{"type": "Ready", "status": "Unknown"}, "junk"],
                "components": {"predictor": {"traffic": [{"percent": 100}, 7]}},
                "url": 3,
            },
        }
    )
    assert (st.ready, st.reason, st.url) == (False, "Ready is Unknown", None)
    assert st.traffic == (RevisionTraffic(revision=None, percent=100, tag=None, latest=False, url=None),)


# Errors from the API server, as the client raises them.

RBAC_MESSAGE = (
    'inferenceservices.serving.kserve.io "fraud-detector" is forbidden: User '
    '"system:serviceaccount:kubeflow:pipeline-runner" cannot patch resource "inferenceservices" in API '
    'group "serving.kserve.io" in the namespace "riskloop"'
)


@pytest.mark.parametrize(
    ("code", "reason", "message", "expected"),
    [
        (
            403,
            "Forbidden",
            RBAC_MESSAGE,
            r"(?s)may not patch inferenceservices in namespace riskloop.*cannot patch resource.*lacks RBAC on "
            r"inferenceservices in namespace riskloop: install the chart's delivery Role",
        ),
        (
            403,
            "Forbidden",
            'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
            "deploymentMode cannot be changed",
            r"(?s)refused to patch .* as invalid: admission webhook",
        ),
        (
            422,
            "Unprocessable Entity",
            'InferenceService.serving.kserve.io "fraud-detector" is invalid: '
            "spec.predictor.canaryTrafficPercent: Invalid value: 101",
            r"(?s)as invalid: .*canaryTrafficPercent.*the message names the field",
        ),
        (
            404,
            "Not Found",
            'inferenceservices.serving.kserve.io "fraud-detector" not found',
            r"(?s)InferenceService fraud-detector does not exist in namespace riskloop.*deploy a model first",
        ),
        (404, "Not Found", "the server could not find the requested resource", r"(?s)does not serve.*install KServe"),
        (409, "Conflict", "the object has been modified", r"(?s)conflict on patch.*rerun the step"),
        (401, "Unauthorized", "Unauthorized", r"(?s)did not accept the credentials.*refresh"),
        (
            500,
            "Internal Server Error",
            "etcdserver: request timed out",
            r"(?s)answered 500 Internal Server Error.*retry",
        ),
    ],
)
def test_api_errors_say_what_and_how_to_fix(code: int, reason: str, message: str, expected: str) -> None:
    error = deployment_error(_status_error(code, reason, message), verb="patch", name=NAME, namespace=NS)
    assert isinstance(error, DeploymentError)
    assert error.where == "inferenceservices.serving.kserve.io/fraud-detector in namespace riskloop"
    assert error.fix
    assert re.search(expected, str(error)), str(error)


def test_an_error_without_a_status_body_falls_back_to_the_reason() -> None:
    error = deployment_error(
        ApiException(status=503, reason="Service Unavailable"), verb="get", name=NAME, namespace=NS
    )
    assert "answered 503 Service Unavailable to get: Service Unavailable" in str(error)


# The call sequence, on the fake API.


def test_the_first_deploy_creates_the_object_with_all_traffic() -> None:
    api = FakeCustomObjectsApi()
    result = deploy_challenger(CHAMPION.model_copy(update={"canary_percent": 30}), canary_percent=10, api=api)
    assert result == Rollout("created", NAME, NS, None, "3", None)
    assert api.verbs() == ["get", "create"]
    stored = api.objects[(NS, NAME)]
    assert stored["spec"] == _spec_of(CHAMPION), "the first version has nothing to share traffic with"
    assert api.calls[1].body == build_inference_service(CHAMPION)
    assert api.calls[1].kwargs["field_manager"] == "riskloop"


def test_canary_then_promote() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    assert deploy_challenger(CANDIDATE, canary_percent=10, api=api) == Rollout("canary", NAME, NS, "3", "4", 10)
    stored = api.objects[(NS, NAME)]
    assert stored["spec"] == _spec_of(CANDIDATE, canary_percent=10)
    assert stored["metadata"]["labels"]["riskloop.io/model-version"] == "4"
    assert read_previous_spec(stored) == PreviousSpec("3", _spec_of(CHAMPION))
    assert api.verbs() == ["get", "create", "get", "patch"]
    assert api.calls[-1].kwargs["field_manager"] == "riskloop"

    api.write_status(NAME, NS, CANARY_STATUS)
    st = status(NAME, NS, api=api)
    assert st.ready and st.rollout_in_progress and (st.model_version, st.previous_model_version) == ("4", "3")

    assert set_canary_percent(NAME, NS, 50, api=api) == Rollout("canary_percent", NAME, NS, "3", "4", 50)
    assert api.objects[(NS, NAME)]["spec"]["predictor"]["canaryTrafficPercent"] == 50

    assert promote(NAME, NS, api=api) == Rollout("promoted", NAME, NS, "3", "4", None)
    promoted = api.objects[(NS, NAME)]
    assert promoted["spec"] == _spec_of(CANDIDATE)
    assert PREVIOUS_SPEC_ANNOTATION not in promoted["metadata"]["annotations"]
    assert not status(NAME, NS, api=api).rollout_in_progress
    assert promote(NAME, NS, api=api).change == "unchanged", "a retried promote does nothing"


def test_canary_then_rollback_then_settle() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    champion = copy.deepcopy(api.objects[(NS, NAME)])
    deploy_challenger(CANDIDATE, canary_percent=10, api=api)

    assert rollback(NAME, NS, api=api) == Rollout("rolled_back", NAME, NS, "4", "3", 0)
    rolled_back = api.objects[(NS, NAME)]
    assert rolled_back["spec"] == _spec_of(CHAMPION, canary_percent=0)
    assert rolled_back["metadata"]["labels"] == champion["metadata"]["labels"]
    assert PREVIOUS_SPEC_ANNOTATION not in rolled_back["metadata"]["annotations"]

    with pytest.raises(DeploymentError, match="no rollout is in progress"):
        rollback(NAME, NS, api=api)
    with pytest.raises(DeploymentError, match="no rollout is in progress"):
        set_canary_percent(NAME, NS, 10, api=api)

    assert promote(NAME, NS, api=api) == Rollout("promoted", NAME, NS, None, "3", None)
    assert api.objects[(NS, NAME)]["spec"] == champion["spec"]


def test_a_new_canary_after_a_rollback_stores_the_restored_spec() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    rollback(NAME, NS, api=api)
    assert deploy_challenger(THIRD, canary_percent=20, api=api) == Rollout("canary", NAME, NS, "3", "5", 20)
    rollback(NAME, NS, api=api)
    assert api.objects[(NS, NAME)]["spec"] == _spec_of(CHAMPION, canary_percent=0)


def test_rollback_after_a_promotion_is_refused_with_the_way_back() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    promote(NAME, NS, api=api)
    with pytest.raises(DeploymentError, match="deploying the earlier version as a challenger"):
        rollback(NAME, NS, api=api)


def test_deploy_is_safe_to_retry() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    assert deploy_challenger(CHAMPION, canary_percent=10, api=api) == Rollout("unchanged", NAME, NS, "3", "3", None)
    assert api.verbs() == ["get", "create", "get"], "nothing written"

    deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    again = deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    assert again == Rollout("canary", NAME, NS, "3", "4", 10)
    assert read_previous_spec(api.objects[(NS, NAME)]) == PreviousSpec("3", _spec_of(CHAMPION)), (
        "the retry must not store the canary as the spec to roll back to"
    )


def test_deploy_refuses_a_second_rollout() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    before = copy.deepcopy(api.objects[(NS, NAME)])
    with pytest.raises(DeploymentError, match=r"(?s)rollout of model version 4 is in progress.*promote or roll back"):
        deploy_challenger(THIRD, canary_percent=10, api=api)
    assert api.objects[(NS, NAME)] == before


def test_a_concurrent_writer_makes_the_operation_read_again() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    api.before_patch.append(lambda: api.edit(NAME, NS, {"metadata": {"labels": {"team": "risk"}}}))
    result = deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    assert result.change == "canary"
    assert api.verbs() == ["get", "create", "get", "patch", "get", "patch"]
    stored = api.objects[(NS, NAME)]
    assert stored["metadata"]["labels"]["team"] == "risk", "the other writer's change survives"
    assert read_previous_spec(stored) == PreviousSpec("3", _spec_of(CHAMPION))


def test_a_writer_that_always_gets_in_between_ends_in_a_conflict_error() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    edits = iter(range(kube.ATTEMPTS))
    api.before_patch.extend(
        [lambda: api.edit(NAME, NS, {"metadata": {"labels": {"edit": str(next(edits))}}})] * kube.ATTEMPTS
    )
    with pytest.raises(DeploymentError, match="conflict on patch"):
        set_canary_percent(NAME, NS, 50, api=api)
    assert api.verbs()[-2 * kube.ATTEMPTS :] == ["get", "patch"] * kube.ATTEMPTS


def test_missing_object_missing_crd_and_unreachable_api() -> None:
    with pytest.raises(DeploymentError, match="InferenceService fraud-detector does not exist in namespace riskloop"):
        promote(NAME, NS, api=FakeCustomObjectsApi())
    with pytest.raises(DeploymentError, match="install KServe"):
        deploy_challenger(CHAMPION, canary_percent=10, api=FakeCustomObjectsApi(crd_installed=False))
    api = FakeCustomObjectsApi()
    api.fail_next("get", urllib3.exceptions.MaxRetryError(None, "/apis", "Connection refused"))  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable, match="cannot reach the Kubernetes API server"):
        status(NAME, NS, api=api)


def test_find_status_is_none_for_a_champion_nothing_serves_yet() -> None:
    """rollout.current reads it: a missing object means "create the champion's", a missing CRD stays an error."""
    api = FakeCustomObjectsApi()
    assert kube.find_status(NAME, NS, api=api) is None
    _deployed(api)
    found = kube.find_status(NAME, NS, api=api)
    assert found is not None and found.model_version == "3" and not found.rollout_in_progress
    with pytest.raises(DeploymentError, match="install KServe"):
        kube.find_status(NAME, NS, api=FakeCustomObjectsApi(crd_installed=False))


def test_a_webhook_refusal_leaves_the_object_alone() -> None:
    api = FakeCustomObjectsApi()
    _deployed(api)
    before = copy.deepcopy(api.objects[(NS, NAME)])
    api.fail_next(
        "patch",
        _status_error(
            403,
            "Forbidden",
            'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: bad',
        ),
    )
    with pytest.raises(DeploymentError, match="as invalid: admission webhook"):
        deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    assert api.objects[(NS, NAME)] == before


def test_without_rbac_the_error_names_the_role_to_install() -> None:
    api = FakeCustomObjectsApi(allowed_verbs={"get"})
    with pytest.raises(
        DeploymentError,
        match=r"(?s)may not create inferenceservices in namespace riskloop.*"
        r"install the chart's delivery Role",
    ):
        deploy_challenger(CHAMPION, canary_percent=10, api=api)


def test_every_call_is_permitted_by_the_delivery_role() -> None:
    role, _ = delivery_rbac("riskloop", "kubeflow", "pipeline-runner")
    (rule,) = role["rules"]
    api = FakeCustomObjectsApi(allowed_verbs=rule["verbs"])
    _deployed(api)
    deploy_challenger(CANDIDATE, canary_percent=10, api=api)
    set_canary_percent(NAME, NS, 50, api=api)
    status(NAME, NS, api=api)
    rollback(NAME, NS, api=api)
    promote(NAME, NS, api=api)
    deploy_challenger(THIRD, canary_percent=10, api=api)
    promote(NAME, NS, api=api)
    assert set(api.verbs()) == {"get", "create", "patch"} <= set(rule["verbs"])
    assert (rule["apiGroups"], rule["resources"]) == ([kube.GROUP], [kube.PLURAL])


def test_bad_percentages_are_refused_before_any_call() -> None:
    api = FakeCustomObjectsApi()
    with pytest.raises(ConfigError):
        deploy_challenger(CANDIDATE, canary_percent=150, api=api)
    with pytest.raises(ConfigError):
        set_canary_percent(NAME, NS, -5, api=api)
    assert api.calls == []


# What goes over the wire: the real CustomObjectsApi, stopped at its HTTP pool.


@dataclass
class _Response:
    status: int
    reason: str
    data: bytes

    def getheaders(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.getheaders().get(name, default)


class _Pool:
    """Records requests and answers each with the next canned response."""

    def __init__(self, *responses: _Response) -> None:
        self.responses = list(responses)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> _Response:
        self.requests.append({"method": method, "url": url, **kwargs})
        return self.responses.pop(0)


def _real_api(pool: _Pool) -> CustomObjectsApi:
    configuration = Configuration()
    configuration.host = "https://k8s.example.invalid:6443"
    api = CustomObjectsApi(ApiClient(configuration))
    api.api_client.rest_client.pool_manager = pool
    return api


def test_patches_go_out_as_json_merge_patches_with_their_nulls() -> None:
    live = _in_rollout()
    promoted = apply_merge_patch(live, promote_body(live) or {})
    pool = _Pool(_Response(200, "OK", json.dumps(live).encode()), _Response(200, "OK", json.dumps(promoted).encode()))
    assert promote(NAME, NS, api=_real_api(pool)).change == "promoted"
    get, patch = pool.requests
    assert (get["method"], patch["method"]) == ("GET", "PATCH")
    assert patch["url"].startswith(
        "https://k8s.example.invalid:6443/apis/serving.kserve.io/v1beta1/namespaces/"
        "riskloop/inferenceservices/fraud-detector"
    )
    assert "fieldManager=riskloop" in patch["url"]
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"
    sent = json.loads(patch["body"])
    assert sent["spec"] == {"predictor": {"canaryTrafficPercent": None}}, "null is how a merge patch removes a field"
    assert sent["metadata"]["annotations"] == {PREVIOUS_SPEC_ANNOTATION: None}


def test_writes_ask_for_strict_field_validation() -> None:
    """Without fieldValidation=Strict the API server drops a field its CRD lacks and only warns (seen on the node,
    tests/cluster/test_canary.py): a cluster's older KServe would silently lose part of the spec."""
    created = build_inference_service(CHAMPION)
    live = _in_rollout()
    pool = _Pool(
        _Response(404, "Not Found", json.dumps({"kind": "Status", "code": 404, "message": "not found"}).encode()),
        _Response(201, "Created", json.dumps(created).encode()),
        _Response(200, "OK", json.dumps(live).encode()),
        _Response(200, "OK", json.dumps(apply_merge_patch(live, promote_body(live) or {})).encode()),
    )
    api = _real_api(pool)
    assert deploy_challenger(CHAMPION, canary_percent=10, api=api).change == "created"
    assert promote(NAME, NS, api=api).change == "promoted"
    writes = [r for r in pool.requests if r["method"] in ("POST", "PATCH")]
    assert [r["method"] for r in writes] == ["POST", "PATCH"]
    for request in writes:
        assert "fieldValidation=Strict" in request["url"], request["url"]


def test_a_real_403_becomes_the_rbac_error() -> None:
    forbidden = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": RBAC_MESSAGE,
        "reason": "Forbidden",
        "code": 403,
    }
    pool = _Pool(_Response(403, "Forbidden", json.dumps(forbidden).encode()))
    with pytest.raises(DeploymentError, match=r"(?s)cannot patch resource.*install the chart's delivery Role"):
        status(NAME, NS, api=_real_api(pool))


# The production default.


def test_without_cluster_or_kubeconfig_the_error_says_how_to_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(DeploymentError, match=r"(?s)no Kubernetes configuration.*point KUBECONFIG"):
        kube.custom_objects_api()


def test_outside_a_pod_the_kubeconfig_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kind",
                "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "kind", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "kind"}}],
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api = kube.custom_objects_api()
    assert isinstance(api, CustomObjectsApi)
    assert api.api_client.configuration.host == "https://127.0.0.1:6443"
    assert Configuration.get_default_copy().host != "https://127.0.0.1:6443", "the process default is untouched"
