#!/usr/bin/env bash
# Prints the path of a helm binary built from the Go module pinned in tests/cluster/helm/go.mod
# (helm.sh/helm/v4), cached outside the clone keyed by version (see gotool.sh). Never copied into
# the repository.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(awk '$1=="helm.sh/helm/v4" && $2 ~ /^v/ {print $2; exit}' "$here/helm/go.mod")
[ -n "$version" ] || { echo "helm.sh: no helm.sh/helm/v4 version in tests/cluster/helm/go.mod" >&2; exit 1; }
"$here/gotool.sh" helm "$here/helm" helm.sh/helm/v4/cmd/helm "$version" \
  "-X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" | tail -n 1
