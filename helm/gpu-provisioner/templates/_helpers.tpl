{{/* Chart name, or nameOverride. */}}
{{- define "gpu-provisioner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else the release name when it already
contains the chart name (release "gpu-provisioner" gives "gpu-provisioner"), else
"<release>-<chart>".
*/}}
{{- define "gpu-provisioner.fullname" -}}
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

{{- define "gpu-provisioner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpu-provisioner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-provisioner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gpu-provisioner.labels" -}}
helm.sh/chart: {{ include "gpu-provisioner.chart" . }}
{{ include "gpu-provisioner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gpu-provisioner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpu-provisioner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gpu-provisioner.image" -}}
{{- $image := .Values.controller.image }}
{{- $ref := printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- if $image.digest }}
{{- $ref = printf "%s@%s" $ref $image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/*
Value of a variable the user set in controller.env (empty when unset or without a value).
Call with (list $ "NAME").
*/}}
{{- define "gpu-provisioner.userEnv" -}}
{{- $name := index . 1 }}
{{- range (index . 0).Values.controller.env }}
{{- if and (eq .name $name) (not (kindIs "invalid" .value)) }}
{{- toString .value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when leader election is on. A LEADER_ELECT entry in controller.env (as the Azure chart's
values carry) wins over leaderElection.enabled, so the Lease RBAC follows what the controller does.
*/}}
{{- define "gpu-provisioner.leaderElect" -}}
{{- $user := include "gpu-provisioner.userEnv" (list . "LEADER_ELECT") | lower | trim }}
{{- if $user }}
{{- if has $user (list "1" "true" "yes" "on") }}true{{ end }}
{{- else if .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{- define "gpu-provisioner.leaseName" -}}
{{- $user := include "gpu-provisioner.userEnv" (list . "LEADER_ELECTION_NAME") }}
{{- $user | default .Values.leaderElection.leaseName | default (printf "%s-leader" (include "gpu-provisioner.fullname" .)) }}
{{- end }}

{{- define "gpu-provisioner.leaseNamespace" -}}
{{- include "gpu-provisioner.userEnv" (list . "LEADER_ELECTION_NAMESPACE") | default .Release.Namespace }}
{{- end }}

{{/*
Namespace the controller posts Events of cluster-scoped objects (Machines, NodeClaims) to; fixed in
the controller (provisioner/events.py), as kubectl describe looks there.
*/}}
{{- define "gpu-provisioner.eventsNamespace" -}}default{{- end }}

{{- define "gpu-provisioner.logLevel" -}}
{{- $level := .Values.controller.logLevel | default .Values.logLevel | default "info" | lower }}
{{- eq $level "warn" | ternary "warning" $level }}
{{- end }}

{{- define "gpu-provisioner.logFormat" -}}
{{- $format := .Values.controller.logEncoding | default .Values.logEncoding | default "json" | lower }}
{{- eq $format "json" | ternary "json" "text" }}
{{- end }}

{{/*
The container's environment: what the chart computes from values, then controller.env. A name in
controller.env replaces the chart's variable of that name instead of duplicating it.
*/}}
{{- define "gpu-provisioner.env" -}}
{{- $env := list }}
{{- $env = append $env (dict "name" "CLOUD_PROVIDER" "value" .Values.cloudProvider) }}
{{- $env = append $env (dict "name" "LOG_LEVEL" "value" (include "gpu-provisioner.logLevel" .)) }}
{{- $env = append $env (dict "name" "LOG_FORMAT" "value" (include "gpu-provisioner.logFormat" .)) }}
{{- $env = append $env (dict "name" "METRICS_PORT" "value" (toString .Values.controller.metrics.port)) }}
{{- $env = append $env (dict "name" "HEALTH_PORT" "value" (toString .Values.controller.healthProbe.port)) }}
{{- $env = append $env (dict "name" "BIND_ADDRESS" "value" "0.0.0.0") }}
{{- $env = append $env (dict "name" "LEADER_ELECT" "value" (include "gpu-provisioner.leaderElect" . | eq "true" | toString)) }}
{{- $env = append $env (dict "name" "LEADER_ELECTION_NAMESPACE" "value" (include "gpu-provisioner.leaseNamespace" .)) }}
{{- $env = append $env (dict "name" "LEADER_ELECTION_NAME" "value" (include "gpu-provisioner.leaseName" .)) }}
{{- $env = append $env (dict "name" "POD_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) }}
{{- $env = append $env (dict "name" "POD_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
{{- with .Values.settings.instanceTypeAllowlist }}
{{- $env = append $env (dict "name" "INSTANCE_TYPE_ALLOWLIST" "value" (join "," .)) }}
{{- end }}
{{- with .Values.settings.maxNodes }}
{{- $env = append $env (dict "name" "MAX_NODES" "value" (toString .)) }}
{{- end }}
{{- with .Values.settings.maxGpus }}
{{- $env = append $env (dict "name" "MAX_GPUS" "value" (toString .)) }}
{{- end }}
{{- $azure := .Values.settings.azure | default dict }}
{{- range $key, $var := dict "clusterName" "AZURE_CLUSTER_NAME" "subscriptionId" "ARM_SUBSCRIPTION_ID" "resourceGroup" "ARM_RESOURCE_GROUP" "location" "LOCATION" "nodeResourceGroup" "AZURE_NODE_RESOURCE_GROUP" "armEndpoint" "ARM_ENDPOINT" "vnetSubnetId" "AZURE_VNET_SUBNET_ID" }}
{{- with (get $azure $key) }}
{{- $env = append $env (dict "name" $var "value" (toString .)) }}
{{- end }}
{{- end }}
{{- with $azure.tags }}
{{- $env = append $env (dict "name" "AZURE_EXTRA_TAGS" "value" (kindIs "map" . | ternary (toJson .) (toString .))) }}
{{- end }}
{{- $userNames := list }}
{{- range .Values.controller.env }}
{{- $userNames = append $userNames .name }}
{{- end }}
{{- $final := list }}
{{- range $env }}
{{- if not (has .name $userNames) }}
{{- $final = append $final . }}
{{- end }}
{{- end }}
{{- concat $final (.Values.controller.env | default list) | toYaml }}
{{- end }}

{{/*
Fill in a labelSelector matching this release's pods where a pod (anti-)affinity term or a
topology spread constraint has none. Works on copies; .Values stay untouched.
*/}}
{{- define "gpu-provisioner.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) }}
{{- $selector := dict "matchLabels" (include "gpu-provisioner.selectorLabels" . | fromYaml) }}
{{- range $kind := list "podAffinity" "podAntiAffinity" }}
{{- with (get $affinity $kind) }}
{{- range (get . "requiredDuringSchedulingIgnoredDuringExecution" | default list) }}
{{- if not (hasKey . "labelSelector") }}
{{- $_ := set . "labelSelector" (deepCopy $selector) }}
{{- end }}
{{- end }}
{{- range (get . "preferredDuringSchedulingIgnoredDuringExecution" | default list) }}
{{- if not (hasKey .podAffinityTerm "labelSelector") }}
{{- $_ := set .podAffinityTerm "labelSelector" (deepCopy $selector) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $affinity }}
{{- end }}

{{- define "gpu-provisioner.topologySpreadConstraints" -}}
{{- $constraints := deepCopy (.Values.topologySpreadConstraints | default list) }}
{{- $selector := dict "matchLabels" (include "gpu-provisioner.selectorLabels" . | fromYaml) }}
{{- range $constraints }}
{{- if not (hasKey . "labelSelector") }}
{{- $_ := set . "labelSelector" (deepCopy $selector) }}
{{- end }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}
