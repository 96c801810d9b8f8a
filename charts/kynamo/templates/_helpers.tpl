{{- define "kynamo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kynamo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "kynamo.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kynamo.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kynamo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kynamo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "router") */}}
{{- define "kynamo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kynamo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kynamo.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "kynamo.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{ default (printf "%s-operator" (include "kynamo.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.operator.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "kynamo.routerServiceAccount" -}}
{{- if .Values.router.serviceAccount.create -}}
{{ default (printf "%s-router" (include "kynamo.fullname" .)) .Values.router.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.router.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "kynamo.credentialsSecret" -}}
{{- default (printf "%s-router-credentials" (include "kynamo.fullname" .)) .Values.router.credentials.existingSecret -}}
{{- end -}}

{{- define "kynamo.internalTokenSecret" -}}
{{- default (printf "%s-router-internal-token" (include "kynamo.fullname" .)) .Values.router.internalToken.existingSecret -}}
{{- end -}}

{{/* Secret with the storage nodes' client-token and peer-token */}}
{{- define "kynamo.storageAuthSecret" -}}
{{- default (printf "%s-storage-auth" (include "kynamo.fullname" .)) .Values.storage.auth.existingSecret -}}
{{- end -}}

{{/* env entry presenting the storage nodes' client token (router, operator) */}}
{{- define "kynamo.clientTokenEnv" -}}
{{- if .Values.storage.auth.enabled -}}
- name: KYNAMO_CLIENT_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "kynamo.storageAuthSecret" . }}, key: client-token}
{{- end -}}
{{- end -}}

{{/* namespace of the Tables, routing ConfigMaps and GAC Lease the router uses */}}
{{- define "kynamo.routerNamespace" -}}
{{- .Values.router.namespace | default .Values.operator.watchNamespace | default .Release.Namespace -}}
{{- end -}}

{{/* namespaces whose storage-node pods the NetworkPolicy covers */}}
{{- define "kynamo.storageNamespaces" -}}
{{- if .Values.networkPolicy.namespaces -}}
{{- join "," .Values.networkPolicy.namespaces -}}
{{- else -}}
{{- default .Release.Namespace .Values.operator.watchNamespace -}}
{{- end -}}
{{- end -}}

{{- define "kynamo.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* the operator's rules on namespaced resources (ClusterRole when cluster-wide, else Role) */}}
{{- define "kynamo.operatorNamespacedRules" -}}
# Table: watched by kopf (list, watch; finalizer and annotation patches), read and status-patched.
- apiGroups: [kynamo.io]
  resources: [tables]
  verbs: [get, list, watch, patch]
- apiGroups: [kynamo.io]
  resources: [tables/status]
  verbs: [patch]
# Partition: created per table, members patched, deleted with the table.
- apiGroups: [kynamo.io]
  resources: [partitions]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [kynamo.io]
  resources: [partitions/status]
  verbs: [patch]
# Replica pods (watched for loss) and their volumes.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, create, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, create, delete]
# Routing ConfigMaps and the headless Service per table.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, create, patch, delete]
# kopf posts handler progress and the operator's own events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* The operator's KYNAMO_STORAGE_NODE_ENV: storageNode.* as a JSON object of `kynamo storage-node` env. */}}
{{- define "kynamo.storageNodeEnv" -}}
{{- $s := .Values.storageNode -}}
{{- $env := dict "KYNAMO_LOG_LEVEL" ($s.logLevel | default .Values.logLevel) "KYNAMO_LOG_FORMAT" .Values.logFormat -}}
{{- $floats := dict "heartbeatInterval" "KYNAMO_HEARTBEAT_INTERVAL" "electionTimeout" "KYNAMO_ELECTION_TIMEOUT" "scrubInterval" "KYNAMO_SCRUB_INTERVAL" "partitionMaxRcu" "KYNAMO_PARTITION_MAX_RCU" "partitionMaxWcu" "KYNAMO_PARTITION_MAX_WCU" -}}
{{- $ints := dict "logRetention" "KYNAMO_LOG_RETENTION" "maxReadLag" "KYNAMO_MAX_READ_LAG" "ioThreads" "KYNAMO_IO_THREADS" -}}
{{- range $key, $name := $floats }}
{{- $v := index $s $key }}
{{- if not (kindIs "invalid" $v) }}{{ $_ := set $env $name (toString $v) }}{{ end }}
{{- end }}
{{- range $key, $name := $ints }}
{{- $v := index $s $key }}
{{- if not (kindIs "invalid" $v) }}{{ $_ := set $env $name (int64 $v | toString) }}{{ end }}
{{- end }}
{{- if not (kindIs "invalid" $s.aioFsync) }}{{ $_ := set $env "KYNAMO_AIO_FSYNC" (ternary "true" "false" $s.aioFsync) }}{{ end }}
{{- range $name, $v := $s.env }}
{{- if kindIs "invalid" $v }}{{ $_ := unset $env $name }}{{ else }}{{ $_ := set $env $name (toString $v) }}{{ end }}
{{- end }}
{{- toJson $env -}}
{{- end -}}
