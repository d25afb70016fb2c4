{{/*
Labels every object of the chart carries: linkerd.io/extension is how
`linkerd check` and `linkerd tunnel uninstall` find the extension's objects.
*/}}
{{- define "l5d-tunnel.labels" -}}
linkerd.io/extension: tunnel
app.kubernetes.io/part-of: l5d-tunnel
{{- end -}}

{{- define "l5d-tunnel.image" -}}
{{ .Values.image.name }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The webhook's ServiceAccount as an RBAC subject. */}}
{{- define "l5d-tunnel.subject" -}}
- kind: ServiceAccount
  name: l5d-tunnel-webhook
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{/*
The namespaceSelector of every webhook: never kube-system nor the webhook's
own namespace. Which namespaces opted in the webhook decides (named by
--rewrite-namespaces, or labelled l5d-tunnel.io/rewrite=enabled): a selector
cannot say "this name or that label".
*/}}
{{- define "l5d-tunnel.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
    - kube-system
    - {{ .Release.Namespace }}
{{- end -}}
