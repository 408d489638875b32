{{- define "dpo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dpo-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dpo-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "dpo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dpo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dpo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dpo-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* What the operator does in the namespaces it watches. */}}
{{- define "dpo-operator.workRules" -}}
# kopf patches annotations and finalizers; ModelDeployments are created for deployOnCompletion
- apiGroups: [dpo.ai]
  resources: [dpocollections, dpotrainingjobs, modeldeployments, dpoevaluations, dpoloops]
  verbs: [get, list, watch, create, patch]
- apiGroups: [dpo.ai]
  resources: [dpocollections/status, dpotrainingjobs/status, modeldeployments/status, dpoevaluations/status, dpoloops/status]
  verbs: [patch]
# the promotion gate removes the candidate (and base-model) ModelDeployments it created
- apiGroups: [dpo.ai]
  resources: [modeldeployments]
  verbs: [delete]
# children carry ownerReferences with blockOwnerDeletion: OpenShift requires update on the owner's finalizers
- apiGroups: [dpo.ai]
  resources: [dpocollections/finalizers, dpotrainingjobs/finalizers, modeldeployments/finalizers, dpoevaluations/finalizers, dpoloops/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, update]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# live progress: the newest progress line of a running workload pod (the pods get no API rights themselves)
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.nimOperator.enabled }}
# ModelDeployment backend nimOperator: the NIMServices and NIMCaches it serves with (NVIDIA NIM Operator)
- apiGroups: [apps.nvidia.com]
  resources: [nimservices, nimcaches]
  verbs: [get, list, watch, create, update]
- apiGroups: [apps.nvidia.com]
  resources: [nimservices/finalizers, nimcaches/finalizers]
  verbs: [update]
{{- end }}
{{- if .Values.kueue.enabled }}
# Kueue: read the Workload of each queued Job (why it waits, preemptions); deactivate it for a user's spec.suspend
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list, patch]
{{- end }}
{{- if .Values.peering.enabled }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}


{{/* Namespaces where the operator reads Secrets: rbac.secretNamespaces, else watchNamespaces. */}}
{{- define "dpo-operator.secretNamespaces" -}}
{{- if .Values.rbac.secretNamespaces -}}
{{- toJson .Values.rbac.secretNamespaces -}}
{{- else -}}
{{- toJson .Values.watchNamespaces -}}
{{- end -}}
{{- end -}}
