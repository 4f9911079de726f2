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

{{/*
The ServiceAccount: "gpu-provisioner" unless named, whatever the release is called, as in the
Azure/gpu-provisioner chart, so a federated credential made for
system:serviceaccount:<namespace>:gpu-provisioner (Kaito's install guide) keeps matching.
*/}}
{{- define "gpu-provisioner.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default "gpu-provisioner" }}
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
controller.env without its empty entries: an entry with neither a value nor valueFrom (the
Azure/gpu-provisioner chart's values.yaml lists ARM_SUBSCRIPTION_ID, LOCATION, ... with `value:`
left empty) sets nothing, so the chart's own variable of that name stays. As YAML, a list.
*/}}
{{- define "gpu-provisioner.userEnvEntries" -}}
{{- $entries := list }}
{{- range .Values.controller.env | default list }}
{{- if or .valueFrom (and (not (kindIs "invalid" .value)) (ne (toString .value) "")) }}
{{- $entries = append $entries . }}
{{- end }}
{{- end }}
{{- toYaml $entries }}
{{- end }}

{{/*
Value of a variable the user set in controller.env (empty when unset or without a value).
Call with (list $ "NAME").
*/}}
{{- define "gpu-provisioner.userEnv" -}}
{{- $name := index . 1 }}
{{- range (include "gpu-provisioner.userEnvEntries" (index . 0) | fromYamlArray) }}
{{- if and (eq .name $name) (hasKey . "value") }}
{{- toString .value }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when controller.env gives the variable a value or a valueFrom. Call with (list $ "NAME"). */}}
{{- define "gpu-provisioner.userEnvSet" -}}
{{- $name := index . 1 }}
{{- range (include "gpu-provisioner.userEnvEntries" (index . 0) | fromYamlArray) }}
{{- if eq .name $name }}true{{ end }}
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
{{- range $key, $var := dict "clusterName" "AZURE_CLUSTER_NAME" "subscriptionId" "ARM_SUBSCRIPTION_ID" "resourceGroup" "ARM_RESOURCE_GROUP" "location" "LOCATION" "nodeResourceGroup" "AZURE_NODE_RESOURCE_GROUP" "armEndpoint" "ARM_ENDPOINT" "vnetSubnetId" "AZURE_VNET_SUBNET_ID" "poolStrategy" "AZURE_POOL_STRATEGY" }}
{{- with (get $azure $key) }}
{{- $env = append $env (dict "name" $var "value" (toString .)) }}
{{- end }}
{{- end }}
{{- with $azure.tags }}
{{- $env = append $env (dict "name" "AZURE_EXTRA_TAGS" "value" (kindIs "map" . | ternary (toJson .) (toString .))) }}
{{- end }}
{{- $user := include "gpu-provisioner.userEnvEntries" . | fromYamlArray }}
{{- $userNames := list }}
{{- range $user }}
{{- $userNames = append $userNames .name }}
{{- end }}
{{- $final := list }}
{{- range $env }}
{{- if not (has .name $userNames) }}
{{- $final = append $final . }}
{{- end }}
{{- end }}
{{- concat $final $user | toYaml }}
{{- end }}

{{/*
Refuse values that install a controller that cannot work; every problem is named at once.
*/}}
{{- define "gpu-provisioner.validate" -}}
{{- $problems := list }}
{{- if and (gt (int .Values.replicas) 1) (not (include "gpu-provisioner.leaderElect" .)) }}
{{- $problems = append $problems (printf "replicas is %d but leader election is off (leaderElection.enabled=false, or LEADER_ELECT=false in controller.env): every replica would act on the same claims. Set replicas: 1, or turn leader election on." (int .Values.replicas)) }}
{{- end }}
{{- if and (eq .Values.cloudProvider "azure") (not .Values.controller.envFrom) }}
{{- $azure := .Values.settings.azure | default dict }}
{{- $missing := list }}
{{- range $setting := list (list "clusterName" "AZURE_CLUSTER_NAME") (list "subscriptionId" "ARM_SUBSCRIPTION_ID") (list "resourceGroup" "ARM_RESOURCE_GROUP") (list "location" "LOCATION") }}
{{- $key := index $setting 0 }}
{{- $var := index $setting 1 }}
{{- if not (or (get $azure $key) (include "gpu-provisioner.userEnvSet" (list $ $var))) }}
{{- $missing = append $missing (printf "settings.azure.%s (or %s in controller.env)" $key $var) }}
{{- end }}
{{- end }}
{{- with $missing }}
{{- $problems = append $problems (printf "cloudProvider is azure but the cluster's %s not set: %s." (ternary "setting is" "settings are" (eq (len .) 1)) (join "; " .)) }}
{{- end }}
{{- end }}
{{- with $problems }}
{{- fail (printf "\n%s" (join "\n" .)) }}
{{- end }}
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

{{/*
Whether the chart renders the NodePool CRD (non-empty = yes). nodePools.installCRD true: always;
false: never; auto: when the cluster has no nodepools.karpenter.sh, or has the one this release
installed (so upgrades keep managing it). A CRD installed by anything else (Karpenter, AKS node
auto-provisioning, kubectl) is left alone: Helm could not adopt it, and it serves our NodePools as
well. `helm template` sees no cluster: there auto renders it (unless --api-versions names a NodePool).
*/}}
{{- define "gpu-provisioner.installNodePoolCRD" -}}
{{- $mode := toString .Values.nodePools.installCRD }}
{{- if eq $mode "true" }}true
{{- else if eq $mode "auto" }}
{{- $existing := include "gpu-provisioner.existingNodePoolCRD" . }}
{{- if or (eq $existing "none") (eq $existing "ours") }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The NodePool CRD in the cluster: "none", "ours" (labelled and annotated by Helm as this release's,
as Helm requires to manage it), "foreign", or "served" (NodePools are served but the CRD could not
be looked up: lookup answers only in real installs and upgrades and server-side dry runs, while a
client-side dry run still has the cluster's API versions and still refuses to render over a CRD
Helm does not own; "served" is treated as foreign).
*/}}
{{- define "gpu-provisioner.existingNodePoolCRD" -}}
{{- $crd := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "nodepools.karpenter.sh" }}
{{- if $crd }}
{{- $annotations := dig "metadata" "annotations" dict $crd }}
{{- $managedBy := dig "metadata" "labels" "app.kubernetes.io/managed-by" "" $crd }}
{{- if and (eq $managedBy "Helm") (eq (get $annotations "meta.helm.sh/release-name") .Release.Name) (eq (get $annotations "meta.helm.sh/release-namespace") .Release.Namespace) }}ours
{{- else }}foreign
{{- end }}
{{- else if or (.Capabilities.APIVersions.Has "karpenter.sh/v1/NodePool") (.Capabilities.APIVersions.Has "karpenter.sh/v1beta1/NodePool") }}served
{{- else }}none
{{- end }}
{{- end }}
