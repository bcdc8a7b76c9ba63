{{/* Namespaces the operator serves (the release's first), unless it is cluster-wide. */}}
{{- define "escriba.operatorNamespaces" -}}
{{- prepend .Values.operator.watchNamespaces .Release.Namespace | uniq | join "," }}
{{- end }}

{{/* Secrets the operator may read NATS credentials from. */}}
{{- define "escriba.operatorSecretNames" -}}
{{- $names := .Values.operator.extraSecretNames }}
{{- if include "escriba.natsHasSecret" . }}
{{- $names = prepend $names (include "escriba.natsSecretName" .) }}
{{- end }}
{{- with .Values.nats.tls.clientCertSecret }}
{{- $names = append $names . }}
{{- end }}
{{- $names | uniq | join "," }}
{{- end }}

{{/* The namespaced rules, in a Role per served namespace or in the cluster-wide ClusterRole. */}}
{{- define "escriba.operatorRules" -}}
# Its own resources: kopf watches them, patches their status and its annotations.
- apiGroups: [escriba.io]
  resources: [transcriptionautoscalers]
  verbs: [get, list, watch, patch]
- apiGroups: [escriba.io]
  resources: [transcriptionautoscalers/status]
  verbs: [get, patch]
# The target: read its status, change only its replica count through /scale.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
# Before a scale-down: each pod's deletion cost from the jobs it runs, so idle pods go first.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
# A competing HorizontalPodAutoscaler on the same Deployment stops it from scaling.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch]
# Scale events and warnings on the autoscalers.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- with include "escriba.operatorSecretNames" . }}
# NATS credentials of the autoscalers' queues, by name only.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ splitList "," . | toJson }}
  verbs: [get]
{{- end }}
{{- if and .Values.operator.peering.enabled (not .Values.operator.clusterWide) }}
# kopf's peering object in each served namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* What only a ClusterRole can grant: kopf discovers resources through the CRDs and follows namespaces. */}}
{{- define "escriba.operatorClusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- if and .Values.operator.peering.enabled .Values.operator.clusterWide }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* The addresses the operator may connect to for an autoscaler (ESCRIBA_OPERATOR_ALLOWED_ENDPOINTS):
operator.allowedEndpoints, or the release's NATS and every model's autoscaling natsUrl and
prometheusUrl, so a user who may write a TranscriptionAutoscaler cannot point the operator (and its
NATS credentials) at another host. */}}
{{- define "escriba.operatorEndpoints" -}}
{{- $list := .Values.operator.allowedEndpoints }}
{{- if not $list }}
{{- $list = list (urlParse (include "escriba.natsFirstUrl" .)).host }}
{{- $out := dict }}
{{- $_ := include "escriba.models" (dict "root" . "out" $out) }}
{{- range $model := $out.models }}
{{- with $model.autoscaling.natsUrl }}
{{- $list = append $list (urlParse .).host }}
{{- end }}
{{- with $model.autoscaling.prometheusUrl }}
{{- $url := urlParse . }}
{{- $list = append $list (printf "%s://%s" $url.scheme $url.host) }}
{{- end }}
{{- end }}
{{- end }}
{{- $list | uniq | join "," }}
{{- end }}
