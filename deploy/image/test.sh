#!/usr/bin/env bash
# deploy/image/test.sh IMAGE VERSION: test the built image's contents without
# a container runtime (podman run cannot start containers on the CI machine:
# crun's setrlimit, then "cgroups in hybrid mode not supported").
#
# 1. With runc installed, the container runs for real (podman run with runc,
# the cgroupfs manager and no default ulimits: crun cannot run it here):
# `kailash up` from the image on a read-only root, as its uid 65532,
# serves through its Envoy and exits 0 on SIGTERM.
# 2. Always: the image's root filesystem is mounted read-only (`podman image mount`),
# and its own binaries run under chroot as uid 65532, in a private mount
# namespace holding what a runtime would provide: /proc, /dev, a tmpfs /tmp
# and /var/lib/kailash, and the config at /etc/kailash. Checked:
#   - the image config: user 65532:65532, entrypoint kailash, nothing setuid;
#   - `kailash version` is VERSION and `envoy --version` is 1.40.0;
#   - with runc: deploy/image/topology.sh, xds, authz, (ratelimit,) runner
#     and `kailash envoy` as separate containers, served through Envoy;
#   - `kailash up` from the image serves through the image's Envoy on a
#     read-only root: 401 without a token, 2xx with one the image's
#     `kailash token` minted; SIGTERM drains and exits 0.
# Needs root (mounts, chroot).
set -euo pipefail
image=$1 version=$2
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "image test: needs root (podman image mount, chroot)" >&2; exit 1; }
fail() { echo "image test: FAIL: $*" >&2; exit 1; }

cfg=$(podman image inspect "$image" --format '{{.Config.User}}|{{json .Config.Entrypoint}}')
[ "$cfg" = '65532:65532|["/usr/local/bin/kailash"]' ] || fail "image config: $cfg, want user 65532:65532 and entrypoint /usr/local/bin/kailash"

# example_config DIR: the example stack in DIR, on ports 20000 above the
# example's (not in use here), readable by uid 65532.
example_config() {
  cp -r examples "$1"
  python3 - "$1/kailash.yaml" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: "127.0.0.1:%d" % (int(m.group(1)) + 20000), s)
open(p, "w").write(s)
PY
  chown -R 65532:65532 "$1"
}
url=http://127.0.0.1:28080/v1/workflows/hello/executions
# serves TOKEN: 401 without a token, 2xx with TOKEN, through Envoy on 28080.
serves() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: acme.localhost' -H 'Content-Type: application/json' -d '{"order": 42}' "$url")
  [ "$code" = 401 ] || fail "without a token: HTTP $code, want 401"
  code=$(curl -s -o "$2" -w '%{http_code}' -H 'Host: acme.localhost' -H "Authorization: Bearer $1" -H 'Content-Type: application/json' -d '{"order": 42}' "$url")
  case "$code" in 2??) ;; *) fail "with a token: HTTP $code, want 2xx: $(head -c 300 "$2")" ;; esac
  echo "image test: through the image's Envoy: 401 without a token, $code with one ($(head -c 100 "$2"))"
}

if [ -z "${KAILASH_IMAGE_TEST_INNER:-}" ]; then
  # 1. The container for real, when podman can run one. On the CI machine
  #    crun cannot (setrlimit; "cgroups in hybrid mode not supported"); runc
  #    with the cgroupfs manager and no default ulimits can. Root filesystem
  #    read-only, the image's own user, host network.
  if command -v runc >/dev/null 2>&1; then
    conf=$(mktemp -d)
    printf '[containers]\ndefault_ulimits = []\n' > "$conf/containers.conf"
    prun() { CONTAINERS_CONF=$conf/containers.conf podman run --runtime "$(command -v runc)" --cgroup-manager=cgroupfs --network host --read-only -v "$conf/etc:/etc/kailash" "$@"; }
    example_config "$conf/etc"
    got=$(prun --rm "$image" version)
    [ "$got" = "kailash $version (envoy 1.40.0)" ] || fail "podman run: kailash version: $got"
    cid=$(prun -d "$image")
    trap 'podman rm -f -v "$cid" >/dev/null 2>&1; rm -rf "$conf"' EXIT
    # A deadline in seconds, not a count of polls: each poll is two podman
    # calls, slow on a busy machine. grep reads all the logs (grep -q would
    # stop early, podman would get SIGPIPE and pipefail turn a match into
    # a miss).
    deadline=$((SECONDS + 120))
    while [ "$SECONDS" -lt "$deadline" ]; do
      podman logs "$cid" 2>/dev/null | grep 'Kailash Gateway is up' >/dev/null && break
      [ "$(podman inspect "$cid" --format '{{.State.Running}}')" = true ] || { podman logs "$cid" | tail -20 >&2; fail "podman run: kailash up exited"; }
      sleep 0.2
    done
    podman logs "$cid" 2>/dev/null | grep 'Kailash Gateway is up' >/dev/null || { podman logs "$cid" 2>&1 | tail -30 >&2; fail "podman run: kailash up not up within 120s"; }
    tok=$(prun --rm "$image" token -c /etc/kailash/kailash.yaml --key /etc/kailash/keys/dev-signing-key.pem --tenant acme --sub alice --roles admin)
    serves "$tok" "$conf/body"
    podman stop -t 30 "$cid" >/dev/null
    rc=$(podman inspect "$cid" --format '{{.State.ExitCode}}')
    [ "$rc" = 0 ] || { podman logs "$cid" | tail -20 >&2; fail "podman run: kailash up exited $rc after SIGTERM"; }
    echo "image test: podman run (runc, read-only root, uid $(podman inspect "$cid" --format '{{.Config.User}}')): ok, SIGTERM drained, exit 0"
    podman rm -v "$cid" >/dev/null; rm -rf "$conf"; trap - EXIT
    # The chart's topology: each process its own container.
    "$(dirname "$0")/topology.sh" "$image"
  else
    echo "image test: no runc: the container is not run, only its contents (below)"
  fi
  # 2. Its contents under chroot. The mounts below vanish with this private
  #    mount namespace.
  exec unshare --mount --propagation private env KAILASH_IMAGE_TEST_INNER=1 "$0" "$@"
fi
root=$(podman image mount "$image")
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  podman image umount "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
grep -q ' ro[, ]' <(findmnt -no OPTIONS "$root" | sed 's/^/ /; s/$/ /') || fail "$root is not mounted read-only"
[ -z "$(find "$root" -xdev -perm /6000 -type f)" ] || fail "setuid/setgid files: $(find "$root" -xdev -perm /6000 -type f)"
grep -q '^nonroot:x:65532:65532:' "$root/etc/passwd" || fail "/etc/passwd has no uid 65532"

as_user() { chroot --userspec=65532:65532 "$root" "$@"; }
got=$(as_user /usr/local/bin/kailash version)
[ "$got" = "kailash $version (envoy 1.40.0)" ] || fail "kailash version: $got, want kailash $version (envoy 1.40.0)"
ev=$(as_user /usr/local/bin/envoy --version)
case "$ev" in *"/1.40.0/Clean/RELEASE/"*) ;; *) fail "envoy --version: $ev" ;; esac
echo "image test: $got; envoy${ev##*version:}"

example_config "$work/etc"
mkdir -p "$work/data"; chown 65532:65532 "$work/data"
mount --bind "$work/etc" "$root/etc/kailash"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount --bind "$work/data" "$root/var/lib/kailash"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
if as_user /usr/local/bin/kailash version >/dev/null && touch "$root/usr/local/bin/x" 2>/dev/null; then
  fail "the image's root filesystem is writable"
fi

as_user /usr/local/bin/kailash validate -c /etc/kailash/kailash.yaml >/dev/null || fail "kailash validate of the example config"
( cd / && exec chroot --userspec=65532:65532 "$root" /usr/local/bin/kailash up -c /etc/kailash/kailash.yaml ) >"$work/up.out" 2>"$work/up.err" &
pid=$!
for _ in $(seq 1 600); do
  grep -q 'Kailash Gateway is up' "$work/up.out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/up.err" >&2; fail "kailash up exited"; }
  sleep 0.1
done
grep -q 'Kailash Gateway is up' "$work/up.out" || { tail -20 "$work/up.err" >&2; fail "kailash up not up within 60s"; }
tok=$(as_user /usr/local/bin/kailash token -c /etc/kailash/kailash.yaml --key /etc/kailash/keys/dev-signing-key.pem --tenant acme --sub alice --roles admin)
serves "$tok" "$work/body"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=""
[ "$rc" = 0 ] || { tail -20 "$work/up.err" >&2; fail "kailash up exited $rc after SIGTERM"; }
echo "image test: ok (SIGTERM: drained, exit 0)"
