#!/usr/bin/env bash
# controlplane.sh builds the real kube-apiserver and etcd that edgegate's
# end-to-end tests and demo run (see internal/controlplane), from the separate
# Go module in tools/controlplane, into a cache directory outside the repo:
#
#   ${EDGEGATE_CP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgegate/controlplane-v1.36.3}
#
# The build is skipped when both binaries exist and the stamp file matches the
# hash of tools/controlplane/{go.mod,go.sum} plus the build recipe below. The
# last line printed is always the directory, so callers can do
#   EDGEGATE_CP_DIR=$(hack/controlplane.sh | tail -n1)
set -euo pipefail

K8S_VERSION=v1.36.3
K8S_MAJOR=1
K8S_MINOR=36

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod="$root/tools/controlplane"
dir=${EDGEGATE_CP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgegate/controlplane-${K8S_VERSION}}

log() { echo "controlplane: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
	log "go not found on PATH (expected Go 1.26, e.g. /usr/local/go/bin)"
	exit 1
fi

vpkg=k8s.io/component-base/version
ldflags="-X ${vpkg}.gitVersion=${K8S_VERSION} -X ${vpkg}.gitMajor=${K8S_MAJOR} -X ${vpkg}.gitMinor=${K8S_MINOR} -X ${vpkg}.gitTreeState=clean"
recipe="ldflags=${ldflags}"

stamp_want=$(
	{
		cat "$mod/go.mod" "$mod/go.sum" "$mod/etcd/main.go"
		echo "$recipe"
	} | sha256sum | cut -d' ' -f1
)
stamp="$dir/.stamp"

if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -f "$stamp" && "$(cat "$stamp")" == "$stamp_want" ]]; then
	log "up to date: kube-apiserver ${K8S_VERSION} and etcd in $dir"
	echo "$dir"
	exit 0
fi

start=$(date +%s)
mkdir -p "$dir"
log "building kube-apiserver ${K8S_VERSION} and etcd from tools/controlplane into $dir"
log "this takes ~5-10 minutes on a cold cache (downloads k8s.io/kubernetes and compiles the API server)"

tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cd "$mod"
log "go mod download"
go mod download
log "go build k8s.io/kubernetes/cmd/kube-apiserver"
go build -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
log "go build ./etcd"
go build -o "$tmp/etcd" ./etcd

# Check the binaries before installing them.
got=$("$tmp/kube-apiserver" --version)
if [[ "$got" != "Kubernetes ${K8S_VERSION}" ]]; then
	log "unexpected kube-apiserver --version: $got"
	exit 1
fi
"$tmp/etcd" --version >/dev/null

mv -f "$tmp/kube-apiserver" "$dir/kube-apiserver"
mv -f "$tmp/etcd" "$dir/etcd"
echo "$stamp_want" >"$stamp"

log "built $got and etcd in $(($(date +%s) - start))s"
echo "$dir"
