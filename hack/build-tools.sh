#!/usr/bin/env bash
# Builds the control-plane binaries the tests run (kube-apiserver,
# kube-controller-manager, kubectl, etcd) from the Go module proxy, pinned by
# hack/tools/go.mod, into $TOOLS_BIN (default:
# ${XDG_CACHE_HOME:-~/.cache}/l5d-tunnel/tools/<version>/bin, outside the
# checkout so that fresh clones on the same machine, like CI's, start warm).
# Prints the folder on stdout.
# A warm run only checks the stamp file and exits: binaries are rebuilt only
# when hack/tools/go.mod or go.sum change.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_version=v1.35.4
bin=${TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/l5d-tunnel/tools/$k8s_version/bin}
mkdir -p "$bin"

stamp_src=$(cat "$root/hack/tools/go.mod" "$root/hack/tools/go.sum" "$0" | sha256sum | cut -d' ' -f1)
if [[ -f $bin/.stamp && $(cat "$bin/.stamp") == "$stamp_src" ]] &&
   [[ -x $bin/kube-apiserver && -x $bin/kube-controller-manager && -x $bin/kubectl && -x $bin/etcd ]]; then
  echo "$bin"
  exit 0
fi

# kubectl and client libraries refuse a server whose version is the
# unstamped "v0.0.0-master"; stamp the real one.
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$root/hack/tools"
echo "building control-plane binaries $k8s_version into $bin (cold: ~5 min on 2 cores)" >&2
export CGO_ENABLED=0
go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags "-s -w" -o "$bin/etcd" ./etcd
echo "$stamp_src" > "$bin/.stamp"
echo "$bin"
