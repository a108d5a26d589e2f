{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "chat-kafka-bridge.podTemplate" -}}
metadata:
  labels:
    {{- include "chat-kafka-bridge.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Config and Secret changes roll the pods: the bridge reads both at start.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if include "chat-kafka-bridge.createSecret" . }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "chat-kafka-bridge.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  # Larger than the bridge's drain (preStop sleep + shutdown timeout), so the
  # producer's flush is never cut short by SIGKILL.
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: {{ .Chart.Name }}
      image: {{ include "chat-kafka-bridge.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      env:
        - name: BRIDGE_CONFIG
          value: /etc/chat-kafka-bridge/config/bridge.toml
        - name: RUST_LOG
          value: {{ .Values.config.logLevel | quote }}
        {{- if .Values.kafka.saslPassword.enabled }}
        - name: BRIDGE_KAFKA_PROP_SASL_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "chat-kafka-bridge.secretName" . }}
              key: {{ .Values.kafka.saslPassword.key }}
        {{- end }}
        # The spool volume (spool_max_bytes is in bridge.toml).
        - name: BRIDGE_SPOOL_DIR
          value: {{ .Values.spool.dir | quote }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: callback
          containerPort: {{ .Values.containerPorts.callback }}
          protocol: TCP
        - name: admin
          containerPort: {{ .Values.containerPorts.admin }}
          protocol: TCP
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if gt (int .Values.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ int .Values.preStopSleepSeconds }}"]
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/chat-kafka-bridge/config
          readOnly: true
        {{- if include "chat-kafka-bridge.tokenItems" . }}
        - name: tokens
          mountPath: {{ include "chat-kafka-bridge.secretDir" . }}
          readOnly: true
        {{- end }}
        - name: tmp
          mountPath: /tmp
        - name: spool
          mountPath: {{ .Values.spool.dir | quote }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "chat-kafka-bridge.fullname" . }}
    {{- with include "chat-kafka-bridge.tokenItems" . }}
    - name: tokens
      secret:
        secretName: {{ include "chat-kafka-bridge.secretName" $ }}
        # Readable by the bridge through fsGroup, by nobody else.
        defaultMode: 0440
        items:
          {{- . | trim | nindent 10 }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
    {{- if not .Values.spool.persistence.enabled }}
    # The spool on an emptyDir survives container restarts only; with
    # spool.persistence it is the StatefulSet's claim instead.
    - name: spool
      {{- with .Values.spool.emptyDir.sizeLimit }}
      emptyDir:
        sizeLimit: {{ . | quote }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $c := deepCopy . }}
    {{- if not (hasKey $c "labelSelector") }}
    {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "chat-kafka-bridge.selectorLabels" $ | fromYaml)) }}
    {{- end }}
    - {{- toYaml $c | nindent 6 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* Secret items: one token file per signed app. */}}
{{- define "chat-kafka-bridge.tokenItems" -}}
{{- range .Values.apps }}
{{- if not .unsigned }}
- key: token-{{ int64 .sdkAppId }}
  path: token-{{ int64 .sdkAppId }}
{{- end }}
{{- end }}
{{- end }}
