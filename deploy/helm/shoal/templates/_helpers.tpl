{{/* The chart's name, for the app.kubernetes.io/name label. */}}
{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, which names every object. Cut to 55 characters so that suffixes
such as "-cleanup" keep names within 63.
*/}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; the component label is added per object. */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" . }}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the node pods (the DaemonSet, the headless Service). */}}
{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end }}

{{/* Selector labels of the uninstall cleanup pods. */}}
{{- define "shoal.cleanupSelectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cleanup
{{- end }}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from a {repository, tag, digest} map; tag defaults to $default. */}}
{{- define "shoal.imageRef" -}}
{{- $img := index . 0 }}
{{- $default := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $default $img.tag) }}
{{- end }}
{{- end }}

{{- define "shoal.image" -}}
{{- include "shoal.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{/* The mirror's URL as containerd reaches it: the host's loopback (hostNetwork). */}}
{{- define "shoal.mirrorURL" -}}
{{- printf "http://127.0.0.1:%d" (int .Values.mirror.port) }}
{{- end }}

{{/*
The headless Service's DNS name, NAME:PORT, for --bootstrap-dns: its records are the nodes'
IPs, and PORT is where each answers /status.
*/}}
{{- define "shoal.bootstrapDNS" -}}
{{- printf "%s.%s.svc.%s:%d" (include "shoal.fullname" .) .Release.Namespace .Values.bootstrap.clusterDomain (int .Values.admin.port) }}
{{- end }}

{{/*
--admin-addr. The pod's IP is written in brackets, which Go accepts around IPv4 and IPv6
addresses alike, so the same argument works whichever family the cluster uses.
*/}}
{{- define "shoal.adminAddr" -}}
{{- $host := .Values.admin.bindAddress | default "$(POD_IP)" }}
{{- if or (contains ":" $host) (eq $host "$(POD_IP)") }}
{{- printf "[%s]:%d" (trimAll "[]" $host) (int .Values.admin.port) }}
{{- else }}
{{- printf "%s:%d" $host (int .Values.admin.port) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the private network key, or "" when there is none. */}}
{{- define "shoal.pskSecretName" -}}
{{- if .Values.psk.existingSecret }}
{{- .Values.psk.existingSecret }}
{{- else if .Values.psk.value }}
{{- printf "%s-psk" (include "shoal.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Arguments of `shoal containerd-config` shared by the install (init container) and the
uninstall cleanup, which must name the same registries to undo exactly what was done.
*/}}
{{- define "shoal.containerdConfigArgs" -}}
- containerd-config
- {{ printf "--hosts-dir=%s" .Values.containerd.hostsDir | quote }}
- {{ printf "--mirror=%s" (include "shoal.mirrorURL" .) | quote }}
{{- range .Values.registries }}
- {{ printf "--registry=%s" . | quote }}
{{- end }}
{{- if .Values.containerd.default }}
- --default
{{- end }}
{{- if .Values.containerd.dialTimeout }}
- {{ printf "--dial-timeout=%s" .Values.containerd.dialTimeout | quote }}
{{- end }}
{{- end }}

{{/* Scheduling shared by the node and the cleanup pods: both must reach the same nodes. */}}
{{- define "shoal.scheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or .Values.tolerateAllTaints .Values.tolerations }}
tolerations:
  {{- if .Values.tolerateAllTaints }}
  - operator: Exists
  {{- end }}
  {{- with .Values.tolerations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The tracker's name: its StatefulSet, its headless Service and the prefix of its pods'
names. A StatefulSet's name must leave room for the revision hash in its pods' labels, so
it is kept within 52 characters.
*/}}
{{- define "shoal.trackerName" -}}
{{- printf "%s-tracker" (include "shoal.fullname" . | trunc 44 | trimSuffix "-") }}
{{- end }}

{{/* Selector labels of the tracker pods (the StatefulSet, its Service). */}}
{{- define "shoal.trackerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: tracker
{{- end }}

{{/* The tracker's image: tracker.image, its empty fields taken from image. */}}
{{- define "shoal.trackerImage" -}}
{{- $img := .Values.tracker.image }}
{{- $ref := dict "repository" ($img.repository | default .Values.image.repository) "tag" .Values.image.tag "digest" .Values.image.digest }}
{{- if or $img.tag $img.digest }}
{{- $_ := set $ref "tag" $img.tag }}
{{- $_ := set $ref "digest" $img.digest }}
{{- end }}
{{- include "shoal.imageRef" (list $ref .Chart.AppVersion) }}
{{- end }}

{{/*
The URL of tracker replica I, from (list $ I): the pod's own DNS name under the headless
Service. Trackers share no state, so a node must reach every replica, not any one of them.
*/}}
{{- define "shoal.trackerURL" -}}
{{- $ := index . 0 }}
{{- $name := include "shoal.trackerName" $ }}
{{- printf "http://%s-%d.%s.%s.svc.%s:%d" $name (int (index . 1)) $name $.Release.Namespace $.Values.bootstrap.clusterDomain (int $.Values.tracker.port) }}
{{- end }}
