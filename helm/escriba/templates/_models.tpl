{{/*
The model catalogue (`models`) and what each model runs as. The first model is the default: it runs in
the transcription Deployment and keeps the plain subject and the `transcription` consumer. Every further
model runs as component "transcription-<dns>" (Deployment, ConfigMap, Services, PDB, NetworkPolicy and
TranscriptionAutoscaler "<fullname>-transcription-<dns>") on the consumer "transcription-<token>".

token: what the services derive (escriba.models.ModelEntry.token): the name lower-cased, every run of
characters outside [a-z0-9_-] replaced by "_", leading and trailing "_" stripped. dns: the token with
"_" as "-" (object names and label values allow no "_").
*/}}

{{/* Keys of a models entry that describe the model itself (the catalogue); the others override. */}}
{{- define "escriba.catalogueKeys" -}}
name source multilingual languages device computeType autoscaling
{{- end }}

{{/* Merge .src into .dst in place: maps present in both are merged, anything else replaces. */}}
{{- define "escriba.mergeInto" -}}
{{- $dst := .dst }}
{{- range $key, $value := .src }}
{{- if and (kindIs "map" $value) (hasKey $dst $key) (kindIs "map" (index $dst $key)) }}
{{- $_ := include "escriba.mergeInto" (dict "dst" (index $dst $key) "src" $value) }}
{{- else }}
{{- $_ := set $dst $key $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Every model, checked, into .out.models (a list of dicts): name, token, dns, component, first, where
(how messages name its values), values (transcription.* with its overrides), autoscaling (autoscaling.*
with its overrides) and entry (its ESCRIBA_MODELS entry). Call with (dict "root" $ "out" (dict)).
*/}}
{{- define "escriba.models" -}}
{{- $root := .root }}
{{- $fullname := include "escriba.fullname" $root }}
{{- $catalogueKeys := include "escriba.catalogueKeys" $root | splitList " " }}
{{- if empty $root.Values.models }}
{{- fail "models: list at least one model (the first is the default)" }}
{{- end }}
{{- $models := list }}
{{- $byName := dict }}
{{- $byToken := dict }}
{{- $byDns := dict }}
{{- range $index, $m := $root.Values.models }}
{{- $name := toString (required (printf "models[%d].name is required" $index) $m.name) }}
{{- $first := eq $index 0 }}
{{- $where := printf "models[%d] (%s)" $index $name }}
{{- $token := regexReplaceAll "[^a-z0-9_-]+" (lower $name) "_" | trimAll "_" | default "model" }}
{{- $dns := $token | replace "_" "-" | trimAll "-" | default "model" }}
{{- $component := ternary "transcription" (printf "transcription-%s" $dns) $first }}
{{- if hasKey $byName $name }}
{{- fail (printf "models: %q is listed twice" $name) }}
{{- end }}
{{- if hasKey $byToken $token }}
{{- fail (printf "models: %q and %q share the subject token %q (names are compared lower-cased, with runs of characters other than a-z, 0-9, _ and - as one _): rename one" (index $byToken $token) $name $token) }}
{{- end }}
{{- if not $first }}
{{- if hasKey $byDns $dns }}
{{- fail (printf "models: %q and %q would both be named %s-%s: rename one" (index $byDns $dns) $name $fullname $component) }}
{{- end }}
{{- if or (eq $dns "metrics") (hasSuffix "-metrics" $dns) }}
{{- fail (printf "models: %q would be named like a metrics Service (%s-%s): rename it" $name $fullname $component) }}
{{- end }}
{{- $longest := printf "%s-%s-metrics" $fullname $component }}
{{- if gt (len $longest) 63 }}
{{- fail (printf "models: %q makes the Service name %s longer than 63 characters: use a shorter name (or fullnameOverride)" $name $longest) }}
{{- end }}
{{- $_ := set $byDns $dns $name }}
{{- end }}
{{- $_ := set $byName $name true }}
{{- $_ = set $byToken $token $name }}
{{- /* The Deployment's values: transcription.*, the entry's overrides on top. A further model mounts
no model volume unless it names its own. */}}
{{- $values := deepCopy $root.Values.transcription }}
{{- if not $first }}
{{- $volume := $values.model }}
{{- $_ = set $values "model" (dict "source" "bundled" "path" "" "subPath" "" "mountPath" $volume.mountPath "pvc" (dict "claimName" "" "readOnly" true) "image" (dict "reference" "" "pullPolicy" $volume.image.pullPolicy)) }}
{{- end }}
{{- $overrides := dict }}
{{- range $key, $value := $m }}
{{- if not (has $key $catalogueKeys) }}
{{- $_ = set $overrides $key $value }}
{{- end }}
{{- end }}
{{- $_ = include "escriba.mergeInto" (dict "dst" $values "src" (deepCopy $overrides)) }}
{{- /* The autoscaler's values: autoscaling.*, the entry's keys replacing them; one of the two backlog
targets given replaces both (the other is then unset). */}}
{{- $autoscaling := deepCopy $root.Values.autoscaling }}
{{- with $m.autoscaling }}
{{- if or (hasKey . "drainDeadlineSeconds") (hasKey . "targetBacklogSecondsPerReplica") }}
{{- $_ = set $autoscaling "drainDeadlineSeconds" (index . "drainDeadlineSeconds") }}
{{- $_ = set $autoscaling "targetBacklogSecondsPerReplica" (index . "targetBacklogSecondsPerReplica") }}
{{- end }}
{{- range $key, $value := omit . "drainDeadlineSeconds" "targetBacklogSecondsPerReplica" }}
{{- $_ = set $autoscaling $key $value }}
{{- end }}
{{- end }}
{{- /* Its ESCRIBA_MODELS entry, keys as escriba.models reads them; unset ones are left out. */}}
{{- $volume := $values.model }}
{{- $source := toString ($m.source | default "") }}
{{- if not $source }}
{{- if eq $volume.source "path" }}
{{- $source = required (printf "%s: model.path is required when model.source is path" $where) $volume.path }}
{{- else if has $volume.source (list "pvc" "image") }}
{{- $source = trimSuffix "/" (printf "%s/%s" $volume.mountPath (trimPrefix "/" $volume.subPath)) }}
{{- else }}
{{- $source = "bundled" }}
{{- end }}
{{- else if and (eq $source "bundled") (ne $volume.source "bundled") }}
{{- fail (printf "%s: source is bundled but %s is %s: set source to the model directory (e.g. %s/<dir>), or empty for the directory it mounts, and name the model after what it is" $where (ternary "transcription.model.source" "its model.source" $first) $volume.source $volume.mountPath) }}
{{- end }}
{{- $entry := dict "name" $name "source" $source }}
{{- if not (kindIs "invalid" $m.multilingual) }}
{{- $_ = set $entry "multilingual" $m.multilingual }}
{{- end }}
{{- with $m.languages }}
{{- $_ = set $entry "languages" . }}
{{- end }}
{{- with $m.device }}
{{- if and (eq . "cuda") (not $values.gpu.enabled) }}
{{- fail (printf "%s: device is cuda but gpu.enabled is false: the pods would get no GPU" $where) }}
{{- end }}
{{- $_ = set $entry "device" . }}
{{- end }}
{{- with $m.computeType }}
{{- $_ = set $entry "compute_type" . }}
{{- end }}
{{- $models = append $models (dict "name" $name "token" $token "dns" $dns "component" $component "first" $first "where" $where "values" $values "autoscaling" $autoscaling "entry" $entry) }}
{{- end }}
{{- $_ := set .out "models" $models }}
{{- end }}

{{/* ESCRIBA_MODELS: the catalogue as compact JSON, the same in every service. */}}
{{- define "escriba.modelsJson" -}}
{{- $out := dict }}
{{- $_ := include "escriba.models" (dict "root" . "out" $out) }}
{{- $entries := list }}
{{- range $out.models }}
{{- $entries = append $entries .entry }}
{{- end }}
{{- toJson $entries }}
{{- end }}

{{/*
The services' workloads in stage order, one per model for transcription, into .out.workloads: dicts of
component (names and labels), stage (the service it runs), values, and model (transcription only).
Call with (dict "root" $ "out" (dict)).
*/}}
{{- define "escriba.workloads" -}}
{{- $root := .root }}
{{- $models := dict }}
{{- $_ := include "escriba.models" (dict "root" $root "out" $models) }}
{{- $workloads := list }}
{{- range $stage := include "escriba.services" $root | splitList " " }}
{{- if eq $stage "transcription" }}
{{- range $models.models }}
{{- $workloads = append $workloads (dict "component" .component "stage" $stage "values" .values "model" .) }}
{{- end }}
{{- else }}
{{- $workloads = append $workloads (dict "component" $stage "stage" $stage "values" (index $root.Values $stage)) }}
{{- end }}
{{- end }}
{{- $_ = set .out "workloads" $workloads }}
{{- end }}

{{/*
PromQL matchers for the pods of one model's Deployment (DCGM and scraped metrics carry `namespace` and
`pod`): its pod name prefix, less the other models' Deployments that share it. Call with
(dict "root" $ "model" <model>).
*/}}
{{- define "escriba.modelPodMatchers" -}}
{{- $out := dict }}
{{- $_ := include "escriba.models" (dict "root" .root "out" $out) }}
{{- $mine := include "escriba.componentName" (dict "root" .root "component" .model.component) }}
{{- $others := list }}
{{- range $out.models }}
{{- $theirs := include "escriba.componentName" (dict "root" $.root "component" .component) }}
{{- if and (ne $theirs $mine) (hasPrefix (printf "%s-" $mine) $theirs) }}
{{- $others = append $others $theirs }}
{{- end }}
{{- end }}
{{- printf "namespace=%q, pod=~%q" .root.Release.Namespace (printf "%s-.*" $mine) }}
{{- with $others }}
{{- printf ", pod!~%q" (printf "(%s)-.*" (join "|" .)) }}
{{- end }}
{{- end }}
