{{/*
kailash.components: the processes, as YAML: name -> ports (name: number),
the probe ports, and whether an HPA may scale it.
*/}}
{{- define "kailash.components" -}}
{{- $p := .Values.ports -}}
envoy:
  ports:
    http: {{ int $p.envoyHTTP }}
    {{- if .Values.https.enabled }}
    https: {{ int $p.envoyHTTPS }}
    {{- end }}
    health: {{ int $p.envoyHealth }}
  probePort: health
  autoscale: true
xds:
  ports:
    grpc: {{ int $p.xdsGRPC }}
    http: {{ int $p.xdsHTTP }}
  probePort: http
  grpcPort: {{ int $p.xdsGRPC }}
  autoscale: false
authz:
  ports:
    grpc: {{ int $p.authzGRPC }}
    http: {{ int $p.authzHTTP }}
  probePort: http
  grpcPort: {{ int $p.authzGRPC }}
  autoscale: true
{{- if .Values.ratelimit.enabled }}
ratelimit:
  ports:
    grpc: {{ int $p.ratelimitGRPC }}
    http: {{ int $p.ratelimitHTTP }}
  probePort: http
  grpcPort: {{ int $p.ratelimitGRPC }}
  autoscale: true
{{- end }}
runner:
  ports:
    http: {{ int $p.runnerHTTP }}
  probePort: http
  autoscale: true
{{- end -}}
