{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "chat-kafka-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-name, unless the release name already contains the chart name. */}}
{{- define "chat-kafka-bridge.fullname" -}}
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

{{- define "chat-kafka-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat-kafka-bridge.labels" -}}
helm.sh/chart: {{ include "chat-kafka-bridge.chart" . }}
{{ include "chat-kafka-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chat-kafka-bridge
{{- end }}

{{- define "chat-kafka-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat-kafka-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "chat-kafka-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat-kafka-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the tokens and the SASL password. */}}
{{- define "chat-kafka-bridge.secretName" -}}
{{- default (include "chat-kafka-bridge.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Whether the chart creates the Secret itself. */}}
{{- define "chat-kafka-bridge.createSecret" -}}
{{- if and (not .Values.secret.existingSecret) (or .Values.secret.tokens .Values.secret.kafkaSaslPassword) }}true{{ end }}
{{- end }}

{{- define "chat-kafka-bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* A StatefulSet (one spool volume claim per pod) instead of a Deployment. */}}
{{- define "chat-kafka-bridge.statefulSet" -}}
{{- if .Values.spool.persistence.enabled }}true{{ end }}
{{- end }}

{{/*
Bytes of a quantity (1073741824, "800Mi", "1.5Gi", "2G"), as an integer; the
argument is (list "value.name" value). Fails on anything else.
*/}}
{{- define "chat-kafka-bridge.bytes" -}}
{{- $name := index . 0 }}
{{- $v := include "chat-kafka-bridge.scalar" (index . 1) | trim }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $v }}
{{- $unit := trimPrefix $num $v }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "E" 1000000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 }}
{{- if or (not $num) (not (hasKey $units $unit)) }}
{{- fail (printf "%s (%s) is not a size: use a number of bytes or a quantity such as 800Mi or 2Gi" $name $v) }}
{{- end }}
{{- int64 (floor (mulf (float64 $num) (get $units $unit))) }}
{{- end }}

{{/* The spool volume's size in bytes: the claim's, or the emptyDir's sizeLimit; empty when unknown. */}}
{{- define "chat-kafka-bridge.spoolVolumeBytes" -}}
{{- if .Values.spool.persistence.enabled }}
{{- include "chat-kafka-bridge.bytes" (list "spool.persistence.size" .Values.spool.persistence.size) }}
{{- else if .Values.spool.emptyDir.sizeLimit }}
{{- include "chat-kafka-bridge.bytes" (list "spool.emptyDir.sizeLimit" .Values.spool.emptyDir.sizeLimit) }}
{{- end }}
{{- end }}

{{/* Which value spoolVolumeBytes comes from. */}}
{{- define "chat-kafka-bridge.spoolVolumeValue" -}}
{{- if .Values.spool.persistence.enabled }}spool.persistence.size{{ else }}spool.emptyDir.sizeLimit{{ end }}
{{- end }}

{{/*
spool_max_bytes: spool.maxBytes, else 80% of the volume's size; empty (the
bridge's default) when neither is known.
*/}}
{{- define "chat-kafka-bridge.spoolMaxBytes" -}}
{{- $v := .Values.spool.maxBytes }}
{{- if and (not (kindIs "invalid" $v)) (ne (toString $v) "") }}
{{- include "chat-kafka-bridge.bytes" (list "spool.maxBytes" $v) }}
{{- else }}
{{- with include "chat-kafka-bridge.spoolVolumeBytes" . }}
{{- int64 (floor (mulf (int64 .) 0.8)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* config.deliveryTimeout in milliseconds. */}}
{{- define "chat-kafka-bridge.deliveryTimeoutMs" -}}
{{- $v := toString .Values.config.deliveryTimeout | trim }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $v }}
{{- $unit := trimPrefix $num $v }}
{{- if or (not $num) (not (has $unit (list "ms" "s"))) }}
{{- fail (printf "config.deliveryTimeout (%s) must be written in ms or s, e.g. 1s or 500ms" $v) }}
{{- end }}
{{- int64 (floor (mulf (float64 $num) (ternary 1000 1 (eq $unit "s")))) }}
{{- end }}

{{/* host:port for a listener; IPv6 hosts get brackets. */}}
{{- define "chat-kafka-bridge.listen" -}}
{{- $host := .host }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}

{{/* Directory the token files are mounted in. */}}
{{- define "chat-kafka-bridge.secretDir" -}}
/etc/chat-kafka-bridge/secrets
{{- end }}

{{/*
Checks that fail the render with a message saying what to set. Called from
every template that needs a valid configuration.
*/}}
{{- define "chat-kafka-bridge.validate" -}}
{{- if not (trim .Values.kafka.brokers) }}
{{- fail "kafka.brokers is required: set it to your Kafka bootstrap servers, e.g. --set kafka.brokers=kafka-0.kafka:9092 (the bridge's embedded in-memory broker is for demos only and is not offered by the chart)" }}
{{- end }}
{{- if not .Values.apps }}
{{- fail "apps is empty: add at least one app, e.g. --set apps[0].sdkAppId=1400000001, with its token in the Secret under token-1400000001" }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $app := .Values.apps }}
{{- $id := printf "%d" (int64 $app.sdkAppId) }}
{{- if hasKey $seen $id }}
{{- fail (printf "apps[%d].sdkAppId %s is listed twice" $i $id) }}
{{- end }}
{{- $_ := set $seen $id true }}
{{- if and (not $app.unsigned) (not $.Values.secret.existingSecret) (not (hasKey $.Values.secret.tokens $id)) }}
{{- fail (printf "apps[%d] (sdkAppId %s) has no token: set secret.tokens.%s, or secret.existingSecret to a Secret with the key token-%s, or apps[%d].unsigned=true to accept unsigned callbacks" $i $id $id $id $i) }}
{{- end }}
{{- end }}
{{- range $k, $_ := .Values.secret.tokens }}
{{- if not (hasKey $seen (toString $k)) }}
{{- fail (printf "secret.tokens.%s is for no app in apps" $k) }}
{{- end }}
{{- end }}
{{- range $k, $_ := .Values.kafka.properties }}
{{- $lk := lower $k }}
{{- if or (contains "password" $lk) (contains "secret" $lk) (hasSuffix ".key.pem" $lk) }}
{{- fail (printf "kafka.properties.%s looks like a secret and would land in a ConfigMap: use kafka.saslPassword, or extraEnv with BRIDGE_KAFKA_PROP_%s from a secretKeyRef" $k (upper $k | replace "." "_")) }}
{{- end }}
{{- if eq $lk "bootstrap.servers" }}
{{- fail "kafka.properties.bootstrap.servers: set kafka.brokers instead" }}
{{- end }}
{{- end }}
{{- if and .Values.kafka.saslPassword.enabled (not .Values.secret.existingSecret) (not .Values.secret.kafkaSaslPassword) }}
{{- fail "kafka.saslPassword.enabled needs secret.kafkaSaslPassword, or secret.existingSecret holding the key kafka.saslPassword.key" }}
{{- end }}
{{- $drain := add (int .Values.config.shutdownTimeoutSeconds) (int .Values.preStopSleepSeconds) }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than config.shutdownTimeoutSeconds + preStopSleepSeconds (%d), or Kubernetes kills the bridge before it has flushed to Kafka" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- $timeoutMs := int64 (include "chat-kafka-bridge.deliveryTimeoutMs" .) }}
{{- if or (le $timeoutMs 0) (ge $timeoutMs 1800) }}
{{- fail (printf "config.deliveryTimeout (%s) must be more than 0 and under 1800ms: Tencent gives up on a callback after 2 s, and a delivered-mode request waits this long before it is spooled and answered" (toString .Values.config.deliveryTimeout)) }}
{{- end }}
{{- with include "chat-kafka-bridge.spoolMaxBytes" . }}
{{- $max := int64 . }}
{{- if lt $max 65536 }}
{{- fail (printf "spool.maxBytes (%d bytes) must be at least 65536" $max) }}
{{- end }}
{{- with include "chat-kafka-bridge.spoolVolumeBytes" $ }}
{{- $size := int64 . }}
{{- $room := int64 (floor (mulf $size 0.9)) }}
{{- if gt $max $room }}
{{- $why := "an emptyDir that outgrows its sizeLimit gets the pod evicted, and the spool is lost with it" }}
{{- if $.Values.spool.persistence.enabled }}
{{- $why = "the claim's filesystem keeps part of it for itself (ext4: a journal, and 5% reserved for root), and a spool that cannot write drops acknowledged events" }}
{{- end }}
{{- fail (printf "spool.maxBytes (%d bytes) must be at most 90%% of %s (%d bytes), i.e. %d: %s. Lower spool.maxBytes, or leave it empty for 80%% of the volume" $max (include "chat-kafka-bridge.spoolVolumeValue" $) $size $room $why) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor and metrics.podMonitor are both enabled: each pod would be scraped twice; enable one" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one host in ingress.hosts" }}
{{- end }}
{{- end }}

{{/*
A value as the bridge expects it in a string: numbers from values files are
float64 in Helm, so whole numbers are printed without an exponent
(1048576, not 1.048576e+06).
*/}}
{{- define "chat-kafka-bridge.scalar" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}
