#!/usr/bin/env bash
# Prints the path of tests/kstatus (our own small program over the upstream kstatus module,
# sigs.k8s.io/cli-utils pinned in tests/kstatus/go.mod), built into the cache outside the clone
# keyed by version (see gotool.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(awk '$1=="sigs.k8s.io/cli-utils" && $2 ~ /^v/ {print $2; exit}' "$here/../kstatus/go.mod")
[ -n "$version" ] || { echo "kstatus.sh: no sigs.k8s.io/cli-utils version in tests/kstatus/go.mod" >&2; exit 1; }
"$here/gotool.sh" kstatus "$here/../kstatus" . "cli-utils-$version" | tail -n 1
