{{/* The chart name, or nameOverride. */}}
{{- define "riskloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name this chart owns: release-chart, or the release name if it holds the chart name. */}}
{{- define "riskloop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>", e.g. riskloop-mlflow. Call with (list $ "mlflow"). */}}
{{- define "riskloop.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "riskloop.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "riskloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "riskloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: riskloop
{{- end }}

{{/* Labels of one component (objects and pod templates). Call with (list $ "mlflow"). */}}
{{- define "riskloop.componentLabels" -}}
{{ include "riskloop.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Selector labels of one component: stable across upgrades. Call with (list $ "mlflow"). */}}
{{- define "riskloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "riskloop.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The predictor pods' labels, as riskloop.delivery.inference_service sets them on the InferenceService
     (LABEL_NAME, LABEL_COMPONENT); KServe copies them to the pods. */}}
{{- define "riskloop.predictorSelectorLabels" -}}
app.kubernetes.io/name: riskloop
app.kubernetes.io/component: predictor
{{- end }}

{{/* The riskloop image: repository@digest, or repository:tag with tag defaulting to the appVersion. */}}
{{- define "riskloop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Service hostnames (cluster DNS). */}}
{{- define "riskloop.mlflowHost" -}}
{{ include "riskloop.componentName" (list . "mlflow") }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}
{{- define "riskloop.feastHost" -}}
{{ include "riskloop.componentName" (list . "feast") }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}
{{- define "riskloop.redisHost" -}}
{{ include "riskloop.componentName" (list . "redis") }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}
{{- define "riskloop.postgresHost" -}}
{{ include "riskloop.componentName" (list . "postgresql") }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/* Feast's Redis connection string (RISKLOOP_FEAST__REDIS_CONNECTION). */}}
{{- define "riskloop.redisConnection" -}}
{{- if .Values.redis.bundled }}
{{- printf "%s:6379" (include "riskloop.redisHost" .) }}
{{- else }}
{{- .Values.redis.external.connection }}
{{- end }}
{{- end }}

{{/* The RISKLOOP_* settings, one KEY: "value" per line: the one place values become riskloop's
     environment. Every key is a field of riskloop.settings.Settings (a test builds Settings from them). */}}
{{- define "riskloop.settingsEnv" -}}
RISKLOOP_IMAGE: {{ include "riskloop.image" . | quote }}
RISKLOOP_STATE_DIR: {{ .Values.config.stateDir | quote }}
RISKLOOP_STORAGE__URI: {{ .Values.s3.storageUri | quote }}
RISKLOOP_MLFLOW__TRACKING_URI: {{ printf "http://%s:5000" (include "riskloop.mlflowHost" .) | quote }}
RISKLOOP_MLFLOW__EXPERIMENT: {{ .Values.config.experiment | quote }}
RISKLOOP_MLFLOW__MODEL_NAME: {{ .Values.config.modelName | quote }}
RISKLOOP_MLFLOW__ARTIFACTS_DESTINATION: {{ .Values.s3.artifactsDestination | quote }}
RISKLOOP_FEAST__ONLINE_STORE: "redis"
RISKLOOP_FEAST__REDIS_CONNECTION: {{ include "riskloop.redisConnection" . | quote }}
RISKLOOP_AUDIT__BACKEND: "postgres"
RISKLOOP_AUDIT__ACTOR: {{ .Values.config.auditActor | quote }}
RISKLOOP_AUDIT__REQUIRE_APPROVAL: {{ .Values.config.requireApproval | toString | quote }}
RISKLOOP_DELIVERY__TARGET: "kubernetes"
RISKLOOP_DELIVERY__NAMESPACE: {{ .Values.namespaces.models.name | quote }}
RISKLOOP_DELIVERY__SERVICE_NAME: {{ .Values.config.serviceName | quote }}
RISKLOOP_DELIVERY__METRICS_SOURCE: {{ .Values.config.metricsSource | quote }}
RISKLOOP_DELIVERY__PROMETHEUS_URL: {{ .Values.config.prometheusUrl | quote }}
{{- end }}

{{/* Pod-level security context of every chart pod: Pod Security "restricted". */}}
{{- define "riskloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context: restricted, read-only root filesystem. */}}
{{- define "riskloop.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* imagePullSecrets, when any. */}}
{{- define "riskloop.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Namespaces the riskloop-config ConfigMap and riskloop-db Secret must exist in: where riskloop
     processes run (release: MLflow, Feast, publish Job; pipelines: KFP steps), without duplicates. */}}
{{- define "riskloop.workNamespaces" -}}
{{- $out := list .Release.Namespace }}
{{- if ne .Values.namespaces.pipelines.name .Release.Namespace }}
{{- $out = append $out .Values.namespaces.pipelines.name }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Pod Security admission labels for a namespace the chart creates. */}}
{{- define "riskloop.podSecurityLabels" -}}
{{- $ps := .Values.namespaces.podSecurity }}
pod-security.kubernetes.io/enforce: {{ $ps.level }}
pod-security.kubernetes.io/enforce-version: {{ $ps.version }}
pod-security.kubernetes.io/audit: {{ $ps.level }}
pod-security.kubernetes.io/audit-version: {{ $ps.version }}
pod-security.kubernetes.io/warn: {{ $ps.level }}
pod-security.kubernetes.io/warn-version: {{ $ps.version }}
{{- end }}

{{/* checkov skips of one workload, as annotation lines, each rendered only when it applies; called with
     (dict "digest" <image digest> "pullPolicy" <policy>). CKV_K8S_43 (image by digest): skipped only while the
     image is pinned by tag. CKV_K8S_15 (pull policy Always): skipped only when an environment sets another
     policy (kind loads images into its nodes; there is no registry to pull from). */}}
{{- define "riskloop.checkovSkips" -}}
{{- $n := 0 }}
{{- if not .digest }}{{ $n = add1 $n }}
checkov.io/skip{{ $n }}: CKV_K8S_43=pinned by an exact tag (riskloop <version>-<git sha>, third parties x.y.z); set the digest value to pin by digest
{{- end }}
{{- if ne .pullPolicy "Always" }}{{ $n = add1 $n }}
checkov.io/skip{{ $n }}: CKV_K8S_15=pullPolicy {{ .pullPolicy }} set by the environment (kind loads the image into its nodes)
{{- end }}
{{- end }}

{{/* A third-party image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "riskloop.thirdPartyImage" -}}
{{- if .digest }}{{ printf "%s@%s" .repository .digest }}{{ else }}{{ printf "%s:%s" .repository .tag }}{{ end }}
{{- end }}
