{{/*
Names, labels and the pieces every workload shares. Components are gateway, preprocess, transcription,
correction, operator and migrate; a component's objects are named "<fullname>-<component>".
*/}}

{{- define "escriba.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "escriba.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "escriba.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The services (stage order): the ones run by `escriba serve`. */}}
{{- define "escriba.services" -}}
gateway preprocess transcription correction
{{- end }}

{{/* "<fullname>-<component>", 63 characters at most. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "escriba.componentName" -}}
{{- printf "%s-%s" (include "escriba.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "escriba.labels" -}}
helm.sh/chart: {{ include "escriba.chart" . }}
{{ include "escriba.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: escriba
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "escriba.selectorLabels" -}}
app.kubernetes.io/name: {{ include "escriba.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component's objects. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "escriba.componentLabels" -}}
{{ include "escriba.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "escriba.componentSelectorLabels" -}}
{{ include "escriba.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image reference: repository:tag, or repository@digest when a digest is set. */}}
{{- define "escriba.image" -}}
{{- $img := .root.Values.image }}
{{- $repository := $img.repository }}
{{- $tag := $img.tag | default .root.Chart.AppVersion }}
{{- $digest := $img.digest }}
{{- with .override }}
{{- $repository = .repository | default $repository }}
{{- $tag = .tag | default $tag }}
{{- $digest = .digest | default $digest }}
{{- end }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}
{{- end }}

{{- define "escriba.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "escriba.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "escriba.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "escriba.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secrets ------------------------------------------------------------------------------------------ */}}

{{- define "escriba.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "escriba.fullname" .) }}
{{- end }}
{{- end }}

{{- define "escriba.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else -}}
url
{{- end }}
{{- end }}

{{/* Which NATS credentials exist: a dict of userPassword/token/creds booleans. */}}
{{- define "escriba.natsAuth" -}}
{{- $a := .Values.nats.auth }}
{{- if $a.existingSecret }}
{{- toJson (dict "userPassword" $a.existingSecretHas.userPassword "token" $a.existingSecretHas.token "creds" $a.existingSecretHas.creds) }}
{{- else }}
{{- toJson (dict "userPassword" (not (empty $a.user)) "token" (not (empty $a.token)) "creds" (not (empty $a.creds))) }}
{{- end }}
{{- end }}

{{- define "escriba.natsSecretName" -}}
{{- if .Values.nats.auth.existingSecret }}
{{- .Values.nats.auth.existingSecret }}
{{- else }}
{{- printf "%s-nats" (include "escriba.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret with the webhook signing secret: the existing one, the chart's own (from
webhooks.secret.value), or "" when webhooks are off. */}}
{{- define "escriba.webhookSecretName" -}}
{{- $s := .Values.webhooks.secret }}
{{- if and $s.secretName $s.value }}
{{- fail "webhooks.secret: set secretName (an existing Secret) or value (the chart creates one), not both" }}
{{- end }}
{{- if $s.secretName }}
{{- $s.secretName }}
{{- else if $s.value }}
{{- printf "%s-webhooks" (include "escriba.fullname" .) }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the services need a NATS Secret at all. */}}
{{- define "escriba.natsHasSecret" -}}
{{- $auth := include "escriba.natsAuth" . | fromJson }}
{{- if or $auth.userPassword $auth.token $auth.creds }}true{{ end }}
{{- end }}

{{/* Pod pieces --------------------------------------------------------------------------------------- */}}

{{/* Drain time of a service after SIGTERM: RPCs first, then the worker's running jobs. */}}
{{- define "escriba.drainSeconds" -}}
{{- add (int .Values.shutdownGraceSeconds) (int .Values.nats.stopGraceSeconds) }}
{{- end }}

{{/* terminationGracePeriodSeconds of a service; refuses a value not above the drain time. */}}
{{- define "escriba.terminationGrace" -}}
{{- $drain := include "escriba.drainSeconds" .root | int }}
{{- $explicit := .values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $explicit }}
{{- add $drain 15 }}
{{- else if le (int $explicit) $drain }}
{{- $key := printf "%s.terminationGracePeriodSeconds" .component }}
{{- if and .model (not .model.first) }}
{{- $key = printf "%s: terminationGracePeriodSeconds" .model.where }}
{{- end }}
{{- fail (printf "%s (%d) must be longer than the drain time, shutdownGraceSeconds + nats.stopGraceSeconds = %d" $key (int $explicit) $drain) }}
{{- else }}
{{- int $explicit }}
{{- end }}
{{- end }}

{{- define "escriba.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "escriba.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Spread a component's pods over zones and nodes unless the values say otherwise. */}}
{{- define "escriba.topologySpread" -}}
{{- if .values.topologySpreadConstraints }}
{{ toYaml .values.topologySpreadConstraints }}
{{- else }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "escriba.componentSelectorLabels" . | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "escriba.componentSelectorLabels" . | nindent 6 }}
  matchLabelKeys: [pod-template-hash]
{{- end }}
{{- end }}

{{/* Environment every service and the purge Job share: where the database URL and the NATS
credentials are mounted (files from Secrets, never values in the environment), and the TLS files.
Call with the root context. */}}
{{- define "escriba.secretEnv" -}}
- name: ESCRIBA_DATABASE_URL_FILE
  value: /var/run/escriba/database/{{ include "escriba.databaseSecretKey" . }}
{{- $auth := include "escriba.natsAuth" . | fromJson }}
{{- $keys := .Values.nats.auth.secretKeys }}
{{- if $auth.userPassword }}
- name: ESCRIBA_NATS_USER_FILE
  value: /var/run/escriba/nats/{{ $keys.user }}
- name: ESCRIBA_NATS_PASSWORD_FILE
  value: /var/run/escriba/nats/{{ $keys.password }}
{{- end }}
{{- if $auth.token }}
- name: ESCRIBA_NATS_TOKEN_FILE
  value: /var/run/escriba/nats/{{ $keys.token }}
{{- end }}
{{- if $auth.creds }}
- name: ESCRIBA_NATS_CREDS_FILE
  value: /var/run/escriba/nats/{{ $keys.creds }}
{{- end }}
{{- if .Values.nats.tls.clientCertSecret }}
- name: ESCRIBA_NATS_TLS_CERT_FILE
  value: /var/run/escriba/nats-tls/tls.crt
- name: ESCRIBA_NATS_TLS_KEY_FILE
  value: /var/run/escriba/nats-tls/tls.key
{{- end }}
{{- include "escriba.tlsEnv" . }}
{{- end }}

{{/* The Secret volume with the database URL. Call with (dict "root" $ "secretName" NAME). */}}
{{- define "escriba.databaseVolume" -}}
- name: database
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - {key: {{ include "escriba.databaseSecretKey" .root }}, path: {{ include "escriba.databaseSecretKey" .root }}}
{{- end }}

{{/* The CA bundle for Python's default TLS contexts (nats-py with tls:// URLs, aiohttp). */}}
{{- define "escriba.caEnv" -}}
{{- if .Values.tls.ca.secretName }}
- name: SSL_CERT_FILE
  value: /var/run/escriba/tls-ca/{{ .Values.tls.ca.key }}
{{- end }}
{{- end }}

{{/* PGSSLMODE: the one given, or verify-full when a CA is given (without it libpq's default, prefer,
would not even insist on TLS); with a CA, modes that skip the host name check are refused. */}}
{{- define "escriba.databaseSslMode" -}}
{{- $mode := .Values.tls.databaseSslMode }}
{{- if .Values.tls.ca.secretName }}
{{- if has $mode (list "allow" "prefer" "require") }}
{{- fail (printf "tls.databaseSslMode %s does not verify the server's host name (prefer and allow fall back to plaintext) although tls.ca is given: use verify-full (the default with a CA), verify-ca, or disable" $mode) }}
{{- end }}
{{- $mode = $mode | default "verify-full" }}
{{- end }}
{{- $mode }}
{{- end }}

{{/* TLS variables read by the libraries (OpenSSL for NATS, libpq's names for asyncpg). */}}
{{- define "escriba.tlsEnv" -}}
{{- include "escriba.caEnv" . }}
{{- if .Values.tls.ca.secretName }}
- name: PGSSLROOTCERT
  value: /var/run/escriba/tls-ca/{{ .Values.tls.ca.key }}
{{- end }}
{{- with include "escriba.databaseSslMode" . }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.tls.databaseClientCertSecret }}
- name: PGSSLCERT
  value: /var/run/escriba/db-client/tls.crt
- name: PGSSLKEY
  value: /var/run/escriba/db-client/tls.key
{{- end }}
{{- end }}

{{/* A service's volume mounts: /tmp, NATS .creds, CA bundle, PostgreSQL client certificate, gRPC TLS and
auth files (the gateway's tokens, JWT keys and webhook signing secret only on the gateway, the S3 secret
access key only on preprocess). Call with (dict "root" $ "component" X). */}}
{{- define "escriba.secretVolumeMounts" -}}
{{- $v := .root.Values }}
{{- $auth := include "escriba.natsAuth" .root | fromJson }}
- name: tmp
  mountPath: /tmp
- name: database
  mountPath: /var/run/escriba/database
  readOnly: true
{{- if include "escriba.natsHasSecret" .root }}
- name: nats-creds
  mountPath: /var/run/escriba/nats
  readOnly: true
{{- end }}
{{- if $v.nats.tls.clientCertSecret }}
- name: nats-tls
  mountPath: /var/run/escriba/nats-tls
  readOnly: true
{{- end }}
{{- if $v.tls.ca.secretName }}
- name: tls-ca
  mountPath: /var/run/escriba/tls-ca
  readOnly: true
{{- end }}
{{- if $v.tls.databaseClientCertSecret }}
- name: db-client
  mountPath: /var/run/escriba/db-client
  readOnly: true
{{- end }}
{{- if $v.grpcTls.enabled }}
- name: grpc-tls
  mountPath: /var/run/escriba/grpc-tls
  readOnly: true
{{- end }}
{{- if $v.auth.serviceToken.secretName }}
- name: service-token
  mountPath: /var/run/escriba/service-token
  readOnly: true
{{- end }}
{{- if eq .component "gateway" }}
{{- if $v.auth.tokens.secretName }}
- name: auth-tokens
  mountPath: /var/run/escriba/auth-tokens
  readOnly: true
{{- end }}
{{- if or $v.auth.jwt.publicKeySecret $v.auth.jwt.hmacSecret }}
- name: auth-jwt
  mountPath: /var/run/escriba/auth-jwt
  readOnly: true
{{- end }}
{{- if include "escriba.webhookSecretName" .root }}
- name: webhooks
  mountPath: /var/run/escriba/webhooks
  readOnly: true
{{- end }}
{{- end }}
{{- if and (eq .component "preprocess") $v.audioUrls.s3.secretAccessKey.secretName }}
- name: s3-credentials
  mountPath: /var/run/escriba/s3
  readOnly: true
{{- end }}
{{- end }}

{{/* The volumes behind escriba.secretVolumeMounts. Call with (dict "root" $ "component" X). */}}
{{- define "escriba.secretVolumes" -}}
{{- $v := .root.Values }}
{{- $auth := include "escriba.natsAuth" .root | fromJson }}
- name: tmp
  emptyDir:
    {{- /* Preprocess spools uploads and audio there (its memory stays flat): it has its own size. */}}
    sizeLimit: {{ (eq .component "preprocess") | ternary ($v.preprocess.tmpSizeLimit | default $v.tmpSizeLimit) $v.tmpSizeLimit }}
{{- include "escriba.databaseVolume" (dict "root" .root "secretName" (.databaseSecret | default (include "escriba.databaseSecretName" .root))) | nindent 0 }}
{{- if include "escriba.natsHasSecret" .root }}
{{- $keys := $v.nats.auth.secretKeys }}
- name: nats-creds
  secret:
    secretName: {{ include "escriba.natsSecretName" .root }}
    defaultMode: 0440
    items:
      {{- if $auth.userPassword }}
      - {key: {{ $keys.user }}, path: {{ $keys.user }}}
      - {key: {{ $keys.password }}, path: {{ $keys.password }}}
      {{- end }}
      {{- if $auth.token }}
      - {key: {{ $keys.token }}, path: {{ $keys.token }}}
      {{- end }}
      {{- if $auth.creds }}
      - {key: {{ $keys.creds }}, path: {{ $keys.creds }}}
      {{- end }}
{{- end }}
{{- if $v.nats.tls.clientCertSecret }}
- name: nats-tls
  secret:
    secretName: {{ $v.nats.tls.clientCertSecret }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if $v.tls.ca.secretName }}
- name: tls-ca
  secret:
    secretName: {{ $v.tls.ca.secretName }}
    defaultMode: 0444
    items:
      - key: {{ $v.tls.ca.key }}
        path: {{ $v.tls.ca.key }}
{{- end }}
{{- if $v.tls.databaseClientCertSecret }}
- name: db-client
  secret:
    secretName: {{ $v.tls.databaseClientCertSecret }}
    # libpq refuses a private key readable by others.
    defaultMode: 0400
{{- end }}
{{- if $v.grpcTls.enabled }}
- name: grpc-tls
  secret:
    secretName: {{ $v.grpcTls.secretName }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- if $v.grpcTls.mutual }}
      - {key: ca.crt, path: ca.crt}
      {{- end }}
{{- end }}
{{- if $v.auth.serviceToken.secretName }}
- name: service-token
  secret:
    secretName: {{ $v.auth.serviceToken.secretName }}
    defaultMode: 0440
    items:
      - {key: {{ $v.auth.serviceToken.key }}, path: {{ $v.auth.serviceToken.key }}}
{{- end }}
{{- if eq .component "gateway" }}
{{- if $v.auth.tokens.secretName }}
- name: auth-tokens
  secret:
    secretName: {{ $v.auth.tokens.secretName }}
    defaultMode: 0440
    items:
      - {key: {{ $v.auth.tokens.key }}, path: {{ $v.auth.tokens.key }}}
{{- end }}
{{- with (or $v.auth.jwt.publicKeySecret $v.auth.jwt.hmacSecret) }}
- name: auth-jwt
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      {{- $key := ternary $v.auth.jwt.publicKeyKey $v.auth.jwt.hmacKey (not (empty $v.auth.jwt.publicKeySecret)) }}
      - {key: {{ $key }}, path: {{ $key }}}
{{- end }}
{{- with include "escriba.webhookSecretName" .root }}
- name: webhooks
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - {key: {{ $v.webhooks.secret.key }}, path: {{ $v.webhooks.secret.key }}}
{{- end }}
{{- end }}
{{- $s3 := $v.audioUrls.s3.secretAccessKey }}
{{- if and (eq .component "preprocess") $s3.secretName }}
- name: s3-credentials
  secret:
    secretName: {{ $s3.secretName }}
    defaultMode: 0440
    items:
      - {key: {{ $s3.key }}, path: {{ $s3.key }}}
{{- end }}
{{- end }}

{{/* The port kubelet probes and `helm test` use: the plaintext health-only port. */}}
{{- define "escriba.probePort" -}}
{{ .Values.grpc.healthPort }}
{{- end }}

{{/* The gRPC health service name each service reports (grpc.health.v1, per-service status). */}}
{{- define "escriba.healthService" -}}
{{- $names := dict "gateway" "escriba.v1.TaskService" "preprocess" "escriba.v1.PreprocessService" "transcription" "escriba.v1.TranscriptionService" "correction" "escriba.v1.CorrectionService" }}
{{- get $names . }}
{{- end }}

{{/* The first URL of nats.url (the autoscaler takes one address). */}}
{{- define "escriba.natsFirstUrl" -}}
{{- .Values.nats.url | splitList "," | first | trim }}
{{- end }}
