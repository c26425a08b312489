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
