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
