#!/usr/bin/env bash
# Builds one Go `main` package from a tools module of ours (its go.mod and go.sum pin every
# version) into a cache outside the clone, keyed by name, version, go.mod+go.sum and Go toolchain,
# like build.sh does for the control plane. A warm call returns at once.
#
#   gotool.sh NAME MODULE_DIR PACKAGE VERSION [LDFLAGS]
#
# Prints the path of the binary on its last line of stdout.
set -euo pipefail
name=$1 dir=$2 pkg=$3 version=$4 ldflags=${5:-}
cache_root=${NSGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nsguard}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
sum=$(find "$dir" -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name "*.go" \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-12)
out="$cache_root/bin/$name-$version-$(go env GOVERSION)-$sum"
if [ ! -f "$out/.complete" ]; then
  echo "building $name $version (a cold build takes a few minutes on 2 cores)..." >&2
  tmp="$out.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  start=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/$name" "$pkg") >&2
  echo "built $name $version in $((SECONDS - start))s" >&2
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
fi
echo "$out/$name"
