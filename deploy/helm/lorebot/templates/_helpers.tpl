{{/*
Names, labels and the pieces every lorebot pod shares (environment, volumes, security).
*/}}

{{- define "lorebot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lorebot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lorebot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lorebot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one role; call with (dict "root" $ "role" "bot"). */}}
{{- define "lorebot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lorebot.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "lorebot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "lorebot.slackSecretName" -}}
{{- default (printf "%s-slack" (include "lorebot.fullname" .)) .Values.slack.existingSecret -}}
{{- end -}}

{{- define "lorebot.redisSecretName" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.existingSecret -}}
{{- .Values.redis.auth.existingSecret -}}
{{- else if and (not .Values.redis.enabled) .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- printf "%s-redis" (include "lorebot.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "lorebot.redisPasswordKey" -}}
{{- if .Values.redis.auth.existingSecret -}}{{ .Values.redis.auth.existingSecretKey }}{{- else -}}redis-password{{- end -}}
{{- end -}}

{{- define "lorebot.redisUrlKey" -}}
{{- if .Values.redis.external.existingSecret -}}{{ .Values.redis.external.existingSecretKey }}{{- else -}}redis-url{{- end -}}
{{- end -}}

{{- define "lorebot.redisHost" -}}
{{- printf "%s-redis" (include "lorebot.fullname" .) -}}
{{- end -}}

{{/*
Environment of every lorebot container. Kubernetes expands $(REDIS_PASSWORD) in the URL
because REDIS_PASSWORD is defined earlier in the same list. Slack keys are optional: a key
missing from the Secret leaves its variable unset (HTTP mode has no app token).
*/}}
{{- define "lorebot.env" -}}
- name: LOREBOT_DATA_DIR
  value: /data
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "lorebot.redisSecretName" . }}
      key: {{ include "lorebot.redisPasswordKey" . }}
- name: LOREBOT_REDIS__URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "lorebot.redisHost" .) | quote }}
{{- else }}
- name: LOREBOT_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lorebot.redisSecretName" . }}
      key: {{ include "lorebot.redisUrlKey" . }}
{{- end }}
- name: LOREBOT_SLACK__BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "lorebot.slackSecretName" . }}
      key: bot-token
      optional: true
- name: LOREBOT_SLACK__SIGNING_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lorebot.slackSecretName" . }}
      key: signing-secret
      optional: true
- name: LOREBOT_SLACK__APP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "lorebot.slackSecretName" . }}
      key: app-token
      optional: true
{{- with .Values.sync }}
{{- if .url }}
- name: LOREBOT_SYNC__URL
  value: {{ .url | quote }}
- name: LOREBOT_SYNC__CHECK_INTERVAL_S
  value: {{ .checkIntervalS | quote }}
{{- with .endpointUrl }}
- name: LOREBOT_SYNC__ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .region }}
- name: LOREBOT_SYNC__REGION
  value: {{ . | quote }}
{{- end }}
{{- if .existingSecret }}
- name: LOREBOT_SYNC__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: LOREBOT_SYNC__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}
- name: LOREBOT_METRICS__ENABLED
  value: {{ .Values.metrics.enabled | quote }}
- name: LOREBOT_METRICS__WORKER_PORT
  value: {{ .Values.metrics.workerPort | quote }}
{{- end -}}

{{/* Prometheus scrape annotations of a pod serving /metrics on the given port. */}}
{{- define "lorebot.metricsAnnotations" -}}
{{- if and .root.Values.metrics.enabled .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "lorebot.envFrom" -}}
- configMapRef:
    name: {{ include "lorebot.fullname" . }}-config
{{- end -}}

{{- define "lorebot.dataVolume" -}}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "lorebot.fullname" .)) .Values.persistence.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every lorebot pod. */}}
{{- define "lorebot.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Annotations that roll the pods when their configuration changes. */}}
{{- define "lorebot.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/slack: {{ include (print .Template.BasePath "/secret-slack.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}
