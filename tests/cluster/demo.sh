#!/usr/bin/env bash
# The demo: nsguard on the local control plane, with the permissions config/rbac grants it,
# hardening a namespace, then healing drift made by hand.
set -euo pipefail

STATE=${NSGUARD_CLUSTER_DIR:?}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:$PATH
NS=shop
nsguard_pid=""

bold=$(tput bold 2>/dev/null || true)
plain=$(tput sgr0 2>/dev/null || true)
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
show() { printf '%s$ %s%s\n' "$bold" "$*" "$plain"; "$@"; }
stop_nsguard() { if [ -n "$nsguard_pid" ]; then kill "$nsguard_pid" 2>/dev/null || true; wait "$nsguard_pid" 2>/dev/null || true; fi; }
trap stop_nsguard EXIT

step "Install nsguard: CRD, least-privilege RBAC, its namespace (kubectl apply -k config/default)"
kubectl apply -k "$repo/config/default" | sed 's/^/  /'
kubectl wait --for=condition=Established --timeout=60s crd/hardeningprofiles.nsguard.io >/dev/null
# The Deployment needs a container runtime, which this API-server-only control plane lacks; run
# the same binary here with the ServiceAccount's own token instead.
kubectl -n nsguard-system scale deployment nsguard --replicas=0 >/dev/null

step "Run nsguard as ServiceAccount nsguard-system/nsguard (its RBAC, not admin)"
token=$(kubectl -n nsguard-system create token nsguard --duration=1h)
server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat >"$STATE/nsguard.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: nsguard, user: {token: "$token"}}]
contexts: [{name: nsguard, context: {cluster: local, user: nsguard}}]
current-context: nsguard
EOF
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$repo/target/debug/nsguard" run --kubeconfig "$STATE/nsguard.kubeconfig" --metrics-address "127.0.0.1:$port" \
  --namespace nsguard-system --identity demo >"$STATE/logs/nsguard.log" 2>&1 &
nsguard_pid=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$port/readyz" | sed 's/^/  readyz: /'
echo "  logs: $STATE/logs/nsguard.log   metrics: http://127.0.0.1:$port/metrics"

step "A platform team commits a profile (config/samples/production-restricted.yaml)"
kubectl apply -f "$repo/config/samples/production-restricted.yaml" | sed 's/^/  /'

step "A team creates a production namespace"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
show kubectl create namespace "$NS"
show kubectl label namespace "$NS" env=prod team=checkout
kubectl wait --for=jsonpath='{.metadata.annotations.nsguard\.io/profile}'=production-restricted "namespace/$NS" --timeout=30s >/dev/null
kubectl -n "$NS" wait --for=jsonpath='{.automountServiceAccountToken}'=false serviceaccount/default --timeout=30s >/dev/null

step "Hardened within moments"
show kubectl get namespace "$NS" -o go-template='{{range $k, $v := .metadata.labels}}{{$k}}={{$v}}{{"\n"}}{{end}}annotation nsguard.io/profile={{index .metadata.annotations "nsguard.io/profile"}}{{"\n"}}'
show kubectl -n "$NS" get networkpolicies
show kubectl -n "$NS" get networkpolicy nsguard-allow-dns -o jsonpath='{.spec.egress}'; echo
show kubectl -n "$NS" get serviceaccount default -o jsonpath='automountServiceAccountToken={.automountServiceAccountToken}'; echo

step "Someone weakens it by hand"
show kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=privileged --overwrite
show kubectl -n "$NS" delete networkpolicy nsguard-default-deny
show kubectl -n "$NS" patch serviceaccount default -p '{"automountServiceAccountToken": true}'

step "... and nsguard heals it at once (watch-driven, no timer)"
kubectl wait --for=jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}'=restricted "namespace/$NS" --timeout=30s | sed 's/^/  /'
kubectl -n "$NS" wait --for=create networkpolicy/nsguard-default-deny --timeout=30s | sed 's/^/  /'
kubectl -n "$NS" wait --for=jsonpath='{.automountServiceAccountToken}'=false serviceaccount/default --timeout=30s | sed 's/^/  /'

step "What the namespace's owners see, with nothing but a RoleBinding in $NS"
sleep 1 # let the status aggregate settle
show kubectl get namespace "$NS" -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
show kubectl events -n "$NS"
show kubectl get reports -n "$NS"
show "$repo/target/debug/nsguard" status -n "$NS" --kubeconfig "$KUBECONFIG"

step "What the platform team and on-call see"
show kubectl get hardeningprofiles
show kubectl get hp production-restricted -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
printf '\n%s$ curl -s .../metrics | grep drift_corrected%s\n' "$bold" "$plain"
curl -fsS "http://127.0.0.1:$port/metrics" | grep '^nsguard_drift_corrected' || true

step "Done"
echo "  nsguard stops with this demo; the control plane keeps running:"
echo "    export KUBECONFIG=$KUBECONFIG PATH=$STATE/bin:\$PATH"
echo "    make cluster-down   # when you are finished"
