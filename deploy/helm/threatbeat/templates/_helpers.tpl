{{/* The name of every object: the release name, with "threatbeat" unless it already says so. */}}
{{- define "threatbeat.fullname" -}}
{{- if contains "threatbeat" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-threatbeat" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "threatbeat.selectorLabels" -}}
app.kubernetes.io/name: threatbeat
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "threatbeat.labels" -}}
{{ include "threatbeat.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "threatbeat.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else -}}
{{- include "threatbeat.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* threatbeat.yml: the chart's settings, then extraConfig on top. */}}
{{- define "threatbeat.config" -}}
{{- $config := dict
  "path.data" "/var/lib/threatbeat"
  "output.elasticsearch" (dict "hosts" .Values.elasticsearch.hosts "api_key" "${ES_API_KEY}")
  "threatbeat.config.modules" (dict "path" "${path.config}/modules.d/*.yml" "reload.enabled" true "reload.period" "30s")
  "http.enabled" true
  "http.host" "0.0.0.0"
  "http.port" (int .Values.monitoring.port)
  "http.max_queue_age" .Values.monitoring.maxQueueAge
  "logging.to_stderr" true
-}}
{{- if .Values.elasticsearch.caSecret -}}
{{- $_ := set (index $config "output.elasticsearch") "ssl.certificate_authorities" (list "/etc/threatbeat/certs/ca.crt") -}}
{{- end -}}
{{- toYaml (mergeOverwrite $config .Values.extraConfig) -}}
{{- end -}}
