#!/usr/bin/env bash
# Prints the path of the OpenReports `Report` CRD (reports.openreports.io), which is not nsguard's:
# fetched from the Go module proxy into Go's module cache (outside the clone, keyed by version),
# like the control plane. Never copied into the repository.
set -euo pipefail
OPENREPORTS_VERSION=v0.2.1
dir=$(GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "github.com/openreports/reports-api@$OPENREPORTS_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
crd="$dir/config/crd/openreports.io_reports.yaml"
[ -f "$crd" ] || { echo "openreports.sh: $crd not found in the module" >&2; exit 1; }
echo "$crd"
