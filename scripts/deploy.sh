#!/usr/bin/env bash
# Deploy riskloop and its prerequisites to Kubernetes (make deploy / make undeploy).
#
#   scripts/deploy.sh up     prerequisites (manifests/, pinned in manifests/versions.env), the image,
#                            the chart (its Jobs land the kind demo's data under the storage root and
#                            publish the pipelines), a first training run once that data is there, the URLs
#   scripts/deploy.sh down   remove the release; with CLUSTER=kind delete the kind cluster
#
# Environment:
#   CLUSTER=kind   create (or reuse) the kind cluster "riskloop", install every prerequisite into it and
#                  `kind load` the image (named kind.local/riskloop: Knative resolves no tag of that registry);
#                  otherwise the current kube context is used, the image must be pullable (CI pushes it;
#                  PUSH_IMAGE=1 pushes from here) and the prerequisites must be there already
#   PREREQS=1      on a cluster other than kind: install the prerequisites that are missing (pinned versions);
#                  one that is found (by its CRD) is left exactly as it is
#   DRY_RUN=1      touch no cluster: render everything that would be applied into build/deploy/ and print the
#                  commands instead of running them; a kustomization that fails to build stops it (exit 2),
#                  one that only lacks the network to fetch its remote files is listed as remote
#   VALUES         chart values file (default helm/riskloop/envs/kind.yaml or envs/cloud.yaml)
#   RELEASE, NAMESPACE   Helm release and its namespace (riskloop, riskloop)
#   RISKLOOP_IMAGE_REPOSITORY   image repository (lower-cased here, so the pushed name, the chart and the
#                  compiled pipelines agree)
#
# Idempotent: every step is an apply / upgrade --install / "create if missing"; the first training
# run is started only when the release is installed for the first time. Every wait is on the condition
# the next step needs: CRDs Established, Deployments Available, and webhooks that really admit objects
# (a server-side dry run) before objects they validate are applied.
# Written for a machine with Docker, kind, kubectl and helm; it has not been run against a cluster (README).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck disable=SC1091  # plain KEY=VALUE pins, checked by tests/tools/test_manifests.py
. manifests/versions.env

ACTION="${1:-up}"
CLUSTER="${CLUSTER:-}"
DRY_RUN="${DRY_RUN:-}"
PREREQS="${PREREQS:-}"
RELEASE="${RELEASE:-riskloop}"
NAMESPACE="${NAMESPACE:-riskloop}"
MODELS_NAMESPACE="${MODELS_NAMESPACE:-riskloop-models}"
SERVICE_NAME="${SERVICE_NAME:-fraud-detector}"
KIND_NAME=riskloop
# KFP >= 2.16 ships SeaweedFS as its object store: Service seaweedfs in kubeflow, S3 API on 8333 (pod port too)
KFP_OBJECT_STORE="http://seaweedfs.kubeflow.svc.cluster.local:8333"
# Knative's config-deployment skips tag resolution for these registries by default (registries-skipping-tag-
# resolving: kind.local,ko.local,dev.local): an image that exists only inside the kind nodes must use one of them
KIND_IMAGE_REPOSITORY=kind.local/riskloop
if [[ "$CLUSTER" == kind ]]; then
  VALUES="${VALUES:-helm/riskloop/envs/kind.yaml}"
  export RISKLOOP_IMAGE_REPOSITORY="${RISKLOOP_IMAGE_REPOSITORY:-$KIND_IMAGE_REPOSITORY}"
else
  VALUES="${VALUES:-helm/riskloop/envs/cloud.yaml}"
fi
if [[ -n "${RISKLOOP_IMAGE_REPOSITORY:-}" ]]; then
  # registries refuse upper case; GitHub owners often have it: one lower-cased name for build, push, chart and pipelines
  RISKLOOP_IMAGE_REPOSITORY="$(printf '%s' "$RISKLOOP_IMAGE_REPOSITORY" | tr '[:upper:]' '[:lower:]')"
  export RISKLOOP_IMAGE_REPOSITORY
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

# until_ok DESCRIPTION COMMAND...: retry until the command succeeds, at most $WAIT
until_ok() {
  local what="$1" deadline
  shift
  if dry; then printf '+ until %s; do sleep 5; done   # %s\n' "$*" "$what"; return 0; fi
  deadline=$(( SECONDS + ${WAIT%s} ))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || die "timed out after $WAIT waiting until $what"
    sleep 5
  done
}

image_names() {
  IMAGE="$("$RISKLOOP" version --image)"
  TAG="$("$RISKLOOP" version --tag)"
  IMAGE_REPOSITORY="${IMAGE%:*}"
  # the distribution reference grammar (lower case path components): refuse what no registry would take
  [[ "$IMAGE_REPOSITORY" =~ ^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+$ ]] \
    || die "image repository '$IMAGE_REPOSITORY' is not a valid image name (RISKLOOP_IMAGE_REPOSITORY, e.g. ghcr.io/<owner>/riskloop)"
}

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

# A kustomize build that failed for want of the network (remote resources) and not because of what it holds.
NETWORK_ERROR='no such host|Could not resolve host|dial tcp|network is unreachable|i/o timeout|connection refused|TLS handshake timeout|Temporary failure in name resolution'

# kubectl apply of a kustomization; under DRY_RUN render it into build/deploy/ instead
apply_k() {
  local dir="$1" name err
  name="$(echo "${dir#manifests/}" | tr / -)"
  if dry; then
    printf '+ %s apply --server-side --force-conflicts -k %s\n' "$(basename "$KUBECTL")" "$dir"
    if "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
      printf '  rendered %s -> build/deploy/%s.yaml\n' "$dir" "$name"
    elif grep -qE "$NETWORK_ERROR" "$OUT/$name.err"; then
      printf '  %s is remote (needs the network to render)\n' "$dir"
      rm -f "$OUT/$name.yaml"
    else
      err="$(head -c 2000 "$OUT/$name.err")"
      rm -f "$OUT/$name.yaml" "$OUT/$name.err"
      die "kustomize cannot build $dir (not a network problem: fix the kustomization): $err"
    fi
    rm -f "$OUT/$name.err"
    return 0
  fi
  "$KUBECTL" apply --server-side --force-conflicts -k "$dir"
}

# apply once the webhooks that validate these objects admit them (a server-side dry run goes through them)
apply_admitted() {
  until_ok "the webhooks admit $1" "$KUBECTL" apply --server-side --force-conflicts --dry-run=server -k "$1"
  apply_k "$1"
}

wait_crds() {
  run "$KUBECTL" wait --for=condition=Established crd --all --timeout="$WAIT"
}

wait_deployments() {
  run "$KUBECTL" wait deployment --all -n "$1" --for=condition=Available --timeout="$WAIT"
}

# cert-manager's Deployments can be Available before its webhook has a CA (cainjector fills it in): wait until the
# webhook admits a cert-manager object, as `cmctl check api` does
cert_manager_admits() {
  "$KUBECTL" apply --dry-run=server -f - <<'EOF'
apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: riskloop-webhook-probe
  namespace: cert-manager
spec:
  selfSigned: {}
EOF
}

# Prerequisites, in install order, and the CRD that says one is installed (written for bash 3.2 too: no maps)
PREREQ_ORDER="cert-manager knative kserve kfp monitoring"
prereq_crd() {
  case "$1" in
    cert-manager) echo certificates.cert-manager.io ;;
    knative) echo services.serving.knative.dev ;;
    kserve) echo inferenceservices.serving.kserve.io ;;
    kfp) echo scheduledworkflows.kubeflow.org ;;
    monitoring) echo prometheuses.monitoring.coreos.com ;;
  esac
}
INSTALL=" "
installs() { [[ "$INSTALL" == *" $1 "* ]]; }

# Which prerequisites this run installs: all on kind (the cluster is ours); elsewhere only with PREREQS=1 and only
# the missing ones; a found one is never re-applied. Multi-user Kubeflow is refused: riskloop talks to KFP as
# standalone KFP (no user identity), see README.
plan_prerequisites() {
  local p missing=""
  if [[ "$CLUSTER" == kind ]]; then
    INSTALL=" $PREREQ_ORDER "
    return 0
  fi
  if dry; then
    for p in $PREREQ_ORDER; do
      printf '+ %s get crd %s   # found: left as it is; missing: installed with PREREQS=1, else an error\n' \
        "$(basename "$KUBECTL")" "$(prereq_crd "$p")"
    done
    INSTALL=" $PREREQ_ORDER "  # all rendered, so the plan can be checked
    return 0
  fi
  if "$KUBECTL" get crd profiles.kubeflow.org >/dev/null 2>&1; then
    die "this cluster runs multi-user Kubeflow (CRD profiles.kubeflow.org): riskloop supports standalone KFP only \
(README, 'Run on a cluster')"
  fi
  for p in $PREREQ_ORDER; do
    if "$KUBECTL" get crd "$(prereq_crd "$p")" >/dev/null 2>&1; then
      log "$p found (crd $(prereq_crd "$p")): left as it is, riskloop's settings for it are not applied (README)"
    elif [[ "$PREREQS" == 1 ]]; then
      INSTALL="$INSTALL$p "
    else
      missing="$missing $p"
    fi
  done
  [[ -z "$missing" ]] || die "missing prerequisites:$missing. Install them yourself, or run with PREREQS=1 to \
install the pinned versions of just these (manifests/versions.env)"
}

# KServe reads disableIstioVirtualHost at start: with Kourier, status.url must be the predictor's Knative route
kserve_for_kourier() {
  if dry; then
    printf '+ %s patch configmap inferenceservice-config -n kserve --type merge   # disableIstioVirtualHost: true\n' \
      "$(basename "$KUBECTL")"
    printf '+ %s rollout restart deployment/kserve-controller-manager -n kserve\n' "$(basename "$KUBECTL")"
    return 0
  fi
  local patch
  patch="$("$KUBECTL" get configmap inferenceservice-config -n kserve -o json \
    | "$PYTHON" -m riskloop.cluster.prerequisites kserve-ingress)"
  [[ "$patch" == "{}" ]] && return 0
  "$KUBECTL" patch configmap inferenceservice-config -n kserve --type merge -p "$patch"
  "$KUBECTL" rollout restart deployment/kserve-controller-manager -n kserve
  "$KUBECTL" rollout status deployment/kserve-controller-manager -n kserve --timeout="$WAIT"
}

prerequisites() {
  plan_prerequisites
  log "namespaces"
  apply_k manifests/riskloop
  if installs cert-manager; then
    log "cert-manager ${CERT_MANAGER_VERSION}"
    apply_k manifests/cert-manager
    wait_crds
    wait_deployments cert-manager
    until_ok "cert-manager's webhook admits an Issuer (its CA is injected)" cert_manager_admits
  fi
  if installs knative; then
    log "Knative Serving ${KNATIVE_SERVING_VERSION} with Kourier ${KNATIVE_KOURIER_VERSION}"
    apply_k manifests/knative/crds
    wait_crds
    apply_k manifests/knative/core
    wait_deployments knative-serving
    apply_admitted manifests/knative/kourier
    apply_admitted manifests/knative/config
    wait_deployments kourier-system
  fi
  if installs kserve; then
    log "KServe ${KSERVE_VERSION} (Knative mode)"
    apply_k manifests/kserve/namespace
    apply_k manifests/kserve/crds
    wait_crds
    apply_admitted manifests/kserve
    wait_deployments kserve
    kserve_for_kourier
    apply_admitted manifests/kserve/runtimes
  fi
  if installs kfp; then
    log "Kubeflow Pipelines ${KFP_VERSION}"
    apply_k manifests/kfp/cluster-scoped
    wait_crds
    apply_k manifests/kfp
    wait_deployments kubeflow
    if [[ "$CLUSTER" == kind ]]; then apply_k manifests/kfp/object-store-access; fi
  fi
  if installs monitoring; then
    log "kube-prometheus-stack ${KUBE_PROMETHEUS_STACK_VERSION}, Pushgateway chart ${PUSHGATEWAY_CHART_VERSION}"
    run helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
    run helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
      --version "${KUBE_PROMETHEUS_STACK_VERSION}" -n monitoring \
      -f manifests/monitoring/kube-prometheus-stack.values.yaml --wait --timeout "$WAIT"
    run helm upgrade --install prometheus-pushgateway prometheus-community/prometheus-pushgateway \
      --version "${PUSHGATEWAY_CHART_VERSION}" -n monitoring \
      -f manifests/monitoring/prometheus-pushgateway.values.yaml --wait --timeout "$WAIT"
    # the chart's ServiceMonitors and PrometheusRule need the operator's CRDs served
    wait_crds
  fi
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

# riskloop-s3 as one namespace gets it, from a Secret object on stdin: the model namespace's also carries the keys
# KServe's storage initializer reads (riskloop.cluster.prerequisites s3-secret); under DRY_RUN it is rendered
s3_secret_into() {
  local ns="$1"
  if [[ "$ns" == "$MODELS_NAMESPACE" ]]; then
    "$PYTHON" -m riskloop.cluster.prerequisites s3-secret "$ns"
  else
    cat
  fi | if dry; then cat >"$OUT/secret-riskloop-s3-$ns.json"; else "$KUBECTL" apply -f -; fi
}

# riskloop-s3 in the namespaces given: object-store credentials and endpoint that MLflow, the chart's Jobs,
# the pipeline steps and the predictor (its prediction log under the storage root) read by name. On kind
# it points at KFP's own object store; elsewhere it must exist already (your bucket, your keys), except in the
# model namespace, which the chart creates: there it is copied from the release namespace when missing.
s3_secret() {
  local ns
  if [[ "$CLUSTER" != kind ]]; then
    for ns in "$@"; do
      if [[ "$ns" == "$MODELS_NAMESPACE" ]]; then
        if dry; then printf '+ copy secret riskloop-s3 from %s to %s, with KServe'"'"'s keys\n' "$NAMESPACE" "$ns"; continue; fi
        log "riskloop-s3 -> $ns (from $NAMESPACE, with the keys KServe's storage initializer reads)"
        # through a pipe, never the command line: the keys do not show in the process list
        "$KUBECTL" get secret riskloop-s3 -n "$NAMESPACE" -o json | s3_secret_into "$ns"
        continue
      fi
      dry && continue
      "$KUBECTL" get secret riskloop-s3 -n "$ns" >/dev/null 2>&1 || die "secret riskloop-s3 is missing in \
namespace $ns: create it with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and MLFLOW_S3_ENDPOINT_URL (README)"
    done
    return 0
  fi
  log "riskloop-s3 -> KFP's object store (SeaweedFS) in $*"
  local key secret
  # dry run: KFP's published default keys (mlpipeline-minio-artifact in its manifests), never real ones
  if dry; then key=minio; secret=minio123; else
    key="$("$KUBECTL" get secret mlpipeline-minio-artifact -n kubeflow -o jsonpath='{.data.accesskey}' | base64 -d)"
    secret="$("$KUBECTL" get secret mlpipeline-minio-artifact -n kubeflow -o jsonpath='{.data.secretkey}' | base64 -d)"
  fi
  for ns in "$@"; do
    dry && printf '+ kubectl create secret generic riskloop-s3 -n %s (apply) -> build/deploy/secret-riskloop-s3-%s.json\n' "$ns" "$ns"
    # the keys go through a file descriptor (printf is a builtin), never onto a command line
    "$KUBECTL" create secret generic riskloop-s3 -n "$ns" --dry-run=client -o json --from-env-file=<(
      printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nMLFLOW_S3_ENDPOINT_URL=%s\n' "$key" "$secret" \
        "$KFP_OBJECT_STORE") | s3_secret_into "$ns"
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
    python -c "import boto3, botocore; s3 = boto3.client('s3', endpoint_url='$KFP_OBJECT_STORE')
try: s3.create_bucket(Bucket='riskloop')
except botocore.exceptions.ClientError as e: print('bucket:', e.response['Error']['Code'])"
}

render_chart() {
  local into="${1:-$OUT/helm-riskloop.yaml}" operator_api=0
  # helm install asks the cluster which APIs it serves; a render here knows only what it is told: the Prometheus
  # operator's API exists when this run installs kube-prometheus-stack before the chart
  if installs monitoring; then operator_api=1; fi
  if command -v helm >/dev/null; then
    if [[ "$operator_api" == 1 ]]; then set -- --api-versions monitoring.coreos.com/v1; else set --; fi
    helm template "$RELEASE" helm/riskloop -n "$NAMESPACE" -f "$VALUES" --set image.tag="$TAG" \
      --set image.repository="$IMAGE_REPOSITORY" "$@" >"$into" || return 1
  else  # no helm binary: the same render through the Helm SDK binding of the dev environment
    "$PYTHON" - "$VALUES" "$TAG" "$IMAGE_REPOSITORY" "$RELEASE" "$NAMESPACE" "$into" "$operator_api" <<'PY' || return 1
import sys, yaml, helm_python
values_file, tag, repository, release, namespace, into, operator_api = sys.argv[1:]
values = yaml.safe_load(open(values_file)) or {}
values.setdefault("image", {}).update(tag=tag, repository=repository)
if operator_api != "0":  # the binding cannot pass --api-versions: say so through the chart's own switch
    values.setdefault("monitoring", {})["requireOperatorApi"] = False
try:
    rendered = helm_python.Chart.load("helm/riskloop").render(values, name=release, namespace=namespace,
                                                            is_install=True)
except (helm_python.HelmValuesError, helm_python.HelmRenderError) as exc:
    sys.exit(f"{values_file}: {exc}")
with open(into, "w") as f:
    for path, text in sorted(rendered.items()):
        if not path.endswith(".txt") and text.strip():
            f.write(f"---\n# Source: {path}\n{text.strip()}\n")
PY
  fi
  printf '  rendered helm/riskloop with %s -> build/deploy/%s\n' "$VALUES" "$(basename "$into")"
}

# The chart's values against its schema (and every template rendered) before anything is installed: a wrong value
# stops the run here, naming the value, instead of after the prerequisites at `helm upgrade`
check_values() {
  mkdir -p "$OUT"
  render_chart "$OUT/values-check.yaml" >/dev/null 2>"$OUT/values-check.err" || {
    local err
    err="$(cat "$OUT/values-check.err")"
    rm -f "$OUT/values-check.yaml" "$OUT/values-check.err"
    die "the chart refuses the values of $VALUES (nothing was installed): $err"
  }
  rm -f "$OUT/values-check.yaml" "$OUT/values-check.err"
}

chart() {
  log "chart helm/riskloop, release $RELEASE in $NAMESPACE, image $IMAGE, values $VALUES"
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

# The predictor's host: KServe's status.url, which with disableIstioVirtualHost (set for Kourier above) is the
# predictor's Knative route, <service>-predictor.<namespace>.<domain> (manifests/knative/config/config-domain.yaml)
model_host() {
  printf '%s-predictor.%s.riskloop.local' "$SERVICE_NAME" "$MODELS_NAMESPACE"
}

urls() {
  cat <<EOF

riskloop $TAG is deployed (release $RELEASE, namespace $NAMESPACE). Reach it with port-forwards:
  Kubeflow UI  kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80                 -> http://127.0.0.1:8080
  MLflow       kubectl port-forward -n $NAMESPACE svc/$RELEASE-mlflow 5000:5000               -> http://127.0.0.1:5000
  Grafana      kubectl port-forward -n monitoring svc/kube-prometheus-stack-grafana 3000:80 -> http://127.0.0.1:3000
  Prometheus   kubectl port-forward -n monitoring svc/prometheus-operated 9090:9090       -> http://127.0.0.1:9090
  Model        kubectl port-forward -n kourier-system svc/kourier 8081:80, then
               curl -H 'Host: $(model_host)' \\
                 http://127.0.0.1:8081/v1/models/$SERVICE_NAME:predict -d @request.json
               (after the delivery step has created the InferenceService; its status.url names this host)
  Notes        helm get notes $RELEASE -n $NAMESPACE
EOF
}

up() {
  check_tools
  image_names
  check_values
  if dry; then log "DRY_RUN: nothing is applied; renders go to build/deploy/"; fi
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

main() {
  case "$ACTION" in
    up) up ;;
    down) down ;;
    *) die "unknown action '$ACTION' (use up or down)" ;;
  esac
}

# sourced (tests call single functions): define only
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main; fi
