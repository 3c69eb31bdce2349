#!/usr/bin/env bash
# Builds (and caches) what the node VM tests (tests/node_vm.rs) boot under qemu: a small Debian
# root file system with systemd, udev, dmsetup, util-linux, e2fsprogs and a kernel; containerd 1.7
# and 2.2 built from their Go modules at pinned versions; nodeagent-apply (hack/node-vm/), which
# writes an OperatingSystemConfig into a root file system the way gardener-node-agent does.
#
#   hack/node-vm.sh build [PART...]          build what is missing (stamped by recipe; idempotent);
#                                            PART: rootfs, containerd, nodeagent-apply
#   hack/node-vm.sh assemble ROOT VARIANT    copy the cached rootfs to ROOT and add containerd
#                                            VARIANT (1.7 or 2.2) and the test agent
#   TESTBIN_DIR   cache directory (default: <repo>/.testbin); everything lands in $TESTBIN_DIR/node-vm
#   DEBIAN_MIRROR Debian mirror for debootstrap (default: the first one in the host's apt sources)
# Needs root (debootstrap), debootstrap, qemu-system-x86_64 and Go: `make tools` installs the first two.
set -euo pipefail

SUITE=bookworm
CONTAINERD_1_VERSION=1.7.35
CONTAINERD_2_VERSION=2.2.9
GARDENER_VERSION=1.149.3
PACKAGES=systemd,systemd-sysv,udev,dmsetup,kmod,e2fsprogs,util-linux,mount,linux-image-amd64

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${TESTBIN_DIR:-$repo/.testbin}/node-vm
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
say() { printf '[node-vm] %s\n' "$*" >&2; }
die() { printf '[node-vm] error: %s\n' "$*" >&2; exit 1; }

# The rootfs recipe stamp: a changed package list rebuilds the rootfs; bump v<N> when changing
# the setup in build_rootfs.
ROOTFS_RECIPE="v1 $SUITE $PACKAGES"

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -n -e 's#^URIs:[[:space:]]*\(http[^ ]*/debian\)/*$#\1#p' -e 's#^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^ ]*/debian\)/*[[:space:]].*#\2#p' | head -n 1)
  [ -n "$m" ] || die "no Debian mirror in the host's apt sources; set DEBIAN_MIRROR"
  echo "$m"
}

build_rootfs() {
  local out=$dir/rootfs stamp=$dir/rootfs.recipe
  if [ -d "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$ROOTFS_RECIPE" ]; then
    say "rootfs ($SUITE) present"; return
  fi
  [ "$(id -u)" = 0 ] || die "building the VM rootfs needs root (debootstrap)"
  command -v debootstrap >/dev/null || die "debootstrap is missing (make tools)"
  say "building the rootfs with debootstrap ($SUITE, a few minutes when cold)"
  local tmp=$dir/rootfs.tmp
  umount_chroot "$tmp"
  rm -rf "$tmp" "$out" "$stamp"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$(mirror)" >"$dir/debootstrap.log" 2>&1 ||
    { umount_chroot "$tmp"; tail -n 20 "$dir/debootstrap.log" >&2; die "debootstrap failed (log: $dir/debootstrap.log)"; }
  umount_chroot "$tmp"
  echo kata-node >"$tmp/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$tmp/etc/fstab"
  # no login prompts, no network, no timers we do not test: a quick and quiet boot
  chroot "$tmp" systemctl set-default multi-user.target >/dev/null 2>&1
  chroot "$tmp" systemctl mask getty@tty1.service serial-getty@ttyS0.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service >/dev/null 2>&1 || true
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  ls "$tmp"/boot/vmlinuz-* "$tmp"/boot/initrd.img-* >/dev/null 2>&1 || die "no kernel/initrd in the rootfs"
  mv "$tmp" "$out"
  echo "$ROOTFS_RECIPE" >"$stamp"
}

umount_chroot() {
  local d=$1 m
  [ -d "$d" ] || return 0
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$d/$m" 2>/dev/null; then umount -l "$d/$m" || true; fi
  done
}

go_env() {
  command -v go >/dev/null || die "Go is not installed"
  export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" GOTOOLCHAIN=${GOTOOLCHAIN:-local}
}

# containerd and ctr from the Go module; CGO off and no btrfs, as the static release builds.
build_containerd() {
  local version=$1 module=$2 out=$dir/containerd-$1
  if [ -x "$out/containerd" ] && [ -x "$out/ctr" ] && "$out/containerd" --version 2>/dev/null | grep -q " v$version"; then
    say "containerd $version present"; return
  fi
  say "building containerd $version from $module (a few minutes when cold)"
  go_env
  local d; d=$(mktemp -d)
  (
    cd "$d"
    go mod init node-vm.invalid/containerd >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/containerd"\n\t_ "%s/cmd/ctr"\n)\n' "$module" "$module" >tools.go
    go get "$module@v$version" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    mkdir -p out
    go build -trimpath -tags "no_btrfs" -o out/ -ldflags "-s -w -X $module/version.Version=v$version" \
      "$module/cmd/containerd" "$module/cmd/ctr"
  ) || { rm -rf "$d"; die "building containerd $version failed"; }
  rm -rf "$out"; mkdir -p "$out"
  mv "$d/out/containerd" "$d/out/ctr" "$out/"
  rm -rf "$d"
}

build_nodeagent_apply() {
  local out=$dir/nodeagent-apply stamp=$dir/nodeagent-apply.stamp src=$repo/hack/node-vm/nodeagent-apply/main.go
  local want; want="$GARDENER_VERSION $(sha256sum "$src" | cut -d' ' -f1)"
  if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "nodeagent-apply present"; return
  fi
  say "building nodeagent-apply (gardener v$GARDENER_VERSION's structuredmap and go-toml)"
  go_env
  local d; d=$(mktemp -d)
  (
    cd "$d"
    go mod init node-vm.invalid/nodeagent-apply >/dev/null 2>&1
    cp "$src" .
    go mod edit -require="github.com/gardener/gardener@v$GARDENER_VERSION"
    go mod tidy >/dev/null 2>&1
    go build -trimpath -ldflags "-s -w" -o nodeagent-apply .
  ) || { rm -rf "$d"; die "building nodeagent-apply failed"; }
  mv "$d/nodeagent-apply" "$out"
  rm -rf "$d"
  echo "$want" >"$stamp"
}

# A node's root file system for one test chain: the cached rootfs plus containerd, its unit and
# the test agent. The OSC is applied afterwards by nodeagent-apply (tests/node_vm.rs).
assemble() {
  local root=$1 variant=$2 bin
  case $variant in
    1.7) bin=$dir/containerd-$CONTAINERD_1_VERSION ;;
    2.2) bin=$dir/containerd-$CONTAINERD_2_VERSION ;;
    *) die "unknown containerd variant $variant (1.7 or 2.2)" ;;
  esac
  if [ ! -d "$dir/rootfs" ] || [ ! -x "$bin/containerd" ]; then die "run 'hack/node-vm.sh build' first"; fi
  rm -rf "$root"
  cp -a "$dir/rootfs" "$root"
  install -m 0755 "$bin/containerd" "$bin/ctr" "$root/usr/local/bin/"
  install -m 0755 "$dir/nodeagent-apply" "$root/usr/local/bin/nodeagent-apply"
  install -m 0755 "$repo/hack/node-vm/guest-agent.sh" "$root/usr/local/sbin/kata-node-test"
  install -m 0644 "$repo/hack/node-vm/containerd.service" "$root/etc/systemd/system/containerd.service"
  install -m 0644 "$repo/hack/node-vm/kata-node-test.service" "$root/etc/systemd/system/kata-node-test.service"
  chroot "$root" systemctl enable containerd.service kata-node-test.service >/dev/null 2>&1
  cp "$root"/boot/vmlinuz-* "$root/../vmlinuz"
  cp "$root"/boot/initrd.img-* "$root/../initrd.img"
}

case ${1:-build} in
  build)
    start=$(date +%s)
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (make tools)"
    parts=("${@:2}")
    [ ${#parts[@]} -gt 0 ] || parts=(rootfs containerd nodeagent-apply)
    for part in "${parts[@]}"; do
      case $part in
        rootfs)
          # debootstrap waits on downloads and dpkg, the Go builds on the CPU: run them side by side
          if [ ${#parts[@]} -gt 1 ]; then
            build_rootfs &
            rootfs_pid=$!
          else
            build_rootfs
          fi
          ;;
        containerd)
          build_containerd "$CONTAINERD_1_VERSION" github.com/containerd/containerd
          build_containerd "$CONTAINERD_2_VERSION" github.com/containerd/containerd/v2
          ;;
        nodeagent-apply) build_nodeagent_apply ;;
        *) die "unknown part $part" ;;
      esac
    done
    if [ -n "${rootfs_pid:-}" ]; then wait "$rootfs_pid" || die "building the rootfs failed"; fi
    say "ready in $dir ($(($(date +%s) - start))s)"
    ;;
  assemble) assemble "${2:?root}" "${3:?variant}" ;;
  *) die "usage: $0 [build|assemble ROOT VARIANT]" ;;
esac
