#!/usr/bin/env bash
# deploy/image/topology.sh IMAGE: the chart's topology from the image, for
# real: xds, authz, runner (and ratelimit when the image has `kailash
# ratelimit`) and `kailash envoy`, each its own container (podman run with
# runc, read-only root, uid 65532) on one bridge network, each with its own
# deploy/compose/<name>.yaml (listening on 0.0.0.0, the others by name:
# --add-host stands in for cluster DNS; Envoy resolves xds by name,
# STRICT_DNS). Without Redis/PostgreSQL images here: memory counters and
# sessions, SQLite for the runner. Checked: Envoy's /readyz on --http-addr,
# 401 without a token and 2xx with one through Envoy -> authz -> runner,
# and every container exits 0 on SIGTERM. Called by deploy/image/test.sh.
set -euo pipefail
image=$1
cd "$(dirname "$0")/../.."
fail() { echo "topology test: FAIL: $*" >&2; exit 1; }
conf=$(mktemp -d)
net=kailash-topo-$$
subnet=10.213.$(( $$ % 200 + 20 )).0/24
pre=${subnet%.0/24}
printf '[containers]\ndefault_ulimits = []\n' > "$conf/containers.conf"
export CONTAINERS_CONF=$conf/containers.conf
names=(xds authz runner envoy)
if podman run --rm --runtime "$(command -v runc)" --cgroup-manager=cgroupfs --network none "$image" ratelimit -h >/dev/null 2>&1; then
  names=(xds authz ratelimit runner envoy)
fi
declare -A ip=([xds]=$pre.10 [authz]=$pre.11 [ratelimit]=$pre.12 [runner]=$pre.13 [envoy]=$pre.14)
cleanup() {
  for n in "${names[@]}"; do podman rm -f -v "$net-$n" >/dev/null 2>&1 || true; done
  podman network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$conf"
}
trap cleanup EXIT
podman network create --subnet "$subnet" "$net" >/dev/null
hosts=()
for n in "${!ip[@]}"; do hosts+=(--add-host "$n:${ip[$n]}"); done

mkdir -p "$conf/etc"
cp -r examples/keys examples/workflows "$conf/etc/"
for n in "${names[@]}"; do
  python3 - deploy/compose/$n.yaml "$conf/etc/$n.yaml" "${names[*]}" <<'PY'
import re, sys
src, dst, names = sys.argv[1], sys.argv[2], sys.argv[3].split()
s = open(src).read()
s = re.sub(r"\n  backend: redis\n  redis: \{[^}]*\}", "", s)          # ratelimit: memory
s = re.sub(r"\n  redis: \{[^}]*\}", "", s)                           # sessions: memory
s = re.sub(r"  postgres_dsn: .*", "  data_dir: /var/lib/kailash", s)  # runner: SQLite
if "ratelimit" not in names:
    s = re.sub(r"\nratelimit:\n(  .*\n)+", "\n", s)
assert "redis" not in s and "postgres" not in s, s
open(dst, "w").write(s)
PY
done
chown -R 65532:65532 "$conf/etc"
# An image older than envoy.xds_addresses renders the xDS cluster STATIC,
# which takes IP addresses only: give its Envoy the xds address by IP.
if ! podman run --rm --runtime "$(command -v runc)" --cgroup-manager=cgroupfs --network none -v "$conf/etc:/etc/kailash:ro" "$image" \
    bootstrap -c /etc/kailash/envoy.yaml | grep -q 'type: STRICT_DNS'; then
  sed -i "s/^  grpc: xds:18000/  grpc: ${ip[xds]}:18000/" "$conf/etc/envoy.yaml"
  echo "topology test: this image's bootstrap takes the control plane by IP only (STATIC): Envoy given xds at ${ip[xds]}"
fi

for n in "${names[@]}"; do
  args=("$n" -c "/etc/kailash/$n.yaml")
  [ "$n" = envoy ] && args+=(--http-addr 0.0.0.0:9902)
  podman run -d --name "$net-$n" --runtime "$(command -v runc)" --cgroup-manager=cgroupfs \
    --network "$net" --ip "${ip[$n]}" "${hosts[@]}" --read-only -v "$conf/etc:/etc/kailash:ro" \
    "$image" "${args[@]}" >/dev/null
done
ready=""
for _ in $(seq 1 300); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://${ip[envoy]}:9902/readyz")" = 200 ]; then ready=1; break; fi
  for n in "${names[@]}"; do
    [ "$(podman inspect "$net-$n" --format '{{.State.Running}}')" = true ] || { podman logs "$net-$n" 2>&1 | tail -20 >&2; fail "$n exited"; }
  done
  sleep 0.2
done
[ -n "$ready" ] || { podman logs "$net-envoy" 2>&1 | tail -20 >&2; fail "envoy /readyz not 200 within 60s"; }
url=http://${ip[envoy]}:8080/v1/workflows/hello/executions
code=000
for _ in $(seq 1 100); do   # the first routes may still be arriving
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: acme.localhost' -H 'Content-Type: application/json' -d '{"order": 42}' "$url")
  [ "$code" = 401 ] && break
  sleep 0.1
done
[ "$code" = 401 ] || fail "without a token: HTTP $code, want 401"
tok=$(podman run --rm --runtime "$(command -v runc)" --cgroup-manager=cgroupfs --network none -v "$conf/etc:/etc/kailash:ro" "$image" \
  token -c /etc/kailash/authz.yaml --key /etc/kailash/keys/dev-signing-key.pem --tenant acme --sub alice --roles admin)
code=$(curl -s -o "$conf/body" -w '%{http_code}' -H 'Host: acme.localhost' -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d '{"order": 42}' "$url")
case "$code" in 2??) ;; *) fail "with a token: HTTP $code, want 2xx: $(head -c 300 "$conf/body")" ;; esac
echo "topology test: ${names[*]} as separate containers: Envoy ready, 401 without a token, $code with one"
for n in envoy "${names[@]}"; do
  [ "$(podman inspect "$net-$n" --format '{{.State.Running}}')" = true ] || continue
  podman stop -t 30 "$net-$n" >/dev/null
  rc=$(podman inspect "$net-$n" --format '{{.State.ExitCode}}')
  [ "$rc" = 0 ] || { podman logs "$net-$n" 2>&1 | tail -20 >&2; fail "$n exited $rc on SIGTERM"; }
done
echo "topology test: ok (each exited 0 on SIGTERM)"
