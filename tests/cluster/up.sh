#!/usr/bin/env bash
# Starts a real, local Kubernetes control plane: etcd (loopback, data on tmpfs), kube-apiserver (TLS on
# loopback, x509 client-certificate users, RBAC, the default admission plugins) and
# kube-controller-manager (the controllers a namespace-level operator relies on), on free ports.
#
# Writes the admin kubeconfig to $STATE/kubeconfig and links the matching kubectl into $STATE/bin/.
# A second call reuses a healthy running control plane; `down.sh` stops exactly what this started.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
STATE=${NSGUARD_CLUSTER_DIR:-$repo/target/cluster}
READY_TIMEOUT=${NSGUARD_CLUSTER_TIMEOUT:-180}

log() { echo "cluster-up: $*" >&2; }

# --- reuse ----------------------------------------------------------------------------------------
if [ -f "$STATE/pids" ]; then
  if "$here/status.sh" >/dev/null 2>&1; then
    log "a control plane is already running from $STATE (reusing it); 'make cluster-down' stops it"
    exit 0
  fi
  log "found a stale control plane in $STATE; stopping what is left of it"
  "$here/down.sh" >&2
fi

bin=$("$here/build.sh" | tail -n 1)
mkdir -p "$STATE"/{certs,logs,bin}
: >"$STATE/pids"
ln -sf "$bin/kubectl" "$STATE/bin/kubectl"
for b in etcd kube-apiserver kube-controller-manager; do ln -sf "$bin/$b" "$STATE/bin/$b"; done

# On failure, report the tail of every component's log and stop what was started.
started_ok=false
cleanup_on_failure() {
  if [ "$started_ok" != true ]; then
    for f in "$STATE"/logs/{etcd,kube-apiserver,kube-controller-manager}.log; do
      [ -f "$f" ] || continue
      echo "----- last lines of $(basename "$f") -----" >&2
      tail -n 25 "$f" >&2
    done
    "$here/down.sh" >&2 || true
  fi
}
trap cleanup_on_failure EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# --- certificates ---------------------------------------------------------------------------------
certs=$STATE/certs
openssl_quiet() { openssl "$@" >/dev/null 2>&1; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=nsguard-test-ca" \
  -keyout "$certs/ca.key" -out "$certs/ca.crt"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$certs/apiserver.key" -out "$certs/apiserver.csr"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$certs/apiserver.ext"
openssl_quiet x509 -req -in "$certs/apiserver.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 365 -extfile "$certs/apiserver.ext" -out "$certs/apiserver.crt"
# The admin user: x509 client certificate, CN = user name, O = group.
openssl_quiet req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=nsguard-admin" \
  -keyout "$certs/admin.key" -out "$certs/admin.csr"
printf 'extendedKeyUsage=clientAuth\n' >"$certs/client.ext"
openssl_quiet x509 -req -in "$certs/admin.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 365 -extfile "$certs/client.ext" -out "$certs/admin.crt"
openssl_quiet genrsa -out "$certs/sa.key" 2048
openssl_quiet rsa -in "$certs/sa.key" -pubout -out "$certs/sa.pub"

# --- etcd -----------------------------------------------------------------------------------------
etcd_client=$(free_port)
etcd_peer=$(free_port)
api_port=$(free_port)
etcd_data=/dev/shm/nsguard-etcd-$(echo "$STATE" | sha256sum | cut -c1-12)
rm -rf "$etcd_data"
# A fresh cluster, a fresh audit log: entries of an earlier cluster are of no use, and appending
# run after run reached --audit-log-maxsize mid-run (the rotation broke the benchmark's counts).
rm -f "$STATE"/logs/audit*.log
echo "$etcd_data" >"$STATE/etcd-data-dir"

start() { # start NAME BINARY ARGS...
  local name=$1 binary=$2; shift 2
  setsid "$binary" "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo "$name $! $binary" >>"$STATE/pids"
}
alive() { # alive NAME: the component NAME is still running
  local pid
  pid=$(awk -v n="$1" '$1==n {print $2}' "$STATE/pids")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
wait_for() { # wait_for WHAT COMPONENT COMMAND...: retries COMMAND until it succeeds or time runs out
  local what=$1 component=$2; shift 2
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$component"; then log "$component exited while waiting for $what"; return 1; fi
    if [ $SECONDS -ge $deadline ]; then log "timed out after ${READY_TIMEOUT}s waiting for $what"; return 1; fi
    sleep 0.5
  done
}

start etcd "$bin/etcd" --name default --data-dir "$etcd_data" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "default=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn \
  --quota-backend-bytes 8589934592
wait_for "etcd health" etcd curl -fsS "http://127.0.0.1:$etcd_client/health"

# --- kube-apiserver -------------------------------------------------------------------------------
advertise=()
if [ -z "$(ip route show default 2>/dev/null)" ]; then
  # Without a default route kube-apiserver cannot pick an address for the `kubernetes` Service
  # endpoints; give it a documentation-range address that nothing ever dials here.
  advertise=(--advertise-address=192.0.2.10)
fi
# Audit every write, and every request of nsguard's ServiceAccount (metadata only), so tests and
# the benchmark can count exactly the requests a given identity made.
cat >"$STATE/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["system:serviceaccount:nsguard-system:nsguard"]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
EOF
start kube-apiserver "$bin/kube-apiserver" \
  --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$STATE/logs/audit.log" \
  --audit-log-format json --audit-log-maxsize 2048 --audit-log-maxbackup 1 \
  --etcd-servers "http://127.0.0.1:$etcd_client" \
  --bind-address 127.0.0.1 --secure-port "$api_port" "${advertise[@]}" \
  --cert-dir "$certs" --tls-cert-file "$certs/apiserver.crt" --tls-private-key-file "$certs/apiserver.key" \
  --client-ca-file "$certs/ca.crt" \
  --service-account-issuer "https://127.0.0.1:$api_port" \
  --service-account-key-file "$certs/sa.pub" --service-account-signing-key-file "$certs/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --authorization-mode RBAC --allow-privileged=true --profiling=false

cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nsguard-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$certs/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$certs/admin.crt")
    client-key-data: $(base64 -w0 <"$certs/admin.key")
contexts:
- name: nsguard-test
  context: {cluster: nsguard-test, user: admin}
current-context: nsguard-test
EOF
kubectl=("$bin/kubectl" --kubeconfig "$STATE/kubeconfig")
wait_for "kube-apiserver /readyz" kube-apiserver "${kubectl[@]}" get --raw /readyz

# --- kube-controller-manager ----------------------------------------------------------------------
# The Deployment and ReplicaSet controllers make pods of nsguard's own Deployment (installed by Helm
# or kustomize), so Pod Security admission of them is tested; with no scheduler they stay Pending.
# Its client defaults to 20 requests/s; every new namespace waits on it for its `default`
# ServiceAccount, so the benchmark would measure that limit instead of nsguard. Raised, as large
# clusters do.
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$STATE/kubeconfig" \
  --authentication-kubeconfig "$STATE/kubeconfig" --authorization-kubeconfig "$STATE/kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --use-service-account-credentials=false \
  --kube-api-qps 200 --kube-api-burst 400 \
  --root-ca-file "$certs/ca.crt" --service-account-private-key-file "$certs/sa.key" \
  --controllers namespace-controller,serviceaccount-controller,garbage-collector-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller
wait_for "the default ServiceAccount in namespace default" kube-controller-manager \
  "${kubectl[@]}" -n default get serviceaccount default

# --- third-party CRDs nsguard works with ---------------------------------------------------------
# The OpenReports Report CRD (nsguard writes a Report per governed namespace when it is installed).
"${kubectl[@]}" apply --server-side -f "$("$here/openreports.sh")" >/dev/null
"${kubectl[@]}" wait --for=condition=Established --timeout=60s crd/reports.openreports.io >/dev/null

started_ok=true
log "control plane ready: $("${kubectl[@]}" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at https://127.0.0.1:$api_port"
log "export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:\$PATH"
