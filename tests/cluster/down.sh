#!/usr/bin/env bash
# Stops exactly the processes up.sh started (each pid is checked against the binary it ran, so a
# reused pid is never signalled) and removes the etcd data on tmpfs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${NSGUARD_CLUSTER_DIR:-$(cd "$here/../.." && pwd)/target/cluster}
if [ ! -f "$STATE/pids" ]; then
  echo "cluster-down: no control plane started from $STATE"
  exit 0
fi
ours() { [ "$(readlink -f "/proc/$1/exe" 2>/dev/null)" = "$(readlink -f "$2")" ]; }
# Stop in reverse start order: controller-manager, API server, then etcd.
tac "$STATE/pids" | while read -r name pid binary; do
  if ours "$pid" "$binary"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do ours "$pid" "$binary" || break; sleep 0.1; done
    if ours "$pid" "$binary"; then kill -KILL "$pid" 2>/dev/null || true; fi
    echo "cluster-down: stopped $name (pid $pid)"
  fi
done
if [ -f "$STATE/etcd-data-dir" ]; then
  rm -rf "$(cat "$STATE/etcd-data-dir")"
  rm -f "$STATE/etcd-data-dir"
fi
rm -f "$STATE/pids"
