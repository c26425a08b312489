{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "pronto.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pronto.fullname" -}}
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

{{- define "pronto.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pronto.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the `helm test` pod: outside pronto.selectorLabels on purpose, so that no selector of
the release (Deployment, PDB, HPA target, Services, PodMonitoring, the server's NetworkPolicy
with its egress rules) picks the test pod up. The server's NetworkPolicy admits it by these,
and its own policy (templates/tests/networkpolicy.yaml) selects it by these.
*/}}
{{- define "pronto.helmTestLabels" -}}
app.kubernetes.io/name: {{ printf "%s-helm-test" (include "pronto.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end }}

{{- define "pronto.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pronto.selectorLabels" . }}
app.kubernetes.io/version: {{ include "pronto.imageTag" . | quote }}
app.kubernetes.io/component: inference
app.kubernetes.io/part-of: pronto
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pronto.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pronto.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pronto.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | trunc 63 }}
{{- end }}

{{/* repository[:tag][@digest] from an image block; the digest wins when present. */}}
{{- define "pronto.imageRef" -}}
{{- $img := .image -}}
{{- $tag := default .defaultTag $img.tag -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "pronto.serverImage" -}}
{{- include "pronto.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) -}}
{{- end }}

{{/* Where the server finds the model repository. */}}
{{- define "pronto.modelRepository" -}}
{{- if eq .Values.model.source "baked" }}{{ .Values.model.bakedPath }}{{ else }}{{ .Values.model.mountPath }}{{ end -}}
{{- end }}

{{/*
Seconds the preStop hook keeps serving: server.preStopSeconds, stretched to the external load
balancer's connection draining when the Gateway API path is on.
*/}}
{{- define "pronto.preStopSeconds" -}}
{{- $wait := int .Values.server.preStopSeconds -}}
{{- if .Values.gatewayApi.enabled -}}
{{- $wait = max $wait (int .Values.gatewayApi.connectionDrainingSeconds) -}}
{{- end -}}
{{- $wait -}}
{{- end }}

{{/* Drain budget: preStop wait + NOT_SERVING delay + in-flight grace + margin. */}}
{{- define "pronto.terminationGracePeriodSeconds" -}}
{{- $s := .Values.server -}}
{{- add (int (include "pronto.preStopSeconds" .)) (int (ceil $s.drainDelay)) (int (ceil $s.gracePeriod)) (int $s.terminationMarginSeconds) -}}
{{- end }}

{{/*
PRONTO_WORKERS for every container that needs it (server and Envoy renderer read the same
variable, so both sides agree on the worker ports). With server.workers = 0 the kubelet
resolves it from the server container's CPU limit, rounded up to a whole CPU.
*/}}
{{- define "pronto.workersEnv" -}}
- name: PRONTO_WORKERS
{{- if gt (int .Values.server.workers) 0 }}
  value: {{ .Values.server.workers | quote }}
{{- else }}
  valueFrom:
    resourceFieldRef:
      containerName: server
      resource: limits.cpu
      divisor: "1"
{{- end }}
{{- end }}

{{/*
The per-worker memory guard of `pronto serve` (PRONTO_MEMORY_LIMIT_MB), in MiB: server.memoryGuardMb
when set; otherwise derived from the server container's memory limit: 256 MiB are left to the
supervisor and the warm template, and each worker's guard is three quarters of its share of
the rest, so that a large batch admitted just under the guard still fits. Empty (the server's
default) without a memory limit, or when server.extraEnv sets it.
*/}}
{{- define "pronto.memoryGuardMb" -}}
{{- $s := .Values.server -}}
{{- if hasKey $s.extraEnv "PRONTO_MEMORY_LIMIT_MB" }}
{{- else if not (kindIs "invalid" $s.memoryGuardMb) }}{{ $s.memoryGuardMb | int }}
{{- else if (($s.resources).limits).memory }}
{{- $mib := include "pronto.mebibytes" $s.resources.limits.memory | int -}}
{{- $workers := int $s.workers -}}
{{- if le $workers 0 }}{{ $workers = include "pronto.cpuCeiling" (required "server.resources.limits.cpu is required when server.workers is 0" $s.resources.limits.cpu) | int }}{{ end -}}
{{- $share := div (sub $mib 256) (max $workers 1) -}}
{{- if lt $share 128 }}{{ fail (printf "server.resources.limits.memory %v leaves under 128 MiB a worker for %d workers" $s.resources.limits.memory $workers) }}{{ end -}}
{{- div (mul $share 3) 4 -}}
{{- end -}}
{{- end }}

{{/* A Kubernetes memory quantity (512Mi, 2Gi, 2G, bytes) in MiB, rounded down. */}}
{{- define "pronto.mebibytes" -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}{{ div (int64 .) 1048576 }}
{{- else -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $unit := trimPrefix $number . -}}
{{- $mib := dict "" 0.00000095367431640625 "Ki" 0.0009765625 "Mi" 1.0 "Gi" 1024.0 "Ti" 1048576.0 "k" 0.00095367431640625 "M" 0.95367431640625 "G" 953.67431640625 "T" 953674.31640625 -}}
{{- if or (not $number) (not (hasKey $mib $unit)) }}{{ fail (printf "cannot read the memory quantity %q" .) }}{{ end -}}
{{- mulf (float64 $number) (get $mib $unit) | floor | int -}}
{{- end -}}
{{- end }}

{{/* A Kubernetes CPU quantity (2, "1500m", 0.5) rounded up to whole CPUs, at least 1, as the
Downward API's limits.cpu with divisor 1 gives it to PRONTO_WORKERS. */}}
{{- define "pronto.cpuCeiling" -}}
{{- $q := toString . -}}
{{- $cpus := 0 -}}
{{- if hasSuffix "m" $q }}{{ $cpus = div (add (trimSuffix "m" $q | int) 999) 1000 }}
{{- else }}{{ $cpus = ceil (float64 $q) | int }}{{ end -}}
{{- max $cpus 1 -}}
{{- end }}

{{- define "pronto.authSecretName" -}}
{{- if eq .Values.gateway.auth.mode "api-key" }}{{ .Values.gateway.auth.apiKey.existingSecret }}{{ else if eq .Values.gateway.auth.mode "jwt" }}{{ .Values.gateway.auth.jwt.existingSecret }}{{ end -}}
{{- end }}

{{- define "pronto.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
The models this release serves, as JSON: a list of {name, policy, serverPolicy, stable,
candidate, rollout}. `models` when set; otherwise the single model.name / model.version
(with model.rollout), as in earlier releases of the chart. `policy` decides what the
model-fetch init container copies; `serverPolicy` is passed to `pronto serve` (empty: the
server's default, which serves what was fetched).
*/}}
{{- define "pronto.models" -}}
{{- $out := list -}}
{{- $m := .Values.model -}}
{{- if .Values.models -}}
{{- if (($m.rollout | default dict).candidate | default "" | toString) -}}
{{- fail "model.rollout applies to the single model.name form; with `models`, give each entry its own rollout" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $e := .Values.models -}}
{{- if hasKey $seen $e.name -}}
{{- fail (printf "models: %s is listed twice" $e.name) -}}
{{- end -}}
{{- $_ := set $seen $e.name true -}}
{{- $policy := $e.versionPolicy | default "latest" | toString -}}
{{- $rollout := $e.rollout | default dict -}}
{{- $candidate := $rollout.candidate | default "" | toString -}}
{{- $stable := "" -}}
{{- if $candidate -}}
{{- $pins := splitList "," (trimPrefix "pinned:" $policy) -}}
{{- if or (not (hasPrefix "pinned:" $policy)) (ne (len $pins) 1) -}}
{{- fail (printf "models[%d] (%s): a rollout needs versionPolicy pinned:<stable version>" $i $e.name) -}}
{{- end -}}
{{- $stable = first $pins -}}
{{- end -}}
{{- $out = append $out (dict "name" $e.name "policy" $policy "serverPolicy" (ternary "" $policy (ne $candidate "")) "stable" $stable "candidate" $candidate "rollout" $rollout) -}}
{{- end -}}
{{- else -}}
{{- $rollout := $m.rollout | default dict -}}
{{- $version := toString $m.version -}}
{{- $out = append $out (dict "name" $m.name "policy" (printf "pinned:%s" $version) "serverPolicy" "" "stable" $version "candidate" ($rollout.candidate | default "" | toString) "rollout" $rollout) -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{/* Name of the OpenTelemetry Collector's objects. */}}
{{- define "pronto.collectorName" -}}
{{- printf "%s-otel-collector" (include "pronto.fullname" . | trunc 48 | trimSuffix "-") -}}
{{- end }}

{{/* host:port that Envoy and the server export spans to; empty when tracing is off. */}}
{{- define "pronto.tracingEndpoint" -}}
{{- $t := .Values.tracing | default dict -}}
{{- if $t.enabled -}}
{{- if $t.collector.enabled -}}
{{- printf "%s.%s.svc:%d" (include "pronto.collectorName" .) .Release.Namespace (int $t.collector.port) -}}
{{- else -}}
{{- $t.endpoint -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "pronto.collectorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pronto.name" . }}-otel-collector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The pods of this release, for label feedback: a headless Service's name resolves to the
address of every ready pod.
*/}}
{{- define "pronto.feedbackPeers" -}}
{{- printf "%s-peers.%s.svc.cluster.local:%v" (include "pronto.fullname" .) .Release.Namespace .Values.server.port -}}
{{- end -}}
