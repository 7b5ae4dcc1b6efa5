{{/* Names and labels shared by every template of the chart. */}}

{{- define "aios.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: the release name, suffixed with the chart's unless it has it. */}}
{{- define "aios.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "aios.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "aios.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aios
aios.dev/site: {{ .Values.site.name | quote }}
{{- end }}

{{/* What selects the operator's pods; never changes across upgrades. */}}
{{- define "aios.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aios.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "aios.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aios.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from repository, tag and digest: repository@digest when a digest
pins it, else repository:tag (tag default: the chart's appVersion). Call with (list $ .Values.x). */}}
{{- define "aios.imageRef" -}}
{{- $root := index . 0 }}{{ $image := index . 1 -}}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "aios.image" -}}
{{- include "aios.imageRef" (list . .Values.image) }}
{{- end }}

{{/* Every namespace the operator watches: empty means the whole cluster. */}}
{{- define "aios.clusterwide" -}}
{{- if not .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{- define "aios.kafkaUsersSecretName" -}}
{{- default (printf "%s-kafka-users" (include "aios.fullname" .)) .Values.kafka.users.existingSecret }}
{{- end }}

{{- define "aios.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "aios.fullname" .)) .Values.kafka.existingSecret }}
{{- end }}

{{- define "aios.webhookCaSecretName" -}}
{{- default (printf "%s-webhook-ca" (include "aios.fullname" .)) .Values.webhook.ca.existingSecret }}
{{- end }}

{{- define "aios.auditSigningSecretName" -}}
{{- default (printf "%s-audit-signing" (include "aios.fullname" .)) .Values.audit.signingKey.existingSecret }}
{{- end }}

{{/* The webhook configuration the operator keeps in line (kopf's managed configuration). */}}
{{- define "aios.webhookConfigurationName" -}}
aios.dev
{{- end }}

{{/* The console's own labels: it is a component of the release, never one of the operator's pods. */}}
{{- define "aios.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aios.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end }}

{{- define "aios.consoleSessionSecretName" -}}
{{- default (printf "%s-console-session" (include "aios.fullname" .)) .Values.console.sessionKey.existingSecret }}
{{- end }}
