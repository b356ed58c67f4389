"""The predictor's KServe InferenceService, and the patches that move its traffic.

Pure: nothing here talks to a cluster. The deploy step creates the object that
``build_inference_service`` returns and later sends the patch bodies below as
JSON merge patches (``application/merge-patch+json``); the local deployment
record can apply the very same bodies with ``apply_merge_patch``.

The predictor is a custom container on the project image, without a
ServingRuntime: ``python -m riskloop.serving`` (riskloop's own ASGI predictor:
KServe V1 and Open Inference Protocol V2 REST) serves the model directory
(``model.ubj`` + ``model.json``) that KServe's storage initializer downloads from
the container's ``STORAGE_URI`` to ``/mnt/models``, and refuses a ``model.ubj``
whose sha256 is not ``RISKLOOP_EXPECTED_MODEL_SHA256``.

Traffic moves the way KServe's canary guide does it, on Knative revisions:

- ``canary_patch``: a new revision runs the candidate model and gets N % of the
  traffic; the last rolled-out revision keeps the rest.
- ``promote_patch``: remove ``canaryTrafficPercent``; the latest revision gets
  100 % and becomes the rolled-out one.
- a rollback (``kube.rollback_body``, which reads the live object):
  ``canaryTrafficPercent: 0`` pins all traffic on the last rolled-out revision
  at once, and the spec stored before the canary is put back, so the object
  says what is served. The restored spec runs as one more (idle) revision; a
  later ``promote_patch`` hands it the traffic and lets the rejected revision
  scale away.

Custom resources take no strategic merge patch, and a JSON merge patch replaces
a list whole: every patch that changes the container therefore carries the
complete container, built by the same code as the full object.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal, cast

from kubernetes.utils import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from riskloop.errors import ConfigError
from riskloop.settings import ENV_EXPECTED_MODEL_SHA256, ENV_MODEL_VERSION, ENV_ROLE, env_var

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"

# KServe >= 0.16 names the Knative mode "Knative" ("Serverless" is its deprecated alias) and defaults to
# "Standard" (plain Deployments), where canaryTrafficPercent is ignored, so the annotation is required.
# The alias is not safe: the validating webhook compares the raw annotation with the normalised status,
# so an InferenceService annotated "Serverless" has its later updates rejected ("deploymentMode cannot
# be changed from 'Knative' to 'Serverless'", kserve/kserve#4798 and #5885) — every canary patch would fail.
DEPLOYMENT_MODE = "Knative"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MODEL_VERSION = "riskloop.io/model-version"

# KServe's storage initializer serves only the container of this name, at this path.
CONTAINER_NAME = "kserve-container"
MODEL_DIR = "/mnt/models"
PORT_NAME = "http1"  # Knative: http1 or h2c; the V1/V2 REST server speaks HTTP/1.1
RUN_AS_USER = 1000
# The root filesystem is read-only; the one writable place is an emptyDir at /tmp. What `riskloop serve` writes
# (read in the code, and traced with strace on a 2-worker server answering a prediction): its state dir
# (Settings.ensure_dirs: data/, feast/ with the Feast repo, kfp/, reports/, mlartifacts/; serving/prometheus-multiproc/
# as PROMETHEUS_MULTIPROC_DIR with more than one worker; predictions/ when the storage root is local), Python's
# tempfile dir (Feast's own metrics files, /tmp/feast_metrics_*), and HOME (matplotlib's .cache and .config);
# multiprocessing's semaphores go to /dev/shm, which the container runtime mounts writable. The state dir and HOME are
# set explicitly (explicit env wins over the config map) so they always lie inside the volume.
SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/tmp"
ENV_STATE_DIR = env_var("state_dir")
ENV_FEAST_REGISTRY = env_var("feast.registry")
ENV_EXPECTED_SPEC_SHA256 = env_var("expected_spec_sha256")
ENV_MODEL_NAME = env_var("model_name")
STATE_DIR = "/tmp/riskloop"

FEAST_REGISTRY_KEY = "feast-registry-uri"  # key of the chart's riskloop-db Secret
# Keys of the operator's riskloop-s3 Secret, each injected as the env var of the same name: the prediction log is
# written under RISKLOOP_STORAGE__URI (from the config map) with these credentials, MLFLOW_S3_ENDPOINT_URL naming the
# endpoint. pipelines/cluster.py maps the same keys into every pipeline step.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
ENV_STORAGE_URI = "STORAGE_URI"  # for a custom container, this env var is what drives the storage initializer

FETCHABLE_SCHEMES = ("s3://", "gs://", "pvc://")
_MLFLOW_SCHEMES = ("mlflow-artifacts:", "runs:", "models:")

# Knative routes a canary through tagged hosts "latest-<name>-predictor" and "prev-<name>-predictor";
# each must stay one DNS label (63 characters).
MAX_NAME_LENGTH = 63 - len("latest-") - len("-predictor")
_ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # KServe's own check: a DNS-1035 label
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # KServe routes /v1/models/[\w-]+
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Ports the queue-proxy sidecar binds in every Knative pod.
_KNATIVE_RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091})


class InferenceServiceParams(BaseModel):
    """Everything that varies between two predictor InferenceServices; validated on construction.

    Bad values raise ``pydantic.ValidationError`` naming the field, the rule and the fix.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(description="InferenceService name, e.g. 'fraud-detector'")
    namespace: str
    image: str = Field(description="the project image, tag <version>-<short sha>")
    storage_uri: str = Field(description="model directory the storage initializer fetches: s3://, gs:// or pvc://")
    model_sha256: str = Field(description="sha256 of model.ubj, checked by the predictor before loading")
    spec_sha256: str = Field(
        description=(
            "sha256 of the dataset spec the version was trained under (its 'dataset_spec_sha256' tag); the predictor "
            "refuses a model directory whose dataset_spec.yaml differs"
        )
    )
    model_version: str = Field(description="registry version; env var and label")
    model_name: str = Field(default="fraud-detector", description="registered model name; the V1 route's name")
    canary_percent: int | None = Field(default=None, ge=0, le=100, description="None: no canary field at all")
    service_account: str = "riskloop-predictor"
    config_map: str = Field(default="riskloop-config", description="RISKLOOP_* settings, injected with envFrom")
    db_secret: str = Field(
        default="riskloop-db",
        description=(
            "Secret whose key feast-registry-uri is the Feast SQL registry the predictor resolves its views from"
        ),
    )
    s3_secret: str = Field(
        default="riskloop-s3",
        description=(
            "Secret with the object store's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and MLFLOW_S3_ENDPOINT_URL, "
            "for the prediction log under the storage root"
        ),
    )
    scratch_size_limit: str = Field(
        default="1Gi",
        description=(
            "sizeLimit of the emptyDir at /tmp (state dir, Feast repo, metrics files); "
            "the kubelet evicts a pod above it"
        ),
    )
    cpu_request: str = "500m"
    memory_request: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=3, ge=1)
    port: int = Field(
        default=8080, ge=1024, le=65535, description="non-root without capabilities cannot bind below 1024"
    )
    role: Literal["champion", "challenger"] = "champion"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ISVC_NAME.match(v) or len(v) > MAX_NAME_LENGTH:
            raise ValueError(
                f"{v!r} is not a valid InferenceService name: use lowercase letters, digits and '-', "
                f"start with a letter, end with a letter or digit, at most {MAX_NAME_LENGTH} characters "
                "(Knative's tagged canary hosts must stay one DNS label), e.g. 'fraud-detector'"
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(
                f"{v!r} is not a valid namespace: a DNS-1123 label (lowercase letters, digits, "
                "'-', at most 63 characters), e.g. 'riskloop'"
            )
        return v

    @field_validator("service_account", "config_map", "db_secret", "s3_secret")
    @classmethod
    def _object_name(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN.match(v) or len(v) > 253:
            raise ValueError(
                f"{v!r} is not a valid Kubernetes object name: lowercase letters, digits, '-' and "
                "'.', at most 253 characters"
            )
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        fix = "pin the project image by tag <version>-<short sha> (riskloop.version.runtime_image()) or by digest"
        if not v or any(c.isspace() for c in v):
            raise ValueError(f"image {v!r} is empty or contains whitespace; {fix}")
        if "@" in v:
            digest = v.rsplit("@", 1)[1]
            if not _DIGEST.match(digest):
                raise ValueError(f"image {v!r} has a malformed digest {digest!r}; {fix}")
            return v
        last = v.rsplit("/", 1)[-1]
        if ":" not in last:
            raise ValueError(
                f"image {v!r} has no tag, which means ':latest' and changes under a running revision; {fix}"
            )
        tag = last.rsplit(":", 1)[1]
        if not _TAG.match(tag) or tag == "latest":
            raise ValueError(f"image tag {tag!r} is not a pinned tag; {fix}")
        return v

    @field_validator("storage_uri")
    @classmethod
    def _storage_uri(cls, v: str) -> str:
        if v.startswith(_MLFLOW_SCHEMES):
            raise ValueError(
                f"{v!r} is an MLflow URI, which KServe's storage initializer cannot fetch; point storage_uri "
                "at the model directory in the object store behind MLflow (s3://... or gs://...) or a pvc://"
            )
        scheme = next((s for s in FETCHABLE_SCHEMES if v.startswith(s)), None)
        if scheme is None or len(v) == len(scheme) or any(c.isspace() for c in v):
            raise ValueError(
                f"storage_uri {v!r} is not a model directory KServe can fetch; use one of "
                f"{', '.join(s + '...' for s in FETCHABLE_SCHEMES)}"
            )
        return v

    @field_validator("model_sha256", "spec_sha256")
    @classmethod
    def _sha256(cls, v: str, info: ValidationInfo) -> str:
        hashed, tag = {
            "model_sha256": ("model.ubj", "model_sha256"),
            "spec_sha256": ("dataset_spec.yaml", "dataset_spec_sha256"),
        }[str(info.field_name)]
        v = v.lower()
        if not _SHA256.match(v):
            raise ValueError(
                f"{info.field_name} must be 64 hex characters (sha256 of {hashed}), got {len(v)} "
                f"characters {v[:16]!r}...; take it from the model version's {tag!r} tag"
            )
        return v

    @field_validator("model_version")
    @classmethod
    def _model_version(cls, v: str) -> str:
        if not _LABEL_VALUE.match(v) or len(v) > 63:
            raise ValueError(
                f"model_version {v!r} cannot be a label value: letters, digits, '-', '_', '.', "
                "starting and ending alphanumeric, at most 63 characters (registry versions are '1', "
                "'2', ...)"
            )
        return v

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, v: str) -> str:
        if not _MODEL_NAME.match(v) or len(v) > 63:
            raise ValueError(
                f"model_name {v!r} cannot be routed by KServe (/v1/models/<name>): use letters, "
                "digits, '-' and '_', at most 63 characters"
            )
        return v

    @field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit", "scratch_size_limit")
    @classmethod
    def _quantity(cls, v: str) -> str:
        try:
            parse_quantity(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a Kubernetes quantity (e.g. '500m', '2', '1Gi')") from None
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        if v in _KNATIVE_RESERVED_PORTS:
            raise ValueError(
                f"port {v} is taken by Knative's queue-proxy in the same pod "
                f"({sorted(_KNATIVE_RESERVED_PORTS)}); use e.g. 8080"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> InferenceServiceParams:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        for resource in ("cpu", "memory"):
            request, limit = getattr(self, f"{resource}_request"), getattr(self, f"{resource}_limit")
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"{resource}_request {request} exceeds {resource}_limit {limit}; Kubernetes rejects such a pod"
                )
        return self


def build_inference_service(params: InferenceServiceParams) -> dict[str, Any]:
    """The InferenceService manifest serving ``params``'s model from the project image, Knative mode, restricted pod.

    A plain mapping as the API server takes it (camelCase keys, unset fields left out, keys in the order
    KServe's and Kubernetes' API types declare them); the unit tests check it against those types
    (tests/unit/kserve_schema.py) and the cluster suite against KServe's CRD. The restricted security
    context is set on the container, not the pod: Knative rejects a pod-level ``securityContext`` unless
    the cluster enables ``kubernetes.podspec-securitycontext``, while it accepts these container fields;
    Knative accepts ``automountServiceAccountToken`` only as ``false``, which is what we want.
    """
    predictor: dict[str, Any] = {
        # The model server needs no Kubernetes API; a stolen pod should not get a token.
        "automountServiceAccountToken": False,
        **({"canaryTrafficPercent": params.canary_percent} if params.canary_percent is not None else {}),
        "containers": [_container(params)],
        "maxReplicas": params.max_replicas,
        "minReplicas": params.min_replicas,
        "serviceAccountName": params.service_account,
        "volumes": _volumes(params),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: DEPLOYMENT_MODE},
            "labels": _labels(params),
            "name": params.name,
            "namespace": params.namespace,
        },
        "spec": {"predictor": predictor},
    }


def canary_patch(
    current: InferenceServiceParams,
    *,
    storage_uri: str,
    model_sha256: str,
    spec_sha256: str,
    model_version: str,
    canary_percent: int,
) -> dict[str, Any]:
    """Merge patch that starts a canary: ``current`` with the candidate model, N % of traffic to it.

    ``current`` is what is deployed now (its params); the patch replaces the whole
    container (lists do not merge) and the model-version label, and sets
    ``canaryTrafficPercent``. ``RISKLOOP_ROLE`` is left as it is: promotion must
    not change the revision it promotes. Raises ``ConfigError`` on bad values.
    """
    candidate = _replaced(
        current,
        storage_uri=storage_uri,
        model_sha256=model_sha256,
        spec_sha256=spec_sha256,
        model_version=model_version,
        canary_percent=canary_percent,
    )
    return {
        "metadata": {"labels": {LABEL_MODEL_VERSION: candidate.model_version}},
        # the volumes travel with the container that mounts them: an object created before they existed gets them
        "spec": {
            "predictor": {
                "canaryTrafficPercent": canary_percent,
                "containers": [_container(candidate)],
                "volumes": _volumes(candidate),
            }
        },
    }


def promote_patch() -> dict[str, Any]:
    """Merge patch that promotes the canary: remove ``canaryTrafficPercent`` (KServe's documented way).

    The latest revision then takes 100 % and becomes the rolled-out revision;
    the previous one scales to zero. Removing the field rather than setting
    100 leaves no canary setting behind to shape the next rollout.
    """
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` applied to ``target`` as RFC 7386 does (null deletes, maps merge, lists replace); new dict."""
    return cast(dict[str, Any], _merge(copy.deepcopy(target), patch))


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"key": key, "name": secret}}}


def _http_probe(path: str, port: int, **timing: int) -> dict[str, Any]:
    return {"failureThreshold": 3, "httpGet": {"path": path, "port": port}, **timing, "timeoutSeconds": 2}


def _container(params: InferenceServiceParams) -> dict[str, Any]:
    return {
        # 0.0.0.0 is required in the pod: Knative's queue-proxy and the kubelet's probes reach the
        # server over the pod IP, never over loopback.
        "args": ["--model-dir", MODEL_DIR, "--host", "0.0.0.0", "--port", str(params.port)],
        # The model server's own entry point (riskloop.serving.__main__), not the CLI. The image has no
        # ENTRYPOINT (its CMD is `riskloop --help`): the command must name the executable, the venv's python.
        "command": ["python", "-m", "riskloop.serving"],
        "env": [
            _env(ENV_STORAGE_URI, params.storage_uri),
            _env(ENV_EXPECTED_MODEL_SHA256, params.model_sha256),
            _env(ENV_EXPECTED_SPEC_SHA256, params.spec_sha256),
            _env(ENV_MODEL_VERSION, params.model_version),
            _env(ENV_MODEL_NAME, params.model_name),
            _env(ENV_ROLE, params.role),
            _env(ENV_STATE_DIR, STATE_DIR),
            _env("HOME", SCRATCH_DIR),
            # the feature views come from the registry the pipelines apply to; its URL carries a password
            _secret_env(ENV_FEAST_REGISTRY, params.db_secret, FEAST_REGISTRY_KEY),
            # object-store credentials for the prediction log, from the Secret, never in the spec
            *(_secret_env(key, params.s3_secret, key) for key in S3_SECRET_KEYS),
        ],
        # Explicit env wins over envFrom, so the config map cannot override the model identity.
        "envFrom": [{"configMapRef": {"name": params.config_map}}],
        "image": params.image,
        # alive as long as the server answers; ready only once the model is loaded and its hash checked
        "livenessProbe": _http_probe("/", params.port, initialDelaySeconds=30, periodSeconds=10),
        "name": CONTAINER_NAME,
        "ports": [{"containerPort": params.port, "name": PORT_NAME, "protocol": "TCP"}],
        "readinessProbe": _http_probe(f"/v1/models/{params.model_name}", params.port, periodSeconds=5),
        "resources": {
            "limits": {"cpu": params.cpu_limit, "memory": params.memory_limit},
            "requests": {"cpu": params.cpu_request, "memory": params.memory_request},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"mountPath": SCRATCH_DIR, "name": SCRATCH_VOLUME}],
    }


def _labels(params: InferenceServiceParams) -> dict[str, str]:
    return {LABEL_NAME: "riskloop", LABEL_COMPONENT: "predictor", LABEL_MODEL_VERSION: params.model_version}


def _volumes(params: InferenceServiceParams) -> list[dict[str, Any]]:
    return [{"emptyDir": {"sizeLimit": params.scratch_size_limit}, "name": SCRATCH_VOLUME}]


def _replaced(params: InferenceServiceParams, **changes: Any) -> InferenceServiceParams:
    """``params`` with ``changes``, validated again (``model_copy`` would not validate)."""
    try:
        return InferenceServiceParams.model_validate({**params.model_dump(), **changes})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<params>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"invalid values for the {params.name} InferenceService: {problems}", where=f"namespace {params.namespace}"
        ) from exc


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result
