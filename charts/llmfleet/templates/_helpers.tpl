{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "llmfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name unless it already
contains it. Truncated to 63 characters (the DNS label limit of some object names).
*/}}
{{- define "llmfleet.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "llmfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Namespace the operator runs in.
*/}}
{{- define "llmfleet.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels of every object of the release.
*/}}
{{- define "llmfleet.labels" -}}
helm.sh/chart: {{ include "llmfleet.chart" . }}
{{ include "llmfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmfleet
app.kubernetes.io/component: operator
{{- end }}

{{/*
Selector labels: stable across upgrades, so never the chart or app version.
*/}}
{{- define "llmfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "llmfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image: repository, then the digest if set, else the tag (default: appVersion).
*/}}
{{- define "llmfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator reads and writes, in whichever
namespaces it serves. Keep in step with OPERATOR_API_CALLS in tests/unit/test_chart.py:
that test fails when the two disagree.
*/}}
{{- define "llmfleet.namespacedRules" -}}
# LLMServices: watched by kopf, read by the operator, patched by kopf for its finalizer and
# progress annotations; the operator merge-patches the status subresource.
- apiGroups: ["llmfleet.io"]
  resources: ["llmservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["llmfleet.io"]
  resources: ["llmservices/status"]
  verbs: ["patch"]
# Children: listed by label, applied server-side (patch, and create when absent), deleted when
# no longer wanted. Only Deployments are watched (status follows the model pods); the cache
# password Secret is created once with a POST.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets", "persistentvolumeclaims"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "create", "patch", "delete"]
# EndpointSlices of the model Services: the ready model pods the load balancer is rendered with.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# core/v1 Events on LLMServices, posted by the operator and by kopf.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
kopf's own cluster-scoped needs: it lists and watches CustomResourceDefinitions to notice
served resources appearing or changing (without it kopf only scans once, at startup).
*/}}
{{- define "llmfleet.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
Rules of the peering objects kopf keeps alive and watches: ClusterKopfPeering when the operator
is cluster-wide, KopfPeering in each served namespace otherwise. Argument: "cluster" or
"namespaced".
*/}}
{{- define "llmfleet.peeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ if eq . "cluster" }}"clusterkopfpeerings"{{ else }}"kopfpeerings"{{ end }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
