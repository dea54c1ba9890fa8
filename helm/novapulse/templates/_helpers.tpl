{{/* Name of the chart's objects: <release> unless the release name already contains "novapulse". */}}
{{- define "novapulse.fullname" -}}
{{- if contains "novapulse" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-novapulse" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "novapulse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: novapulse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: novapulse
{{- end -}}

{{- define "novapulse.selectorLabels" -}}
app.kubernetes.io/name: novapulse
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one process kind; call with (dict "root" $ "service" $name "role" "api") */}}
{{- define "novapulse.componentSelector" -}}
{{ include "novapulse.selectorLabels" .root }}
novapulse.io/service: {{ .service }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "novapulse.componentLabels" -}}
{{ include "novapulse.labels" .root }}
novapulse.io/service: {{ .service }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "novapulse.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "novapulse.fullname" .)) -}}
{{- end -}}

{{- define "novapulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "novapulse.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The settings of one role of one service: defaults.<role> overridden by services.<name>.<role>. */}}
{{- define "novapulse.roleValues" -}}
{{- $defaults := deepCopy (index .root.Values.defaults .role) -}}
{{- $own := index .svc .role | default dict -}}
{{- toYaml (mergeOverwrite $defaults (deepCopy $own)) -}}
{{- end -}}

{{- define "novapulse.listenPort" -}}
{{- if eq .role "worker" -}}{{ add .svc.port 1000 }}{{- else -}}{{ .svc.port }}{{- end -}}
{{- end -}}

{{/* SHUTDOWN_TIMEOUT of one service: services.<name>.shutdownTimeout, else config.shutdownTimeout. */}}
{{- define "novapulse.shutdownTimeout" -}}
{{- if hasKey .svc "shutdownTimeout" -}}{{ .svc.shutdownTimeout }}{{- else -}}{{ .root.Values.config.shutdownTimeout }}{{- end -}}
{{- end -}}

{{/* preStop sleep + SHUTDOWN_TIMEOUT + 10 s, unless defaults.terminationGracePeriodSeconds is set. */}}
{{- define "novapulse.terminationGracePeriod" -}}
{{- $shutdown := include "novapulse.shutdownTimeout" . | float64 | ceil | int -}}
{{- $d := .root.Values.defaults -}}
{{- $d.terminationGracePeriodSeconds | default (add $d.preStopSleepSeconds $shutdown 10) -}}
{{- end -}}
