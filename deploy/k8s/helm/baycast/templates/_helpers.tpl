{{/* The six services, in start order. */}}
{{- define "baycast.serviceNames" -}}
ingest mixer graphics distribution monitoring control
{{- end }}

{{/* Release-wide name prefix: the release name, or <release>-baycast when it lacks "baycast". */}}
{{- define "baycast.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "ingest"). */}}
{{- define "baycast.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "baycast.labels" -}}
{{ include "baycast.selectorLabels" . }}
app.kubernetes.io/part-of: baycast
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "baycast.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "baycast.natsURL" -}}
{{- if .Values.nats.enabled -}}
nats://{{ include "baycast.fullname" . }}-nats:4222
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end }}

{{/* Whether services connect as their own NATS user: always with the in-chart NATS; with an
external one when nats.auth.existingSecret names the Secret of its users' passwords. */}}
{{- define "baycast.natsUsersOn" -}}
{{- if or .Values.nats.enabled .Values.nats.auth.existingSecret -}}true{{- end -}}
{{- end }}

{{/* BAYCAST_NATS_URL of one service's user: (dict "root" $ "name" "mixer"); from the edge
namespace, the NATS Service by its namespace-qualified name; tls:// with tls.enabled (the chart's
NATS then accepts nothing else). "var" names the variable holding the password (NATS_PASSWORD
unless given). An external NATS keeps the scheme of nats.url. */}}
{{- define "baycast.natsUserURL" -}}
{{- $var := .var | default "NATS_PASSWORD" -}}
{{- if .root.Values.nats.enabled -}}
{{- $host := printf "%s-nats" (include "baycast.fullname" .root) -}}
{{- if ne (include "baycast.namespace" (dict "root" .root "component" .name)) .root.Release.Namespace -}}
{{- $host = printf "%s.%s.svc" $host .root.Release.Namespace -}}
{{- end -}}
{{ ternary "tls" "nats" .root.Values.tls.enabled }}://{{ .name }}:$({{ $var }})@{{ $host }}:4222
{{- else -}}
{{- $url := urlParse (include "baycast.natsURL" .root) -}}
{{ $url.scheme }}://{{ .name }}:$({{ $var }})@{{ $url.host }}
{{- end -}}
{{- end }}

{{/* The Secret with one NATS password per user (key = user name). */}}
{{- define "baycast.natsSecret" -}}
{{- .Values.nats.auth.existingSecret | default (printf "%s-nats-users" (include "baycast.fullname" .)) -}}
{{- end }}

{{/* The services that publish a WebRTC UDP range with hostPort, one pod per node
(docs/adr/0005): ingest (WHIP) and distribution (WHEP). They run in the edge namespace. */}}
{{- define "baycast.webrtcServices" -}}
ingest distribution
{{- end }}

{{/* The namespace of ingest and distribution: hostPorts are admitted only by the "privileged"
Pod Security level, which the release namespace ("restricted") does not give. */}}
{{- define "baycast.edgeNamespace" -}}
{{- .Values.podSecurity.edgeNamespace.name | default (printf "%s-edge" .Release.Namespace) -}}
{{- end }}

{{/* The namespace of one component: (dict "root" $ "component" "ingest"). */}}
{{- define "baycast.namespace" -}}
{{- if has .component (splitList " " (include "baycast.webrtcServices" .root)) -}}
{{- include "baycast.edgeNamespace" .root -}}
{{- else -}}
{{- .root.Release.Namespace -}}
{{- end -}}
{{- end }}

{{/* The Pod Security labels of a namespace enforcing `level` (audit and warn: restricted). */}}
{{- define "baycast.podSecurityLabels" -}}
{{- $v := .root.Values.podSecurity.version -}}
pod-security.kubernetes.io/enforce: {{ .level }}
pod-security.kubernetes.io/enforce-version: {{ $v }}
pod-security.kubernetes.io/audit: restricted
pod-security.kubernetes.io/audit-version: {{ $v }}
pod-security.kubernetes.io/warn: restricted
pod-security.kubernetes.io/warn-version: {{ $v }}
{{- end }}

{{/* The Secret ingest, distribution and control share (keys srt-secret, media-grant-secret). */}}
{{- define "baycast.sharedSecret" -}}
{{- .Values.sharedSecrets.existingSecret | default (printf "%s-shared-secrets" (include "baycast.fullname" .)) -}}
{{- end }}

{{/* Distribution's secrets key (key `key`; docs/adr/0020). */}}
{{- define "baycast.secretsKeySecret" -}}
{{- .Values.secretsKey.existingSecret | default (printf "%s-distribution-key" (include "baycast.fullname" .)) -}}
{{- end }}

{{/* The services with an HTTPS edge (docs/adr/0019): WHIP, WHEP and the exchange, the control
room's API and pages. */}}
{{- define "baycast.httpsServices" -}}
ingest distribution control
{{- end }}

{{/* The Secret of the public certificate (tls.crt, tls.key) and the one of the internal identity
(tls.crt, tls.key, ca.crt), in both namespaces. */}}
{{- define "baycast.edgeTlsSecret" -}}
{{- .Values.tls.edgeSecret | default (printf "%s-edge-tls" (include "baycast.fullname" .)) -}}
{{- end }}

{{- define "baycast.internalTlsSecret" -}}
{{- .Values.tls.internalSecret | default (printf "%s-internal-tls" (include "baycast.fullname" .)) -}}
{{- end }}

{{/* The services whose HPAs can follow the share of their units of work in use
(autoscaling.metric units; docs/adr/0015). */}}
{{- define "baycast.unitServices" -}}
mixer distribution
{{- end }}

{{/* Whether a service runs more than one pod (then it gets a PDB). */}}
{{- define "baycast.multiReplica" -}}
{{- $svc := index .root.Values.services .name -}}
{{- if or (gt (int $svc.replicas) 1) (and $svc.autoscaling $svc.autoscaling.enabled) -}}true{{- end -}}
{{- end }}

{{/* The non-secret settings of one service (its ConfigMap data): (dict "root" $ "name" "ingest"). */}}
{{- define "baycast.config" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values.services $name -}}
{{- $S := upper $name -}}
{{- $c := $root.Values.common -}}
{{- if not (include "baycast.natsUsersOn" $root) }}
BAYCAST_NATS_URL: {{ include "baycast.natsURL" $root | quote }}
{{- end }}
BAYCAST_LOG_FORMAT: {{ $c.logFormat | quote }}
BAYCAST_LOG_LEVEL: {{ $c.logLevel | quote }}
BAYCAST_DRAIN_SECONDS: {{ $c.drainSeconds | quote }}
BAYCAST_UNREADY_SECONDS: {{ $c.unreadySeconds | quote }}
{{- /* Every bucket and stream at the JetStream cluster's size (docs/adr/0015). */}}
BAYCAST_JETSTREAM_REPLICAS: {{ ternary $root.Values.nats.replicas ($root.Values.nats.jetstreamReplicas | default 1) $root.Values.nats.enabled | quote }}
BAYCAST_{{ $S }}_HTTP_ADDR: {{ printf "0.0.0.0:%d" (int $svc.httpPort) | quote }}
BAYCAST_{{ $S }}_GRPC_ADDR: {{ printf "0.0.0.0:%d" (int $svc.grpcPort) | quote }}
{{- if eq $name "ingest" }}
BAYCAST_INGEST_RTMP_ADDR: {{ printf "0.0.0.0:%d" (int $svc.rtmpPort) | quote }}
BAYCAST_INGEST_SRT_ADDR: {{ printf "0.0.0.0:%d" (int $svc.srtPort) | quote }}
BAYCAST_INGEST_RTC_PORT_MIN: {{ $svc.webrtc.portMin | quote }}
BAYCAST_INGEST_RTC_PORT_MAX: {{ $svc.webrtc.portMax | quote }}
{{- /* One UDP port per WebRTC session (bundled): the range bounds the sessions of a pod. */}}
BAYCAST_INGEST_MAX_SESSIONS: {{ add1 (sub (int $svc.webrtc.portMax) (int $svc.webrtc.portMin)) | quote }}
{{- with $svc.publicURL }}
BAYCAST_INGEST_PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- with $svc.webrtc.publicIP }}
BAYCAST_INGEST_PUBLIC_IP: {{ . | quote }}
{{- end }}
{{- /* The station page reaches distribution's HTTP from the station's browser. */}}
{{- with $root.Values.services.distribution.publicURL }}
BAYCAST_INGEST_EXCHANGE_URL: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $name "distribution" }}
BAYCAST_DISTRIBUTION_DATA_DIR: "/var/lib/baycast/data"
BAYCAST_DISTRIBUTION_RTC_PORT_MIN: {{ $svc.webrtc.portMin | quote }}
BAYCAST_DISTRIBUTION_RTC_PORT_MAX: {{ $svc.webrtc.portMax | quote }}
{{- /* One UDP port per WHEP viewer (bundled): the range bounds the viewers of a pod. */}}
BAYCAST_DISTRIBUTION_MAX_VIEWERS: {{ add1 (sub (int $svc.webrtc.portMax) (int $svc.webrtc.portMin)) | quote }}
{{- with $svc.publicURL }}
BAYCAST_DISTRIBUTION_PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- with $svc.webrtc.publicIP }}
BAYCAST_DISTRIBUTION_PUBLIC_IP: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $name "control" }}
{{- with $svc.publicURL }}
BAYCAST_CONTROL_PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- with $svc.exchangeURL | default $root.Values.services.distribution.publicURL }}
BAYCAST_CONTROL_EXCHANGE_URL: {{ . | quote }}
{{- end }}
{{- with $svc.ingestURL | default $root.Values.services.ingest.publicURL }}
BAYCAST_CONTROL_INGEST_URL: {{ . | quote }}
{{- end }}
{{- if $svc.trustProxy }}
BAYCAST_CONTROL_TRUST_PROXY: "true"
{{- end }}
{{- end }}
{{- range $k, $v := $svc.env }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer: the pods of one component, seen from a policy in namespace `from`:
(dict "root" $ "component" "nats" "from" "baycast-edge"). */}}
{{- define "baycast.peer" -}}
{{- $ns := include "baycast.namespace" . -}}
{{- if ne $ns .from }}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ $ns }}
{{- end }}
podSelector:
  matchLabels:
    {{- include "baycast.selectorLabels" . | nindent 4 }}
{{- end }}

{{/* A file name as a DNS label: "Platform_Overview.json" -> "platform-overview". */}}
{{- define "baycast.fileStem" -}}
{{- base . | trimSuffix ".json" | trimSuffix ".yaml" | trimSuffix ".yml" | lower | replace "_" "-" | replace "." "-" | replace " " "-" -}}
{{- end }}
