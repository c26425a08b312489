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
The pods of this release, for label feedback: a headless Service's name resolves to the
address of every ready pod.
*/}}
{{- define "pronto.feedbackPeers" -}}
{{- printf "%s-peers.%s.svc.cluster.local:%v" (include "pronto.fullname" .) .Release.Namespace .Values.server.port -}}
{{- end -}}
