#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, helm), gardener-resource-manager,
# gardener-apiserver and hack/gardenlet-driver from Go
# modules at pinned versions and places Gardener's seed CRDs next to them. Idempotent: binaries
# already in the cache are kept.
#
#   hack/testbin.sh [crds|operator-crds|etcd|helm|kube-apiserver|gardener-resource-manager|gardener-apiserver|gardenlet-driver ...]   (default: all)
#   TESTBIN_DIR   cache directory (default: <repo>/.testbin); survives `cargo clean`
set -euo pipefail

KUBERNETES_VERSION=1.33.13
ETCD_VERSION=3.6.16
HELM_VERSION=3.21.4
GARDENER_VERSION=1.149.3

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${TESTBIN_DIR:-$repo/.testbin}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

say() { printf '[testbin] %s\n' "$*"; }

if ! command -v go >/dev/null 2>&1; then
  echo "[testbin] error: Go is not installed (or not on PATH). The test control plane is built from Go modules;" >&2
  echo "[testbin]        install Go >= 1.24 and run 'make testbin' again." >&2
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A throwaway main module: replace directives are honoured only there, which is what lets us build
# k8s.io/kubernetes (its go.mod points the staging modules at ./staging).
new_module() {
  local d=$work/$1
  mkdir -p "$d"
  (cd "$d" && go mod init "testbin.invalid/$1" >/dev/null 2>&1)
  echo "$d"
}

build_etcd() {
  local out=$dir/etcd
  if [ -x "$out" ] && "$out" --version 2>/dev/null | grep -q "etcd Version: $ETCD_VERSION"; then
    say "etcd $ETCD_VERSION present"; return
  fi
  say "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3 (a few minutes when cold)"
  local d; d=$(new_module etcd)
  cat >"$d/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$d" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null && go mod tidy >/dev/null \
    && go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
}

build_kube_apiserver() {
  local out=$dir/kube-apiserver
  if [ -x "$out" ] && "$out" --version 2>/dev/null | grep -qx "Kubernetes v$KUBERNETES_VERSION"; then
    say "kube-apiserver v$KUBERNETES_VERSION present"; return
  fi
  say "building kube-apiserver v$KUBERNETES_VERSION from k8s.io/kubernetes (10-20 minutes when cold)"
  local d; d=$(new_module kube-apiserver)
  local minor=${KUBERNETES_VERSION#1.}
  (
    cd "$d"
    go mod edit -require="k8s.io/kubernetes@v$KUBERNETES_VERSION"
    gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
    # every staging module k8s.io/kubernetes replaces locally is pinned to its published v0.<minor> twin
    for m in $(sed -n 's#^\s*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@v0.$minor"
    done
    cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
    go mod tidy >/dev/null 2>&1 || go get "k8s.io/kubernetes/cmd/kube-apiserver@v$KUBERNETES_VERSION" >/dev/null
    go build -trimpath -o "$out.tmp" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$KUBERNETES_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=${minor%%.*} \
      -X k8s.io/component-base/version.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=v$KUBERNETES_VERSION" \
      k8s.io/kubernetes/cmd/kube-apiserver
  )
  mv "$out.tmp" "$out"
}

build_helm() {
  local out=$dir/helm
  if [ -x "$out" ] && "$out" version --template '{{.Version}}' 2>/dev/null | grep -qx "v$HELM_VERSION"; then
    say "helm v$HELM_VERSION present"; return
  fi
  say "building helm v$HELM_VERSION from helm.sh/helm/v3"
  local d; d=$(new_module helm)
  (
    cd "$d"
    cat >tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
    go get "helm.sh/helm/v3@v$HELM_VERSION" >/dev/null
    go mod tidy >/dev/null
    go build -trimpath -o "$out.tmp" -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" helm.sh/helm/v3/cmd/helm
  )
  mv "$out.tmp" "$out"
}

place_crds() {
  local crds=$dir/crds stamp=$dir/crds/.gardener-version
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$GARDENER_VERSION" ]; then
    say "Gardener v$GARDENER_VERSION seed CRDs present"; return
  fi
  say "taking the seed CRDs of github.com/gardener/gardener v$GARDENER_VERSION (example/seed-crds)"
  local src
  src=$(cd "$work" && go mod download -json "github.com/gardener/gardener@v$GARDENER_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src/example/seed-crds" ] || { echo "[testbin] error: no example/seed-crds in $src" >&2; exit 1; }
  rm -rf "$crds"; mkdir -p "$crds"
  for f in containerruntimes clusters operatingsystemconfigs extensions workers; do
    cp "$src/example/seed-crds/10-crd-extensions.gardener.cloud_$f.yaml" "$crds/"
  done
  cp "$src/example/seed-crds/10-crd-resources.gardener.cloud_managedresources.yaml" "$crds/"
  chmod 0644 "$crds"/*.yaml
  echo "$GARDENER_VERSION" >"$stamp"
}

# gardener-operator's Extension CRD, apart from the seed CRDs (no seed has it): the admission
# tests validate the generated extension.yaml against it.
place_operator_crds() {
  local crds=$dir/operator-crds stamp=$dir/operator-crds/.gardener-version
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$GARDENER_VERSION" ]; then
    say "Gardener v$GARDENER_VERSION operator CRDs present"; return
  fi
  say "taking the operator Extension CRD of github.com/gardener/gardener v$GARDENER_VERSION (example/operator)"
  local src
  src=$(cd "$work" && go mod download -json "github.com/gardener/gardener@v$GARDENER_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -f "$src/example/operator/10-crd-operator.gardener.cloud_extensions.yaml" ] || { echo "[testbin] error: no operator Extension CRD in $src" >&2; exit 1; }
  rm -rf "$crds"; mkdir -p "$crds"
  cp "$src/example/operator/10-crd-operator.gardener.cloud_extensions.yaml" "$crds/"
  chmod 0644 "$crds"/*.yaml
  echo "$GARDENER_VERSION" >"$stamp"
}

# Builds Gardener's cmd/<name> at $GARDENER_VERSION into .testbin/<name>. Gardener's go.mod
# replaces its nested module github.com/gardener/gardener/pkg/apis with ./pkg/apis, which the
# module zip leaves out, so the throwaway main module requires that module at the same version.
build_gardener_cmd() {
  local name=$1 out=$dir/$1 stamp=$dir/$1.version
  if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$GARDENER_VERSION" ]; then
    say "$name v$GARDENER_VERSION present"; return
  fi
  say "building $name v$GARDENER_VERSION from github.com/gardener/gardener (5-15 minutes when cold)"
  local d; d=$(new_module "$name")
  (
    cd "$d"
    go mod edit -go=1.26 \
      -require="github.com/gardener/gardener@v$GARDENER_VERSION" \
      -require="github.com/gardener/gardener/pkg/apis@v$GARDENER_VERSION"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/gardener/gardener/cmd/%s"\n' "$name" >tools.go
    go mod tidy >/dev/null
    go build -trimpath -o "$out.tmp" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$GARDENER_VERSION" \
      "github.com/gardener/gardener/cmd/$name"
  )
  mv "$out.tmp" "$out"
  echo "$GARDENER_VERSION" >"$stamp"
}

# hack/gardenlet-driver: gardenlet's own ContainerRuntime component driving the extension
# (tests/gardenlet.rs). A module of its own with go.mod/go.sum committed (like the modules above, it
# requires github.com/gardener/gardener/pkg/apis at Gardener's version, for Gardener's local
# replace of it does not apply); rebuilt when its source or the Gardener version changes.
build_gardenlet_driver() {
  local src=$repo/hack/gardenlet-driver out=$dir/gardenlet-driver stamp=$dir/gardenlet-driver.version want
  grep -Eq "^\s*github.com/gardener/gardener v$GARDENER_VERSION\$" "$src/go.mod" || {
    echo "[testbin] error: $src/go.mod does not require github.com/gardener/gardener v$GARDENER_VERSION" >&2; exit 1; }
  want="$GARDENER_VERSION $(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -d' ' -f1)"
  if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "gardenlet-driver (Gardener v$GARDENER_VERSION) present"; return
  fi
  say "building gardenlet-driver against Gardener v$GARDENER_VERSION (seconds once gardener-resource-manager has warmed the Go build cache)"
  (cd "$src" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
  echo "$want" >"$stamp"
}

start=$(date +%s)
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(crds operator-crds etcd helm kube-apiserver gardener-resource-manager gardener-apiserver gardenlet-driver)
for c in "${components[@]}"; do
  case $c in
    crds) place_crds ;;
    operator-crds) place_operator_crds ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    kube-apiserver) build_kube_apiserver ;;
    # gardener-resource-manager applies our ManagedResources into the shoot (and, as the seed's
    # instance, garbage-collects unreferenced secrets); gardener-apiserver serves Shoots,
    # CloudProfiles and Projects as an aggregated API, so the garden admission is called by it
    gardener-resource-manager | gardener-apiserver) build_gardener_cmd "$c" ;;
    gardenlet-driver) build_gardenlet_driver ;;
    *) echo "[testbin] error: unknown component $c" >&2; exit 2 ;;
  esac
done
say "ready in $dir ($(( $(date +%s) - start ))s): ${components[*]} (Kubernetes v$KUBERNETES_VERSION, etcd $ETCD_VERSION, helm v$HELM_VERSION, Gardener v$GARDENER_VERSION)"
