#!/usr/bin/env bash
# Exit 0 when the control plane started by up.sh is running and its API server is ready.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${NSGUARD_CLUSTER_DIR:-$(cd "$here/../.." && pwd)/target/cluster}
[ -s "$STATE/pids" ] || { echo "no control plane started from $STATE"; exit 1; }
while read -r name pid binary; do
  if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" != "$(readlink -f "$binary")" ]; then
    echo "$name (pid $pid) is not running"; exit 1
  fi
done <"$STATE/pids"
"$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz >/dev/null
echo "control plane running; KUBECONFIG=$STATE/kubeconfig"
