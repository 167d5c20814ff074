#!/usr/bin/env bash
# The demo: a running control plane, and how to use it.
set -euo pipefail
STATE=${NSGUARD_CLUSTER_DIR:?}
export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:$PATH
echo "== the local control plane"
kubectl version
kubectl get namespaces
echo
echo "Use it:   export KUBECONFIG=$KUBECONFIG PATH=$STATE/bin:\$PATH"
echo "Stop it:  make cluster-down"
