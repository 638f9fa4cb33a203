{{- define "tidegate.labels" -}}
app.kubernetes.io/name: tidegate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tidegate.selectorLabels" -}}
app.kubernetes.io/name: tidegate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tidegate.metricsLabels" -}}
{{ include "tidegate.labels" . }}
app.kubernetes.io/component: metrics
{{- end -}}

{{/* The ServiceAccount: serviceAccount.name, else <release>-tidegate (two releases in one
namespace never share one). */}}
{{- define "tidegate.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default (printf "%s-tidegate" .Release.Name) }}
{{- end -}}

{{/* The leader-election Lease: leaderElection.leaseName, else <release>-tidegate-leader
(two releases in one namespace elect apart). */}}
{{- define "tidegate.leaseName" -}}
{{ .Values.leaderElection.leaseName | default (printf "%s-tidegate-leader" .Release.Name) }}
{{- end -}}
