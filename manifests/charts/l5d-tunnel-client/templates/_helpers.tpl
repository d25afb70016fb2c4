{{/*
Labels every object of the chart carries: linkerd.io/extension is how
`linkerd check` and `linkerd tunnel uninstall` find the extension's objects,
l5d-tunnel.io/tunnel which link an object belongs to.
*/}}
{{- define "l5d-tunnel-client.labels" -}}
linkerd.io/extension: tunnel
app.kubernetes.io/part-of: l5d-tunnel
l5d-tunnel.io/tunnel: {{ .Values.link }}
{{- end -}}

{{/* Selects this link's tunnel-client pods. */}}
{{- define "l5d-tunnel-client.selector" -}}
app.kubernetes.io/name: tunnel-client
l5d-tunnel.io/tunnel: {{ .Values.link }}
{{- end -}}

{{- define "l5d-tunnel-client.name" -}}
{{ .Values.link }}-tunnel-client
{{- end -}}

{{- define "l5d-tunnel-client.image" -}}
{{ .Values.image.name }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The TCP port of serverURL (explicit, else 443 for wss, 80 for ws). */}}
{{- define "l5d-tunnel-client.serverPort" -}}
{{- $u := urlParse .Values.serverURL -}}
{{- $hp := splitList ":" $u.host -}}
{{- if gt (len $hp) 1 -}}{{ last $hp }}{{- else if eq $u.scheme "wss" -}}443{{- else -}}80{{- end -}}
{{- end -}}
