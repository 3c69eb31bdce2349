#!/usr/bin/env bash
# Installs the host tools the tests need besides the Go-built test binaries (hack/testbin.sh):
# the shellcheck linter, used on the devmapper setup script the webhook puts on kata-fc nodes.
set -euo pipefail

if command -v shellcheck >/dev/null 2>&1 && command -v qemu-system-x86_64 >/dev/null 2>&1 &&
  command -v debootstrap >/dev/null 2>&1 && command -v debugfs >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=()
  if [[ "$(id -u)" != 0 ]]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  # qemu, debootstrap, e2fsprogs: the node VM tests (make test-node, hack/node-vm.sh)
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends shellcheck qemu-system-x86 debootstrap e2fsprogs
else
  echo "install-tools: please install shellcheck (https://github.com/koalaman/shellcheck)" >&2
  exit 1
fi
