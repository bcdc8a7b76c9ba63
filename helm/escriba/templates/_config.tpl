{{/*
The ConfigMap data as YAML (also hashed into pod annotations, so a change rolls the pods). Built as a
dict so a key given in `config` replaces the chart's own instead of duplicating it.
*/}}

{{/* A value as the services parse it: whole numbers without Go's float formatting (1e+09). */}}
{{- define "escriba.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{- define "escriba.sharedConfig" -}}
{{- $v := .Values -}}
{{- $data := dict
  "ESCRIBA_GRPC_PORT" (include "escriba.envValue" $v.grpc.port)
  "ESCRIBA_GRPC_MAX_MESSAGE_BYTES" (include "escriba.envValue" $v.grpc.maxMessageBytes)
  "ESCRIBA_METRICS_PORT" (include "escriba.envValue" $v.metrics.port)
  "ESCRIBA_LOG_LEVEL" (toString $v.logging.level)
  "ESCRIBA_LOG_JSON" (toString $v.logging.json)
  "ESCRIBA_SHUTDOWN_GRACE_S" (include "escriba.envValue" $v.shutdownGraceSeconds)
  "ESCRIBA_NATS_URL" (toString $v.nats.url)
  "ESCRIBA_NATS_PREFIX" (toString $v.nats.prefix)
  "ESCRIBA_NATS_REPLICAS" (include "escriba.envValue" $v.nats.replicas)
  "ESCRIBA_NATS_STOP_GRACE_S" (include "escriba.envValue" $v.nats.stopGraceSeconds)
  "ESCRIBA_DATABASE_SCHEMA" (toString $v.database.schema)
  "ESCRIBA_DATABASE_POOL_MAX_SIZE" (include "escriba.envValue" $v.database.poolMaxSize)
-}}
{{- $_ := set $data "ESCRIBA_GRPC_HEALTH_PORT" (include "escriba.envValue" $v.grpc.healthPort) }}
{{- /* Every service creates or updates the topology at start-up, so all of them carry the caps. */}}
{{- range $name, $bytes := $v.nats.maxBytes }}
{{- $_ = set $data (printf "ESCRIBA_NATS_%s_MAX_BYTES" (upper $name)) (include "escriba.envValue" $bytes) }}
{{- end }}
{{- /* The model catalogue: every service must read the same one (the gateway refuses other models). */}}
{{- $_ = set $data "ESCRIBA_MODELS" (include "escriba.modelsJson" .) }}
{{- if $v.grpcTls.enabled }}
{{- $dir := "/var/run/escriba/grpc-tls" }}
{{- $_ := required "grpcTls.secretName is required when grpcTls.enabled" $v.grpcTls.secretName }}
{{- $_ = set $data "ESCRIBA_TLS_CERT_FILE" (printf "%s/tls.crt" $dir) }}
{{- $_ = set $data "ESCRIBA_TLS_KEY_FILE" (printf "%s/tls.key" $dir) }}
{{- if $v.grpcTls.mutual }}
{{- $_ = set $data "ESCRIBA_TLS_CA_FILE" (printf "%s/ca.crt" $dir) }}
{{- $_ = set $data "ESCRIBA_TLS_CLIENT_CERT_FILE" (printf "%s/tls.crt" $dir) }}
{{- $_ = set $data "ESCRIBA_TLS_CLIENT_KEY_FILE" (printf "%s/tls.key" $dir) }}
{{- end }}
{{- end }}
{{- if $v.auth.enabled }}
{{- $_ := set $data "ESCRIBA_AUTH_ENABLED" "true" }}
{{- end }}
{{- if $v.auth.serviceToken.secretName }}
{{- $_ := set $data "ESCRIBA_SERVICE_TOKEN_FILE" (printf "/var/run/escriba/service-token/%s" $v.auth.serviceToken.key) }}
{{- end }}
{{- range $name, $value := $v.config }}
{{- include "escriba.checkModelSetting" (dict "name" $name "where" "config") }}
{{- $_ := set $data $name (include "escriba.envValue" $value) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/* Refuses a setting the chart derives from `models` when given in a `config` map. */}}
{{- define "escriba.checkModelSetting" -}}
{{- if has .name (list "ESCRIBA_MODELS" "ESCRIBA_TRANSCRIPTION_MODEL") }}
{{- fail (printf "%s.%s: the chart sets it from `models` (list the models there)" .where .name) }}
{{- end }}
{{- end }}

{{/* One workload's own settings. Call with (dict "root" $ "component" X), or with a workload of
escriba.workloads (component, stage, values and, for transcription, model) and "root". */}}
{{- define "escriba.componentConfig" -}}
{{- $stage := .stage | default .component -}}
{{- $values := .values | default (index .root.Values $stage) -}}
{{- $data := dict -}}
{{- if eq .component "gateway" }}
{{- $auth := .root.Values.auth }}
{{- if $auth.tokens.secretName }}
{{- $_ := set $data "ESCRIBA_AUTH_TOKENS_FILE" (printf "/var/run/escriba/auth-tokens/%s" $auth.tokens.key) }}
{{- end }}
{{- if and $auth.jwt.publicKeySecret $auth.jwt.hmacSecret }}
{{- fail "auth.jwt: set publicKeySecret or hmacSecret, not both" }}
{{- end }}
{{- if $auth.jwt.publicKeySecret }}
{{- $_ := set $data "ESCRIBA_AUTH_JWT_PUBLIC_KEY_FILE" (printf "/var/run/escriba/auth-jwt/%s" $auth.jwt.publicKeyKey) }}
{{- end }}
{{- if $auth.jwt.hmacSecret }}
{{- $_ := set $data "ESCRIBA_AUTH_JWT_SECRET_FILE" (printf "/var/run/escriba/auth-jwt/%s" $auth.jwt.hmacKey) }}
{{- end }}
{{- if or $auth.jwt.publicKeySecret $auth.jwt.hmacSecret }}
{{- $_ := set $data "ESCRIBA_AUTH_JWT_ISSUER" $auth.jwt.issuer }}
{{- $_ = set $data "ESCRIBA_AUTH_JWT_AUDIENCE" $auth.jwt.audience }}
{{- $_ = set $data "ESCRIBA_AUTH_JWT_OWNER_CLAIM" $auth.jwt.ownerClaim }}
{{- end }}
{{- $http := .root.Values.http }}
{{- $_ := set $data "ESCRIBA_HTTP_ENABLED" (toString $http.enabled) }}
{{- if $http.enabled }}
{{- $v := .root.Values }}
{{- if has (int $http.port) (list (int $v.grpc.port) (int $v.grpc.healthPort) (int $v.metrics.port)) }}
{{- fail (printf "http.port (%d) must differ from grpc.port, grpc.healthPort and metrics.port" (int $http.port)) }}
{{- end }}
{{- $_ = set $data "ESCRIBA_HTTP_PORT" (include "escriba.envValue" $http.port) }}
{{- end }}
{{- $hooks := .root.Values.webhooks }}
{{- with include "escriba.webhookSecretName" .root }}
{{- $_ := set $data "ESCRIBA_WEBHOOK_SECRET_FILE" (printf "/var/run/escriba/webhooks/%s" $hooks.secret.key) }}
{{- end }}
{{- if not (kindIs "invalid" $hooks.timeoutSeconds) }}
{{- $_ := set $data "ESCRIBA_WEBHOOK_TIMEOUT_S" (include "escriba.envValue" $hooks.timeoutSeconds) }}
{{- end }}
{{- if not (kindIs "invalid" $hooks.maxAttempts) }}
{{- $_ := set $data "ESCRIBA_WEBHOOK_MAX_ATTEMPTS" (include "escriba.envValue" $hooks.maxAttempts) }}
{{- end }}
{{- with $hooks.backoffSeconds }}
{{- $delays := list }}
{{- range . }}
{{- $delays = append $delays (include "escriba.envValue" .) }}
{{- end }}
{{- $_ := set $data "ESCRIBA_WEBHOOK_BACKOFF_S" (join "," $delays) }}
{{- end }}
{{- end }}
{{- /* Outbound connections for callers: webhooks from the gateway, audio URLs from preprocess. */}}
{{- if has .component (list "gateway" "preprocess") }}
{{- $out := .root.Values.outbound }}
{{- with $out.allowedNetworks }}
{{- $_ := set $data "ESCRIBA_OUTBOUND_ALLOWED_NETWORKS" (join "," .) }}
{{- end }}
{{- if not (kindIs "invalid" $out.connectTimeoutSeconds) }}
{{- $_ := set $data "ESCRIBA_OUTBOUND_CONNECT_TIMEOUT_S" (include "escriba.envValue" $out.connectTimeoutSeconds) }}
{{- end }}
{{- if not (kindIs "invalid" $out.maxRedirects) }}
{{- $_ := set $data "ESCRIBA_OUTBOUND_MAX_REDIRECTS" (include "escriba.envValue" $out.maxRedirects) }}
{{- end }}
{{- end }}
{{- if eq .component "preprocess" }}
{{- $_ := set $data "ESCRIBA_PREPROCESS_MAX_CONCURRENCY" (include "escriba.envValue" $values.maxConcurrency) }}
{{- $_ = set $data "ESCRIBA_PREPROCESS_MAX_DURATION_S" (include "escriba.envValue" $values.maxDurationSeconds) }}
{{- $_ = set $data "ESCRIBA_PREPROCESS_MAX_INPUT_BYTES" (include "escriba.envValue" $values.maxInputBytes) }}
{{- $urls := .root.Values.audioUrls }}
{{- $s3 := $urls.s3 }}
{{- if not (kindIs "invalid" $urls.fetchTimeoutSeconds) }}
{{- $_ := set $data "ESCRIBA_FETCH_TIMEOUT_S" (include "escriba.envValue" $urls.fetchTimeoutSeconds) }}
{{- end }}
{{- with $s3.endpointUrl }}
{{- $_ := set $data "ESCRIBA_S3_ENDPOINT_URL" . }}
{{- end }}
{{- with $s3.region }}
{{- $_ := set $data "ESCRIBA_S3_REGION" . }}
{{- end }}
{{- if ne (empty $s3.accessKeyId) (empty $s3.secretAccessKey.secretName) }}
{{- fail "audioUrls.s3: set accessKeyId and secretAccessKey.secretName together (both empty: the SDK's default credential chain)" }}
{{- end }}
{{- with $s3.accessKeyId }}
{{- $_ := set $data "ESCRIBA_S3_ACCESS_KEY_ID" . }}
{{- $_ = set $data "ESCRIBA_S3_SECRET_ACCESS_KEY_FILE" (printf "/var/run/escriba/s3/%s" $s3.secretAccessKey.key) }}
{{- end }}
{{- end }}
{{- if eq $stage "transcription" }}
{{- $model := required "escriba.componentConfig: a transcription workload needs its model" .model }}
{{- $_ := set $data "ESCRIBA_TRANSCRIPTION_DEVICE" (ternary "cuda" "cpu" $values.gpu.enabled) }}
{{- $_ = set $data "ESCRIBA_TRANSCRIPTION_COMPUTE_TYPE" (toString $values.computeType) }}
{{- if not (kindIs "invalid" $values.maxConcurrency) }}
{{- $_ = set $data "ESCRIBA_TRANSCRIPTION_MAX_CONCURRENCY" (include "escriba.envValue" $values.maxConcurrency) }}
{{- end }}
{{- /* Nothing is downloaded at run time: a model given by name must already be in the cache. */}}
{{- $_ = set $data "ESCRIBA_TRANSCRIPTION_LOCAL_FILES_ONLY" "true" }}
{{- /* The catalogue entry this process serves (its source, device and precision come from there). */}}
{{- $_ = set $data "ESCRIBA_TRANSCRIPTION_MODEL" $model.name }}
{{- end }}
{{- $where := printf "%s.config" $stage }}
{{- if and .model (not .model.first) }}
{{- $where = printf "%s: config" .model.where }}
{{- end }}
{{- range $name, $value := $values.config }}
{{- include "escriba.checkModelSetting" (dict "name" $name "where" $where) }}
{{- $_ := set $data $name (include "escriba.envValue" $value) }}
{{- end }}
{{- if $data }}
{{- toYaml $data }}
{{- else -}}
{}
{{- end }}
{{- end }}
