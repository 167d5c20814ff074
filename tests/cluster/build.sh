#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from the upstream Go modules pinned in tests/cluster/{etcd,k8s}/go.mod, into a cache outside the
# clone keyed by version, go.sum and Go toolchain. A warm call returns at once.
#
# Prints the directory holding the binaries on its last line of stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The version a tools module requires of MODULE (go.mod may hold it in a block or on one line).
required() { awk -v m="$2" '$1=="require" && $2==m {print $3; exit} $1==m && $2 ~ /^v/ {print $2; exit}' "$1"; }
K8S_VERSION=$(required "$here/k8s/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(required "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)
if [ -z "$K8S_VERSION" ] || [ -z "$ETCD_VERSION" ]; then
  echo "build.sh: cannot read the pinned versions from tests/cluster/{k8s,etcd}/go.mod" >&2; exit 1
fi
cache_root=${NSGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nsguard}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
go_version=$(go env GOVERSION)

key() { # key NAME VERSION MODULE_DIR
  local sum
  sum=$(cat "$3/go.mod" "$3/go.sum" | sha256sum | cut -c1-12)
  echo "$cache_root/bin/$1-$2-$go_version-$sum"
}

build() { # build DIR OUT LDFLAGS NAME=PKG...
  local dir=$1 out=$2 ldflags=$3; shift 3
  if [ -f "$out/.complete" ]; then return 0; fi
  echo "building $(basename "$out") (cold builds take a while on 2 cores)..." >&2
  local tmp="$out.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local start=$SECONDS
  local pair
  for pair in "$@"; do
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$tmp/${pair%%=*}" "${pair#*=}") >&2
  done
  echo "built $(basename "$out") in $((SECONDS - start))s" >&2
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
}

etcd_out=$(key etcd "$ETCD_VERSION" "$here/etcd")
k8s_out=$(key k8s "$K8S_VERSION" "$here/k8s")
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"

build "$here/etcd" "$etcd_out" "-s -w" etcd=go.etcd.io/etcd/server/v3
build "$here/k8s" "$k8s_out" "$k8s_ldflags" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kubectl=k8s.io/kubernetes/cmd/kubectl

bin="$cache_root/bin/current-$K8S_VERSION-$ETCD_VERSION"
mkdir -p "$bin"
ln -sf "$etcd_out/etcd" "$bin/etcd"
for b in kube-apiserver kube-controller-manager kubectl; do ln -sf "$k8s_out/$b" "$bin/$b"; done
echo "$bin"
