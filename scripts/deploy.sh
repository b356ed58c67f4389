#!/usr/bin/env bash
# Deploy riskloop and its prerequisites to Kubernetes (make deploy / make undeploy).
#
#   scripts/deploy.sh up     prerequisites (manifests/, pinned in manifests/versions.env), the image,
#                            the chart (its Jobs land the kind demo's data under the storage root and
#                            publish the pipelines), a first training run once that data is there, the URLs
#   scripts/deploy.sh down   remove the release; with CLUSTER=kind delete the kind cluster
#
# Environment:
#   CLUSTER=kind   create (or reuse) the kind cluster "riskloop" and `kind load` the image into it;
#                  otherwise the current kube context is used and the image must be pullable
#                  (CI pushes it; PUSH_IMAGE=1 pushes from here)
#   DRY_RUN=1      touch no cluster: render everything that would be applied into build/deploy/
#                  and print the commands instead of running them
#   VALUES         chart values file (default helm/riskloop/envs/kind.yaml or envs/cloud.yaml)
#   RELEASE, NAMESPACE   Helm release and its namespace (riskloop, riskloop)
#
# Idempotent: every step is an apply / upgrade --install / "create if missing"; the first training
# run is started only when the release is installed for the first time.
# Written for a machine with Docker, kind, kubectl and helm; it was not run where it was written.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck disable=SC1091  # plain KEY=VALUE pins, checked by tests/unit/test_manifests.py
. manifests/versions.env

ACTION="${1:-up}"
CLUSTER="${CLUSTER:-}"
DRY_RUN="${DRY_RUN:-}"
RELEASE="${RELEASE:-riskloop}"
NAMESPACE="${NAMESPACE:-riskloop}"
MODELS_NAMESPACE="${MODELS_NAMESPACE:-riskloop-models}"
KIND_NAME=riskloop
if [[ "$CLUSTER" == kind ]]; then
  VALUES="${VALUES:-helm/riskloop/envs/kind.yaml}"
else
  VALUES="${VALUES:-helm/riskloop/envs/cloud.yaml}"
fi
RISKLOOP="${RISKLOOP:-$REPO_ROOT/.venv/bin/riskloop}"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$REPO_ROOT/.venv/bin/kubectl")}"
OUT="$REPO_ROOT/build/deploy"
WAIT="${WAIT_TIMEOUT:-900s}"
KFP_LOCAL_PORT="${KFP_LOCAL_PORT:-18888}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 2; }
dry() { [[ -n "$DRY_RUN" && "$DRY_RUN" != 0 ]]; }
# run a command that changes something; under DRY_RUN only print it
run() { if dry; then printf '+ %s\n' "$*"; else "$@"; fi; }
need() { command -v "$1" >/dev/null || die "$1 is not installed ($2)"; }

IMAGE="$("$RISKLOOP" version --image)"
TAG="$("$RISKLOOP" version --tag)"
IMAGE_REPOSITORY="${IMAGE%:*}"

check_tools() {
  [[ -f "$VALUES" ]] || die "values file $VALUES does not exist (set VALUES=helm/riskloop/envs/<env>.yaml)"
  [[ -x "$RISKLOOP" ]] || die "$RISKLOOP missing: run make setup"
  dry && return 0
  need docker "https://docs.docker.com/get-docker/"
  need helm "https://helm.sh/docs/intro/install/ (>= ${HELM_MIN_VERSION})"
  need "$KUBECTL" "https://kubernetes.io/docs/tasks/tools/"
  if [[ "$CLUSTER" == kind ]]; then need kind "https://kind.sigs.k8s.io (${KIND_VERSION})"; fi
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (is Docker running?)"
}

cluster_up() {
  [[ "$CLUSTER" == kind ]] || { log "using kube context $("$KUBECTL" config current-context 2>/dev/null || echo '?')"; return 0; }
  if ! dry && kind get clusters 2>/dev/null | grep -qx "$KIND_NAME"; then
    log "kind cluster $KIND_NAME exists"
  else
    log "creating kind cluster $KIND_NAME (${KIND_NODE_IMAGE})"
    run kind create cluster --name "$KIND_NAME" --config manifests/kind/cluster.yaml --wait 120s
  fi
  run "$KUBECTL" config use-context "kind-$KIND_NAME"
}

# kubectl apply of a kustomization; under DRY_RUN render it into build/deploy/ instead
apply_k() {
  local dir="$1" name
  name="$(echo "${dir#manifests/}" | tr / -)"
  if dry; then
    if "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
      printf '  rendered %s -> build/deploy/%s.yaml\n' "$dir" "$name"
    else
      printf '  %s is remote (needs the network to render): kubectl apply --server-side -k %s\n' "$dir" "$dir"
      rm -f "$OUT/$name.yaml"
    fi
    rm -f "$OUT/$name.err"
    return 0
  fi
  "$KUBECTL" apply --server-side --force-conflicts -k "$dir"
}

wait_deployments() {
  run "$KUBECTL" wait deployment --all -n "$1" --for=condition=Available --timeout="$WAIT"
}

prerequisites() {
  log "namespaces"
  apply_k manifests/riskloop
  log "cert-manager ${CERT_MANAGER_VERSION}"
  apply_k manifests/cert-manager
  wait_deployments cert-manager
  log "Knative Serving ${KNATIVE_SERVING_VERSION} with Kourier ${KNATIVE_KOURIER_VERSION}"
  apply_k manifests/knative
  apply_k manifests/knative/config
  wait_deployments knative-serving
  wait_deployments kourier-system
  log "KServe ${KSERVE_VERSION} (Serverless)"
  apply_k manifests/kserve
  wait_deployments kserve
  apply_k manifests/kserve/runtimes
  log "Kubeflow Pipelines ${KFP_VERSION}"
  apply_k manifests/kfp/cluster-scoped
  run "$KUBECTL" wait --for condition=established --timeout=120s crd/applications.app.k8s.io
  apply_k manifests/kfp
  wait_deployments kubeflow
  log "kube-prometheus-stack ${KUBE_PROMETHEUS_STACK_VERSION}, Pushgateway chart ${PUSHGATEWAY_CHART_VERSION}"
  run helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
  run helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    --version "${KUBE_PROMETHEUS_STACK_VERSION}" -n monitoring \
    -f manifests/monitoring/kube-prometheus-stack.values.yaml --wait --timeout "$WAIT"
  run helm upgrade --install prometheus-pushgateway prometheus-community/prometheus-pushgateway \
    --version "${PUSHGATEWAY_CHART_VERSION}" -n monitoring \
    -f manifests/monitoring/prometheus-pushgateway.values.yaml --wait --timeout "$WAIT"
}

image() {
  log "image $IMAGE"
  run docker build --build-arg "RISKLOOP_GIT_COMMIT=$(git rev-parse HEAD)" \
    --build-arg "RISKLOOP_IMAGE_REPOSITORY=$IMAGE_REPOSITORY" -t "$IMAGE" .
  if [[ "$CLUSTER" == kind ]]; then
    run kind load docker-image "$IMAGE" --name "$KIND_NAME"
  elif [[ "${PUSH_IMAGE:-}" == 1 ]]; then
    run docker push "$IMAGE"
  else
    log "not pushing $IMAGE (CI pushes main's images; PUSH_IMAGE=1 pushes from here)"
  fi
}

# riskloop-s3 in the namespaces given: object-store credentials and endpoint that MLflow, the chart's Jobs,
# the pipeline steps and the predictor (its prediction log under the storage root) read by name. On kind
# it points at KFP's own MinIO; elsewhere it must exist already (your bucket, your keys), except in the
# model namespace, which the chart creates: there it is copied from the release namespace when missing.
s3_secret() {
  local ns
  if [[ "$CLUSTER" != kind ]]; then
    for ns in "$@"; do
      if [[ "$ns" == "$MODELS_NAMESPACE" ]]; then
        if dry; then printf '+ copy secret riskloop-s3 from %s to %s unless it exists\n' "$NAMESPACE" "$ns"; continue; fi
        "$KUBECTL" get secret riskloop-s3 -n "$ns" >/dev/null 2>&1 && continue
        log "riskloop-s3 -> $ns (copied from $NAMESPACE)"
        # through a pipe, never the command line: the keys do not show in the process list
        "$KUBECTL" get secret riskloop-s3 -n "$NAMESPACE" -o json | "$PYTHON" -c 'import json, sys
s = json.load(sys.stdin)
print(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": s.get("type", "Opaque"), "data": s["data"],
                  "metadata": {"name": "riskloop-s3", "namespace": sys.argv[1]}}))' "$ns" | "$KUBECTL" apply -f -
        continue
      fi
      dry && continue
      "$KUBECTL" get secret riskloop-s3 -n "$ns" >/dev/null 2>&1 || die "secret riskloop-s3 is missing in \
namespace $ns: create it with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and MLFLOW_S3_ENDPOINT_URL (README)"
    done
    return 0
  fi
  log "riskloop-s3 -> KFP's MinIO in $*"
  local key secret
  if dry; then key=minio; secret=minio123; else
    key="$("$KUBECTL" get secret mlpipeline-minio-artifact -n kubeflow -o jsonpath='{.data.accesskey}' | base64 -d)"
    secret="$("$KUBECTL" get secret mlpipeline-minio-artifact -n kubeflow -o jsonpath='{.data.secretkey}' | base64 -d)"
  fi
  for ns in "$@"; do
    if dry; then printf '+ kubectl create secret generic riskloop-s3 -n %s (apply)\n' "$ns"; continue; fi
    # the keys go through a file descriptor (printf is a builtin), never onto a command line
    "$KUBECTL" create secret generic riskloop-s3 -n "$ns" --dry-run=client -o yaml --from-env-file=<(
      printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nMLFLOW_S3_ENDPOINT_URL=%s\n' "$key" "$secret" \
        http://minio-service.kubeflow.svc.cluster.local:9000) | "$KUBECTL" apply -f -
  done
}

# the bucket MLflow's artifacts and the storage root (s3://riskloop/state: landing data, prediction log,
# monitoring state) go to, created once with the image's boto3
s3_bucket() {
  [[ "$CLUSTER" == kind ]] || return 0
  local key=minio secret=minio123
  if ! dry; then
    key="$("$KUBECTL" get secret mlpipeline-minio-artifact -n kubeflow -o jsonpath='{.data.accesskey}' | base64 -d)"
    secret="$("$KUBECTL" get secret mlpipeline-minio-artifact -n kubeflow -o jsonpath='{.data.secretkey}' | base64 -d)"
  fi
  run "$KUBECTL" run riskloop-bucket -n kubeflow --rm -i --restart=Never --image="$IMAGE" \
    --image-pull-policy=IfNotPresent --env=AWS_ACCESS_KEY_ID="$key" --env=AWS_SECRET_ACCESS_KEY="$secret" -- \
    python -c "import boto3, botocore; s3 = boto3.client('s3', endpoint_url='http://minio-service.kubeflow:9000')
try: s3.create_bucket(Bucket='riskloop')
except botocore.exceptions.ClientError as e: print('bucket:', e.response['Error']['Code'])"
}

render_chart() {
  local into="$OUT/helm-riskloop.yaml"
  if command -v helm >/dev/null; then
    helm template "$RELEASE" helm/riskloop -n "$NAMESPACE" -f "$VALUES" --set image.tag="$TAG" \
      --set image.repository="$IMAGE_REPOSITORY" >"$into"
  else  # no helm binary: the same render through the Helm SDK binding of the dev environment
    "$PYTHON" - "$VALUES" "$TAG" "$IMAGE_REPOSITORY" "$RELEASE" "$NAMESPACE" "$into" <<'PY'
import sys, yaml, helm_python
values_file, tag, repository, release, namespace, into = sys.argv[1:]
values = yaml.safe_load(open(values_file)) or {}
values.setdefault("image", {}).update(tag=tag, repository=repository)
rendered = helm_python.Chart.load("helm/riskloop").render(values, name=release, namespace=namespace, is_install=True)
with open(into, "w") as f:
    for path, text in sorted(rendered.items()):
        if not path.endswith(".txt") and text.strip():
            f.write(f"---\n# Source: {path}\n{text.strip()}\n")
PY
  fi
  printf '  rendered helm/riskloop with %s -> build/deploy/helm-riskloop.yaml\n' "$VALUES"
}

chart() {
  log "chart helm/riskloop, release $RELEASE in $NAMESPACE, image tag $TAG, values $VALUES"
  if dry; then render_chart; fi
  run helm upgrade --install "$RELEASE" helm/riskloop -n "$NAMESPACE" -f "$VALUES" \
    --set image.tag="$TAG" --set image.repository="$IMAGE_REPOSITORY" --wait --wait-for-jobs --timeout "$WAIT"
}

# The landing data the first training run ingests: on kind the chart's synthetic-data Job (a post-install
# hook, syntheticData.enabled in envs/kind.yaml) writes it under the storage root. Helm has waited for the
# hook already; this fails here, saying why, rather than in the run's ingest step. Without the Job the data
# is the operator's: <s3.storageUri>/data/<spec>/transactions/date=YYYY-MM-DD/part-0.parquet.
landing_data() {
  local selector="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=synthetic-data"
  local jobs=""
  if dry; then
    [[ "$(<"$OUT/helm-riskloop.yaml")" == *"app.kubernetes.io/component: synthetic-data"* ]] && jobs=rendered
  else
    jobs="$("$KUBECTL" get job -n "$NAMESPACE" -l "$selector" -o name)"
  fi
  if [[ -z "$jobs" ]]; then
    log "no synthetic-data Job (syntheticData.enabled is false in $VALUES): the first training run reads the \
landing data already under s3.storageUri"
    return 0
  fi
  log "landing data: waiting for the synthetic-data Job"
  run "$KUBECTL" wait job -n "$NAMESPACE" -l "$selector" --for=condition=Complete --timeout="$WAIT"
}

first_training_run() {
  log "first training run"
  run "$RISKLOOP" compile --out build/pipelines
  if dry; then
    printf '+ kubectl port-forward -n kubeflow svc/ml-pipeline %s:8888 &\n' "$KFP_LOCAL_PORT"
    printf '+ %s cluster run --kfp-host http://127.0.0.1:%s --pipeline training\n' "$RISKLOOP" "$KFP_LOCAL_PORT"
    return 0
  fi
  "$KUBECTL" port-forward -n kubeflow svc/ml-pipeline "$KFP_LOCAL_PORT:8888" >/dev/null 2>&1 &
  local pf=$!
  # shellcheck disable=SC2064  # expand now: the pid is known here
  trap "kill $pf 2>/dev/null || true" EXIT
  for _ in $(seq 30); do curl -fsS "http://127.0.0.1:$KFP_LOCAL_PORT/apis/v2beta1/healthz" >/dev/null 2>&1 && break; sleep 2; done
  "$RISKLOOP" cluster run --kfp-host "http://127.0.0.1:$KFP_LOCAL_PORT" --pipeline training \
    --pipelines-dir build/pipelines --version "$TAG"
  kill "$pf" 2>/dev/null || true
}

urls() {
  cat <<EOF

riskloop $TAG is deployed (release $RELEASE, namespace $NAMESPACE). Reach it with port-forwards:
  Kubeflow UI  kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80                 -> http://127.0.0.1:8080
  MLflow       kubectl port-forward -n $NAMESPACE svc/$RELEASE-mlflow 5000:5000               -> http://127.0.0.1:5000
  Grafana      kubectl port-forward -n monitoring svc/kube-prometheus-stack-grafana 3000:80 -> http://127.0.0.1:3000
  Prometheus   kubectl port-forward -n monitoring svc/prometheus-operated 9090:9090       -> http://127.0.0.1:9090
  Model        kubectl port-forward -n kourier-system svc/kourier 8081:80, then
               curl -H 'Host: fraud-detector-predictor.$MODELS_NAMESPACE.riskloop.local' \\
                 http://127.0.0.1:8081/v1/models/fraud-detector:predict -d @request.json
               (after the delivery step has created the InferenceService)
  Notes        helm get notes $RELEASE -n $NAMESPACE
EOF
}

up() {
  check_tools
  if dry; then mkdir -p "$OUT"; log "DRY_RUN: nothing is applied; renders go to build/deploy/"; fi
  cluster_up
  prerequisites
  image
  s3_secret "$NAMESPACE" kubeflow
  s3_bucket
  local first=1
  if ! dry && helm status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then first=0; fi
  chart
  # the model namespace exists once the chart has created it; the predictor reads the Secret there
  s3_secret "$MODELS_NAMESPACE"
  if [[ "$first" == 1 ]]; then
    landing_data
    first_training_run
  else
    log "release existed: no new training run"
  fi
  urls
}

down() {
  if [[ "$CLUSTER" == kind ]]; then
    log "deleting kind cluster $KIND_NAME"
    run kind delete cluster --name "$KIND_NAME"
    return 0
  fi
  log "removing release $RELEASE and the InferenceServices the delivery code created"
  run "$KUBECTL" delete inferenceservices.serving.kserve.io --all -n "$MODELS_NAMESPACE" --ignore-not-found
  run helm uninstall "$RELEASE" -n "$NAMESPACE" --ignore-not-found --wait
  log "prerequisites (KFP, KServe, Knative, cert-manager, monitoring) stay: other workloads may use them"
}

case "$ACTION" in
  up) up ;;
  down) down ;;
  *) die "unknown action '$ACTION' (use up or down)" ;;
esac
