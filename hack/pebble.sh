#!/usr/bin/env bash
# pebble.sh builds Let's Encrypt's Pebble ACME test server and
# pebble-challtestsrv (used only as Pebble's DNS server) that the tlsmgr tests
# run (see internal/pebble), from the separate Go module in tools/pebble, into
# a cache directory outside the repo:
#
#   ${EDGEGATE_PEBBLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgegate/pebble-v2.10.1}
#
# The build is skipped when both binaries exist and the stamp file matches the
# hash of tools/pebble/{go.mod,go.sum} plus the build recipe below. The last
# line printed is always the directory, so callers can do
#   EDGEGATE_PEBBLE_DIR=$(hack/pebble.sh | tail -n1)
set -euo pipefail

# Keep in step with tools/pebble/go.mod and internal/pebble.Version.
PEBBLE_VERSION=v2.10.1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod="$root/tools/pebble"
dir=${EDGEGATE_PEBBLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgegate/pebble-${PEBBLE_VERSION}}

log() { echo "pebble: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
	log "go not found on PATH (expected Go 1.26, e.g. /usr/local/go/bin)"
	exit 1
fi

if ! grep -q "github.com/letsencrypt/pebble/v2 ${PEBBLE_VERSION}\$" "$mod/go.mod"; then
	log "tools/pebble/go.mod does not require pebble ${PEBBLE_VERSION}: update PEBBLE_VERSION here and internal/pebble.Version"
	exit 1
fi

recipe="go build -trimpath ./cmd/pebble ./cmd/pebble-challtestsrv"

stamp_want=$(
	{
		cat "$mod/go.mod" "$mod/go.sum"
		echo "$recipe"
	} | sha256sum | cut -d' ' -f1
)
stamp="$dir/.stamp"

if [[ -x "$dir/pebble" && -x "$dir/pebble-challtestsrv" && -f "$stamp" && "$(cat "$stamp")" == "$stamp_want" ]]; then
	log "up to date: pebble ${PEBBLE_VERSION} and pebble-challtestsrv in $dir"
	echo "$dir"
	exit 0
fi

start=$(date +%s)
mkdir -p "$dir"
log "building pebble ${PEBBLE_VERSION} and pebble-challtestsrv from tools/pebble into $dir"
log "this takes ~30-60 seconds on a cold cache"

tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cd "$mod"
log "go mod download"
go mod download
log "go build github.com/letsencrypt/pebble/v2/cmd/pebble"
go build -trimpath -o "$tmp/pebble" github.com/letsencrypt/pebble/v2/cmd/pebble
log "go build github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"
go build -trimpath -o "$tmp/pebble-challtestsrv" github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv

# Check the binaries before installing them.
got=$("$tmp/pebble" -version 2>&1 || true)
log "pebble -version: $got"
go version -m "$tmp/pebble" | grep -q "github.com/letsencrypt/pebble/v2[[:space:]]*${PEBBLE_VERSION}" || {
	log "built pebble is not ${PEBBLE_VERSION}"
	exit 1
}
go version "$tmp/pebble-challtestsrv" >/dev/null

mv -f "$tmp/pebble" "$dir/pebble"
mv -f "$tmp/pebble-challtestsrv" "$dir/pebble-challtestsrv"
echo "$stamp_want" >"$stamp"

log "built pebble ${PEBBLE_VERSION} and pebble-challtestsrv in $(($(date +%s) - start))s"
echo "$dir"
