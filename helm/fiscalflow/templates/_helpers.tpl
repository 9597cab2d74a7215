{{/* The pipeline's stages, in order. */}}
{{- define "fiscalflow.stages" -}}
ingest download validate store report
{{- end }}

{{/* Resource name prefix: the release name (so `kubectl scale deploy/<release>-validate`). */}}
{{- define "fiscalflow.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{- define "fiscalflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "fiscalflow.labels" -}}
helm.sh/chart: {{ include "fiscalflow.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fiscalflow
{{- end }}

{{/* Selector labels of one stage: call with (dict "root" $ "stage" "validate"). */}}
{{- define "fiscalflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .stage }}
{{- end }}

{{- define "fiscalflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fiscalflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "fiscalflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end }}

{{/* The topic a stage consumes: fiscal.<stage>, except report, which reads fiscal.stored. */}}
{{- define "fiscalflow.inputTopic" -}}
{{- if eq . "report" -}}fiscal.stored{{- else -}}fiscal.{{ . }}{{- end -}}
{{- end }}

{{/*
The lag a stage's KEDA triggers watch, one "<consumer group> <topic>" per line: the lanes and groups
of the topology value, TOPOLOGY in shared/topics.py (tests/deploy/test_helm.py compares the two).
A StageRunner stage reads its input in fiscalflow-<stage> and its priority lane in a group of its
own, fiscalflow-<stage>.priority; the report (a faust app) reads every topic in one group, its app
id fiscalflow-report.
Call with (dict "stage" "validate" "priority" true).
*/}}
{{- define "fiscalflow.lagTriggers" -}}
{{- $group := printf "fiscalflow-%s" .stage -}}
{{- $topic := include "fiscalflow.inputTopic" .stage -}}
{{ $group }} {{ $topic }}
{{- if .priority }}
{{ ternary $group (printf "%s.priority" $group) (eq .stage "report") }} {{ $topic }}.priority
{{- end -}}
{{- end }}

{{/*
Refuse values whose scaling could exceed a stage's partitions: a replica beyond the partition
count has nothing to consume and never becomes ready.
*/}}
{{- define "fiscalflow.checkStage" -}}
{{- $name := .stage -}}
{{- $s := .values -}}
{{- $partitions := int $s.partitions -}}
{{- if gt (int $s.replicas) $partitions -}}
{{- fail (printf "stages.%s.replicas (%d) exceeds stages.%s.partitions (%d): a stage's parallelism is its partition count" $name (int $s.replicas) $name $partitions) -}}
{{- end -}}
{{- if .keda -}}
{{- $k := $s.keda -}}
{{- if gt (int $k.maxReplicaCount) $partitions -}}
{{- fail (printf "stages.%s.keda.maxReplicaCount (%d) exceeds stages.%s.partitions (%d): replicas beyond the partitions stay idle" $name (int $k.maxReplicaCount) $name $partitions) -}}
{{- end -}}
{{- if gt (int $k.minReplicaCount) (int $k.maxReplicaCount) -}}
{{- fail (printf "stages.%s.keda.minReplicaCount (%d) exceeds maxReplicaCount (%d)" $name (int $k.minReplicaCount) (int $k.maxReplicaCount)) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Where the Secrets are mounted, and the settings that point at the files. */}}
{{- define "fiscalflow.secretsDir" -}}/var/run/secrets/fiscalflow{{- end }}

{{/*
What each pod uses besides Kafka and DNS (every one) and OTLP (every stage, when set), from the
services' code: the Secrets it mounts and the egress its NetworkPolicy allows both follow from it.
  postgres    host.postgres() (every stage)
  sftp        shared.sftp.pool.build_pools: ingest (pattern jobs, manifests), download
  s3          shared.s3.S3Store: download, validate (claim checks), store, report (rebuilds)
  clickhouse  the report's sink
  api         an HTTP API (host.api): ingest, report; both tokens
  callbacks   job callbacks: report (egress, and the callback secret)
tests/deploy/test_helm.py checks this against the code.
*/}}
{{- define "fiscalflow.uses" -}}
{{- $uses := dict
  "ingest" (list "postgres" "sftp" "s3" "api")
  "download" (list "postgres" "sftp" "s3")
  "validate" (list "postgres" "s3")
  "store" (list "postgres" "s3")
  "report" (list "postgres" "s3" "clickhouse" "api" "callbacks")
  "create-topics" (list) -}}
{{- if not (hasKey $uses .) -}}
{{- fail (printf "fiscalflow.uses: unknown pod %q" .) -}}
{{- end -}}
{{- index $uses . | join " " -}}
{{- end }}

{{- define "fiscalflow.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.security.protocol -}}true{{- end -}}
{{- end }}

{{- define "fiscalflow.kafkaTls" -}}
{{- if has .Values.kafka.security.protocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end }}

{{/*
The Secret files a pod mounts under fiscalflow.secretsDir, and the setting that points at each:
YAML {files: [{env, secret, key, path}]}.  Call with (dict "root" $ "pod" "<stage>|create-topics").
*/}}
{{- define "fiscalflow.secretFiles" -}}
{{- $v := .root.Values -}}
{{- $uses := include "fiscalflow.uses" .pod | splitList " " -}}
{{- $files := list -}}
{{- if has "postgres" $uses -}}
{{- $files = append $files (dict "env" "FISCALFLOW_PG_DSN_FILE" "secret" $v.postgres.existingSecret "key" $v.postgres.dsnKey "path" "pg/dsn") -}}
{{- end -}}
{{- if has "s3" $uses -}}
{{- $files = append $files (dict "env" "FISCALFLOW_S3_ACCESS_KEY_FILE" "secret" $v.s3.existingSecret "key" $v.s3.accessKeyKey "path" "s3/access-key") -}}
{{- $files = append $files (dict "env" "FISCALFLOW_S3_SECRET_KEY_FILE" "secret" $v.s3.existingSecret "key" $v.s3.secretKeyKey "path" "s3/secret-key") -}}
{{- end -}}
{{- if has "sftp" $uses -}}
{{- $files = append $files (dict "env" "FISCALFLOW_SFTP_KEY" "secret" $v.sftp.existingSecret "key" $v.sftp.keyKey "path" "sftp/client_key") -}}
{{- $files = append $files (dict "env" "FISCALFLOW_SFTP_KNOWN_HOSTS" "secret" $v.sftp.existingSecret "key" $v.sftp.knownHostsKey "path" "sftp/known_hosts") -}}
{{- end -}}
{{- if has "api" $uses -}}
{{- $files = append $files (dict "env" "FISCALFLOW_API_TOKEN_FILE" "secret" $v.api.existingSecret "key" $v.api.tokenKey "path" "api/token") -}}
{{- $files = append $files (dict "env" "FISCALFLOW_READ_TOKEN_FILE" "secret" $v.api.existingSecret "key" $v.api.readTokenKey "path" "api/read-token") -}}
{{- end -}}
{{- if and (has "callbacks" $uses) $v.callbacks.existingSecret -}}
{{- $files = append $files (dict "env" "FISCALFLOW_CALLBACK_SECRET_FILE" "secret" $v.callbacks.existingSecret "key" $v.callbacks.secretKey "path" "callbacks/secret") -}}
{{- end -}}
{{- if has "clickhouse" $uses -}}
{{- $files = append $files (dict "env" "FISCALFLOW_CLICKHOUSE_URL_FILE" "secret" $v.clickhouse.existingSecret "key" $v.clickhouse.urlKey "path" "clickhouse/url") -}}
{{- end -}}
{{- /* Kafka: every pod is a Kafka client. */ -}}
{{- $sec := $v.kafka.security -}}
{{- if include "fiscalflow.kafkaSasl" .root -}}
{{- $files = append $files (dict "env" "FISCALFLOW_KAFKA_SASL_PASSWORD_FILE" "secret" $sec.sasl.existingSecret "key" $sec.sasl.passwordKey "path" "kafka-sasl/password") -}}
{{- end -}}
{{- if and (include "fiscalflow.kafkaTls" .root) $sec.tls.existingSecret -}}
{{- $t := $sec.tls -}}
{{- if $t.caKey -}}
{{- $files = append $files (dict "env" "FISCALFLOW_KAFKA_SSL_CA_LOCATION" "secret" $t.existingSecret "key" $t.caKey "path" "kafka-tls/ca.crt") -}}
{{- end -}}
{{- if $t.certKey -}}
{{- $files = append $files (dict "env" "FISCALFLOW_KAFKA_SSL_CERTIFICATE_LOCATION" "secret" $t.existingSecret "key" $t.certKey "path" "kafka-tls/tls.crt") -}}
{{- $files = append $files (dict "env" "FISCALFLOW_KAFKA_SSL_KEY_LOCATION" "secret" $t.existingSecret "key" $t.keyKey "path" "kafka-tls/tls.key") -}}
{{- end -}}
{{- if $t.keyPasswordKey -}}
{{- $files = append $files (dict "env" "FISCALFLOW_KAFKA_SSL_KEY_PASSWORD_FILE" "secret" $t.existingSecret "key" $t.keyPasswordKey "path" "kafka-tls/key-password") -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "files" $files) -}}
{{- end }}

{{/*
A pod's Secret files: the env entries pointing at them (indent 12 in a container's env), and the
projected volume's sources, one per Secret (`secretSources`).  Call with (dict "root" $ "pod" ...).
*/}}
{{- define "fiscalflow.secretEnv" -}}
{{- $dir := include "fiscalflow.secretsDir" .root -}}
{{- range (include "fiscalflow.secretFiles" . | fromYaml).files }}
- name: {{ .env }}
  value: {{ printf "%s/%s" $dir .path | quote }}
{{- end }}
{{- end }}

{{- define "fiscalflow.secretSources" -}}
{{- $files := (include "fiscalflow.secretFiles" . | fromYaml).files -}}
{{- $secrets := list -}}
{{- range $files }}{{ $secrets = append $secrets .secret }}{{ end -}}
{{- range $name := uniq $secrets }}
- secret:
    name: {{ $name }}
    items:
      {{- range $files }}
      {{- if eq .secret $name }}
      - {key: {{ .key | quote }}, path: {{ .path }}}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{/* Non-secret Kafka security settings, as "NAME value" lines (the ConfigMap and the topics Job). */}}
{{- define "fiscalflow.kafkaSettings" -}}
{{- $sec := .Values.kafka.security -}}
FISCALFLOW_KAFKA_SECURITY_PROTOCOL: {{ $sec.protocol | quote }}
{{- if include "fiscalflow.kafkaSasl" . }}
FISCALFLOW_KAFKA_SASL_MECHANISM: {{ $sec.sasl.mechanism | quote }}
FISCALFLOW_KAFKA_SASL_USERNAME: {{ $sec.sasl.username | quote }}
{{- end }}
{{- if include "fiscalflow.kafkaTls" . }}
FISCALFLOW_KAFKA_SSL_CHECK_HOSTNAME: {{ $sec.tls.checkHostname | toString | quote }}
{{- end }}
{{- end }}

{{/*
Values the chart refuses: no API tokens, tokens sharing a key, Kafka security half configured.
*/}}
{{- define "fiscalflow.checkValues" -}}
{{- $v := .Values -}}
{{- $_ := required "api.existingSecret is required: name the Secret holding the admin token (key api.tokenKey) and the read token (key api.readTokenKey) of the ingest and report APIs, at least 24 characters each; the chart never generates them (kubectl create secret generic fiscalflow-api --from-literal=token=$(openssl rand -hex 32) --from-literal=read-token=$(openssl rand -hex 32))" $v.api.existingSecret -}}
{{- if eq $v.api.tokenKey $v.api.readTokenKey -}}
{{- fail (printf "api.tokenKey and api.readTokenKey are both %q: the admin and read tokens must be two different tokens" $v.api.tokenKey) -}}
{{- end -}}
{{- $sec := $v.kafka.security -}}
{{- if include "fiscalflow.kafkaSasl" . -}}
{{- if not (and $sec.sasl.username $sec.sasl.existingSecret) -}}
{{- fail (printf "kafka.security.protocol %s needs kafka.security.sasl.username and kafka.security.sasl.existingSecret (the Secret with the SASL password)" $sec.protocol) -}}
{{- end -}}
{{- else if $sec.sasl.existingSecret -}}
{{- fail (printf "kafka.security.sasl.existingSecret is set but kafka.security.protocol is %s: SASL needs SASL_PLAINTEXT or SASL_SSL" $sec.protocol) -}}
{{- end -}}
{{- if include "fiscalflow.kafkaTls" . -}}
{{- if and $sec.tls.existingSecret (ne (empty $sec.tls.certKey) (empty $sec.tls.keyKey)) -}}
{{- fail "kafka.security.tls.certKey and kafka.security.tls.keyKey go together: both (mutual TLS) or both empty" -}}
{{- end -}}
{{- if and $sec.tls.existingSecret $sec.tls.keyPasswordKey (empty $sec.tls.keyKey) -}}
{{- fail "kafka.security.tls.keyPasswordKey is set without a client key (kafka.security.tls.keyKey)" -}}
{{- end -}}
{{- else if $sec.tls.existingSecret -}}
{{- fail (printf "kafka.security.tls.existingSecret is set but kafka.security.protocol is %s: TLS needs SSL or SASL_SSL" $sec.protocol) -}}
{{- end -}}
{{- /* A secret setting given as a value would land in the ConfigMap or a Deployment's env. */ -}}
{{- $secretSettings := list "PG_DSN" "S3_ACCESS_KEY" "S3_SECRET_KEY" "API_TOKEN" "READ_TOKEN" "CALLBACK_SECRET" "KAFKA_SASL_PASSWORD" "KAFKA_SSL_KEY_PASSWORD" "CLICKHOUSE_URL" -}}
{{- $configs := dict "config" ($v.config | default dict) -}}
{{- range $stage, $s := $v.stages }}{{ $_ := set $configs (printf "stages.%s.config" $stage) ($s.config | default dict) }}{{ end -}}
{{- range $where, $config := $configs -}}
{{- range $name, $_ := $config -}}
{{- if has (upper $name | trimPrefix "FISCALFLOW_") $secretSettings -}}
{{- fail (printf "%s.%s is a secret: never a value (it would be readable in the ConfigMap or the Deployment); name the Secret that holds it (postgres, s3, api, callbacks, clickhouse, kafka.security existingSecret) and the chart mounts it as a file" $where $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The TCP port of a URL (its own, else 443 for https, 80 for http) or of a "host:port" address
(else .default).  Call with (dict "url" "https://x:9000/p") or (dict "address" "h:9092" "default" 9092).
*/}}
{{- define "fiscalflow.port" -}}
{{- if .url -}}
{{- $u := urlParse .url -}}
{{- $p := regexFind ":[0-9]+$" $u.host | trimPrefix ":" -}}
{{- $p | default (ternary "443" "80" (eq $u.scheme "https")) -}}
{{- else -}}
{{- regexFind ":[0-9]+$" (trim .address) | trimPrefix ":" | default (toString .default) -}}
{{- end -}}
{{- end }}

{{/*
The TCP ports an egress target allows: its `ports`, else those of the service's address in the
values.  Space-separated.  Call with (dict "root" $ "target" "kafka").
*/}}
{{- define "fiscalflow.egressPorts" -}}
{{- $v := .root.Values -}}
{{- $t := index $v.networkPolicy.egress .target -}}
{{- $ports := list -}}
{{- if $t.ports -}}
{{- range $t.ports }}{{ $ports = append $ports (toString .) }}{{ end -}}
{{- else if eq .target "kafka" -}}
{{- range splitList "," $v.kafka.bootstrapServers }}{{ $ports = append $ports (include "fiscalflow.port" (dict "address" . "default" 9092)) }}{{ end -}}
{{- else if eq .target "sftp" -}}
{{- range splitList "," $v.sftp.regions }}{{ $ports = append $ports (include "fiscalflow.port" (dict "address" . "default" 22)) }}{{ end -}}
{{- else if eq .target "s3" -}}
{{- $ports = append $ports (include "fiscalflow.port" (dict "url" $v.s3.endpoint)) -}}
{{- else if and (eq .target "otlp") $v.otlpEndpoint -}}
{{- $ports = append $ports (include "fiscalflow.port" (dict "url" $v.otlpEndpoint)) -}}
{{- else -}}
{{- fail (printf "networkPolicy.egress.%s.ports is empty: list the ports" .target) -}}
{{- end -}}
{{- uniq $ports | sortAlpha | join " " -}}
{{- end }}

{{/* One egress rule (indent: a list item of spec.egress).  Call with (dict "root" $ "target" "kafka"). */}}
{{- define "fiscalflow.egressRule" -}}
{{- $t := index .root.Values.networkPolicy.egress .target -}}
{{- $protocols := ternary (list "UDP" "TCP") (list "TCP") (eq .target "dns") }}
# {{ .target }}
- ports:
    {{- range $port := include "fiscalflow.egressPorts" . | splitList " " }}
    {{- range $protocols }}
    - {port: {{ $port }}, protocol: {{ . }}}
    {{- end }}
    {{- end }}
  {{- with $t.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
