#!/usr/bin/env bash
# Whole-system load benchmark: edgegate vs nginx vs haproxy vs direct, through
# the same two pods in a network namespace, with a real etcd + kube-apiserver.
# Needs root (the pod network namespace). Installs wrk, nginx and haproxy with
# apt-get when missing, builds the control plane if it is not cached, then
# builds and runs bench/load, which prints a table and writes
# bench/results/latest.md. Ctrl-C or SIGTERM stops everything it started.
#
#   bash bench/run.sh            # 3 rounds of 10 s per target and profile, ~7 minutes
#   QUICK=1 bash bench/run.sh    # 1 round of 5 s, ~1.5 minutes
#   bash bench/run.sh -targets nginx,edgegate -b bin/edgegate -b-event-loops -1  # loops vs goroutines
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "bench: $* ($((SECONDS - start))s so far)"; }

if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root: the pods live in a network namespace joined to the host by a veth pair" >&2
	exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in wrk nginx haproxy; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	step "apt-get install ${missing[*]}"
	t=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	# policy-rc.d keeps the packages from starting their system services.
	own_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		own_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
	if [ $own_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
	echo "bench: installed ${missing[*]} in $((SECONDS - t))s"
else
	step "wrk, nginx and haproxy already installed"
fi

step "control plane binaries (cached after the first build, which takes 5-10 minutes)"
bash hack/controlplane.sh

step "go build ./bench/load"
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
go build -o "$bindir/load" ./bench/load

args=()
[ "${QUICK:-}" = 1 ] && args+=(-quick)
args+=("$@")
step "bench/load ${args[*]}"
# In the background so that a SIGINT or SIGTERM to this script reaches the
# driver, which then stops everything it started.
"$bindir/load" "${args[@]}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
set +e
while :; do
	wait "$child"
	rc=$?
	kill -0 "$child" 2>/dev/null || break
done
set -e
step "done (exit $rc)"
exit "$rc"
