{{- define "kailash.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kailash.labels" -}}
app.kubernetes.io/name: kailash
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "c" "xds") */}}
{{- define "kailash.selector" -}}
app.kubernetes.io/name: kailash
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .c }}
{{- end -}}

{{- define "kailash.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kailash.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* the DNS name of a component's Service: (dict "root" $ "c" "authz") */}}
{{- define "kailash.host" -}}
{{- printf "%s-%s.%s.svc.%s" (include "kailash.fullname" .root) .c .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/*
kailash.config: the kailash.yaml of one component, (dict "root" $ "c" NAME):
the user's config with every address set by the chart. A process listens
on 0.0.0.0 at its own addresses and reaches the others by Service name
(kailash uses one field for both: xds.grpc is where xds listens and where
Envoy dials it), so each component has its own file.
*/}}
{{- define "kailash.config" -}}
{{- $r := .root -}}
{{- $v := $r.Values -}}
{{- $p := $v.ports -}}
{{- $own := .c -}}
{{- $h := dict -}}
{{- range $c := list "xds" "authz" "ratelimit" "runner" -}}
{{- if eq $c $own -}}
{{- $_ := set $h $c "0.0.0.0" -}}
{{- else -}}
{{- $_ := set $h $c (include "kailash.host" (dict "root" $r "c" $c)) -}}
{{- end -}}
{{- end -}}
{{- $cfg := deepCopy $v.config -}}
{{- $runner := dict "http" (printf "%s:%d" $h.runner (int $p.runnerHTTP))
      "identity_jwks" (printf "http://%s:%d/auth/.well-known/jwks.json" (include "kailash.host" (dict "root" $r "c" "authz")) (int $p.authzHTTP))
      "identity_audience" (dig "runner" "identity_audience" "kailash-runner" $cfg) -}}
{{- if $v.postgres.host -}}
{{- $_ := set $runner "postgres_dsn" (printf "host=%s port=%d dbname=%s user=%s sslmode=%s" $v.postgres.host (int $v.postgres.port) $v.postgres.database $v.postgres.user $v.postgres.sslmode) -}}
{{- else -}}
{{- $_ := set $runner "data_dir" "/var/lib/kailash" -}}
{{- end -}}
{{- if and $v.runner.workflowsConfigMap (eq $own "runner") -}}
{{- $_ := set $runner "workflows" "/etc/kailash/workflows" -}}
{{- else -}}
{{- $_ := set $runner "workflows" "" -}}
{{- end -}}
{{- $addrs := dict
      "envoy" (dict "listen" (printf "0.0.0.0:%d" (int $p.envoyHTTP)) "admin" "127.0.0.1:9901")
      "xds" (dict "grpc" (printf "%s:%d" $h.xds (int $p.xdsGRPC)) "http" (printf "%s:%d" $h.xds (int $p.xdsHTTP)))
      "authz" (dict "grpc" (printf "%s:%d" $h.authz (int $p.authzGRPC)) "http" (printf "%s:%d" $h.authz (int $p.authzHTTP)))
      "runner" $runner -}}
{{- if $v.ratelimit.enabled -}}
{{- $rl := dict "grpc" (printf "%s:%d" $h.ratelimit (int $p.ratelimitGRPC)) "http" (printf "%s:%d" $h.ratelimit (int $p.ratelimitHTTP)) -}}
{{- if $v.redis.addr -}}
{{- $_ := set $rl "backend" "redis" -}}
{{- $_ := set $rl "redis" (include "kailash.redis" $r | fromYaml) -}}
{{- end -}}
{{- $_ := set $addrs "ratelimit" $rl -}}
{{- end -}}
{{- if $v.redis.addr -}}
{{- $_ := set $addrs "sessions" (dict "redis" (include "kailash.redis" $r | fromYaml)) -}}
{{- end -}}
{{- if $v.https.enabled -}}
{{- $_ := set $addrs "tls" (dict "listen" (printf "0.0.0.0:%d" (int $p.envoyHTTPS))) -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg $addrs) -}}
{{- end -}}

{{- define "kailash.redis" -}}
addr: {{ .Values.redis.addr | quote }}
db: {{ int .Values.redis.db }}
{{- if .Values.redis.existingSecret }}
password_env: KAILASH_REDIS_PASSWORD
{{- end }}
{{- end -}}
