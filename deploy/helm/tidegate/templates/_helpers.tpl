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

{{/* The Lease's namespace: leaderElection.leaseNamespace, else the release's. */}}
{{- define "tidegate.leaseNamespace" -}}
{{ .Values.leaderElection.leaseNamespace | default .Release.Namespace }}
{{- end -}}

{{/* The notification providers' Secret: notifications.secretName, else the operator's
default, tidegate-notifications; in notifications.secretNamespace, else the release's. */}}
{{- define "tidegate.notificationsSecretName" -}}
{{ .Values.notifications.secretName | default "tidegate-notifications" }}
{{- end -}}

{{- define "tidegate.notificationsSecretNamespace" -}}
{{ .Values.notifications.secretNamespace | default .Release.Namespace }}
{{- end -}}

{{/* The rule that lets the operator read that Secret, and no other. */}}
{{- define "tidegate.notificationsSecretRule" -}}
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ include "tidegate.notificationsSecretName" . | quote }}]
  verbs: ["get"]
{{- end -}}
