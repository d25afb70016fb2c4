#!/usr/bin/env bash
# Builds golangci-lint, pinned by hack/lint/go.mod (its own module: the
# linter's hundreds of requirements must not meet k8s.io/kubernetes' in
# hack/tools, nor reach the shipped binaries), into $LINT_BIN (default:
# ${XDG_CACHE_HOME:-~/.cache}/l5d-tunnel/lint/<stamp>/bin, outside the checkout
# like hack/build-tools.sh). Prints the binary's path on stdout.
# A warm run only checks the stamp file and exits: the binary is rebuilt only
# when hack/lint/go.mod, go.sum or this script change.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
stamp_src=$(cat "$root/hack/lint/go.mod" "$root/hack/lint/go.sum" "$0" | sha256sum | cut -d' ' -f1)
bin=${LINT_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/l5d-tunnel/lint/${stamp_src:0:12}/bin}
mkdir -p "$bin"

if [[ -f $bin/.stamp && $(cat "$bin/.stamp") == "$stamp_src" && -x $bin/golangci-lint ]]; then
  echo "$bin/golangci-lint"
  exit 0
fi

cd "$root/hack/lint"
echo "building golangci-lint into $bin (cold: a few minutes on 2 cores)" >&2
CGO_ENABLED=0 go build -trimpath -o "$bin/golangci-lint" github.com/golangci/golangci-lint/v2/cmd/golangci-lint
echo "$stamp_src" > "$bin/.stamp"
echo "$bin/golangci-lint"
