{{/*
Labels every object of the chart carries: linkerd.io/extension is how
`linkerd check` and `linkerd tunnel uninstall` find the extension's objects,
l5d-tunnel.io/tunnel which link an object belongs to.
*/}}
{{- define "l5d-tunnel-server.labels" -}}
linkerd.io/extension: tunnel
app.kubernetes.io/part-of: l5d-tunnel
l5d-tunnel.io/tunnel: {{ .Values.link }}
{{- end -}}

{{/* Selects this link's tunnel-server pods. */}}
{{- define "l5d-tunnel-server.selector" -}}
app.kubernetes.io/name: tunnel-server
l5d-tunnel.io/tunnel: {{ .Values.link }}
{{- end -}}

{{- define "l5d-tunnel-server.name" -}}
{{ .Values.link }}-tunnel-server
{{- end -}}

{{- define "l5d-tunnel-server.image" -}}
{{ .Values.image.name }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
