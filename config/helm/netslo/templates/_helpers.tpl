{{/* The image the operator and its agents run. */}}
{{- define "netslo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The agents' environment as the operator's --agent-env takes it: NAME=value;NAME=value. */}}
{{- define "netslo.agentEnv" -}}
{{- $env := list -}}
{{- with .Values.otel.endpoint }}{{ $env = append $env (printf "OTEL_EXPORTER_OTLP_ENDPOINT=%s" .) }}{{ end -}}
{{- with .Values.otel.protocol }}{{ $env = append $env (printf "OTEL_EXPORTER_OTLP_PROTOCOL=%s" .) }}{{ end -}}
{{- with .Values.otel.resourceAttributes }}{{ $env = append $env (printf "OTEL_RESOURCE_ATTRIBUTES=%s" .) }}{{ end -}}
{{- if .Values.prometheus.enabled }}{{ $env = append $env (printf "NETSLO_PROMETHEUS_ADDR=0.0.0.0:%v" .Values.prometheus.port) }}{{ end -}}
{{- range $name, $value := .Values.agent.env }}{{ $env = append $env (printf "%s=%s" $name (toString $value)) }}{{ end -}}
{{- join ";" $env -}}
{{- end -}}
