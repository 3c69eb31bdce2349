#!/usr/bin/env bash
# Managed by gardener-extension-runtime-kata (OperatingSystemConfig webhook). Do not edit: the
# extension overwrites this file.
#
# Creates (first run) or re-attaches (every boot) the devmapper thin-pool that containerd's
# devmapper snapshotter needs for Kata's Firecracker shim (kata-fc).
#
# Idempotent and reboot-safe:
# - an active pool is left alone;
# - the sparse backing files are created only if absent and never truncated or re-initialised;
# - after a reboot the same files are re-attached (an existing loop device backed by a file is
#   reused) and the pool is re-created from them with the same table, without wiping anything;
# - thin-pool metadata is zero-initialised only in a metadata file this run has just created.
#
# Paths, pool name and sizes can be overridden through the environment (used by tests).
set -euo pipefail

DM_DIR="${KATA_DEVMAPPER_DIR:-@DATA_DIR@}"
POOL_NAME="${KATA_DEVMAPPER_POOL:-@POOL_NAME@}"
DATA_SIZE="${KATA_DEVMAPPER_DATA_SIZE:-@DATA_SIZE@}"
METADATA_SIZE="${KATA_DEVMAPPER_METADATA_SIZE:-@METADATA_SIZE@}"
SNAPSHOTTER_ROOT="${KATA_DEVMAPPER_SNAPSHOTTER_ROOT:-@SNAPSHOTTER_ROOT@}"

DATA_FILE="${DM_DIR}/data"
METADATA_FILE="${DM_DIR}/metadata"
# 128 sectors of 512 bytes = 64 KiB per data block; a dm event fires below 32768 free blocks (2 GiB).
DATA_BLOCK_SECTORS=128
LOW_WATER_MARK=32768

log() { echo "kata-devmapper: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

validate_settings() {
  [[ "$DM_DIR" == /* ]] || die "KATA_DEVMAPPER_DIR must be an absolute path, got '${DM_DIR}'"
  [[ "$SNAPSHOTTER_ROOT" == /* ]] || die "KATA_DEVMAPPER_SNAPSHOTTER_ROOT must be an absolute path, got '${SNAPSHOTTER_ROOT}'"
  [[ "$POOL_NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "invalid pool name '${POOL_NAME}'"
  [[ "$DATA_SIZE" =~ ^[0-9]+$ ]] || die "data size must be a number of bytes, got '${DATA_SIZE}'"
  [[ "$METADATA_SIZE" =~ ^[0-9]+$ ]] || die "metadata size must be a number of bytes, got '${METADATA_SIZE}'"
}

require_tools() {
  local tool
  local missing=()
  for tool in dmsetup losetup blockdev truncate dd; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]} > 0)); then
    die "missing required tools: ${missing[*]} (PATH=${PATH}); kata-fc needs device-mapper and loop device tools on the node"
  fi
}

has_thin_pool_target() {
  local targets
  targets="$(dmsetup targets 2>/dev/null)" || return 1
  grep -q '^thin-pool[[:space:]]' <<<"$targets"
}

require_kernel() {
  if has_thin_pool_target; then
    return 0
  fi
  if command -v modprobe >/dev/null 2>&1; then
    modprobe dm_thin_pool >/dev/null 2>&1 || true
  fi
  if has_thin_pool_target; then
    return 0
  fi
  local dm=no mod=no
  if grep -qw device-mapper /proc/devices 2>/dev/null; then dm=yes; fi
  if [[ -d /sys/module/dm_thin_pool ]]; then mod=yes; fi
  die "the kernel offers no device-mapper thin-pool target (device-mapper in /proc/devices: ${dm}, /sys/module/dm_thin_pool: ${mod}, 'modprobe dm_thin_pool' did not help); kata-fc needs the dm_thin_pool kernel module"
}

# Prints the loop device backing FILE, attaching the file only if no loop device does yet.
loop_for() {
  local file="$1" dev
  dev="$(losetup -j "$file" | sed -n '1s/:.*//p')"
  if [[ -z "$dev" ]]; then
    dev="$(losetup --find --show "$file")" || die "cannot attach ${file} to a loop device"
    log "attached ${file} to ${dev}"
  else
    log "reusing ${dev} for ${file}"
  fi
  printf '%s\n' "$dev"
}

create_backing_files() {
  log "creating sparse backing files in ${DM_DIR} (data ${DATA_SIZE} bytes, metadata ${METADATA_SIZE} bytes)"
  # *.new files never backed a pool: leftovers of an interrupted first run are safe to replace.
  rm -f "${DATA_FILE}.new" "${METADATA_FILE}.new"
  truncate -s "$DATA_SIZE" "${DATA_FILE}.new"
  truncate -s "$METADATA_SIZE" "${METADATA_FILE}.new"
  # A new pool needs a zeroed metadata superblock (the kernel then formats it). The file was
  # created just now, so this wipes nothing.
  dd if=/dev/zero of="${METADATA_FILE}.new" bs=4096 count=1 conv=notrunc status=none
  # containerd's snapshotter state refers to thin devices of a pool that no longer exists.
  if [[ -e "$SNAPSHOTTER_ROOT" ]]; then
    log "removing stale devmapper snapshotter state ${SNAPSHOTTER_ROOT} (its pool is gone)"
    rm -rf "${SNAPSHOTTER_ROOT:?}"
  fi
  mv "${DATA_FILE}.new" "$DATA_FILE"
  # The metadata file comes last: its presence marks a complete set.
  mv "${METADATA_FILE}.new" "$METADATA_FILE"
}

main() {
  validate_settings
  require_tools
  require_kernel

  if dmsetup status "$POOL_NAME" >/dev/null 2>&1; then
    log "thin-pool ${POOL_NAME} is active, nothing to do"
    return 0
  fi

  mkdir -p "$DM_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${DM_DIR}/.lock"
    flock 9
    if dmsetup status "$POOL_NAME" >/dev/null 2>&1; then
      log "thin-pool ${POOL_NAME} was created concurrently, nothing to do"
      return 0
    fi
  fi

  if [[ -e "$DATA_FILE" && -e "$METADATA_FILE" ]]; then
    log "re-attaching the existing backing files in ${DM_DIR} (nothing is truncated or wiped)"
    local have
    have="$(stat -c %s "$DATA_FILE")"
    if ((have != DATA_SIZE)); then
      log "note: ${DATA_FILE} has ${have} bytes, the configured size is ${DATA_SIZE}; keeping the existing size"
    fi
  elif [[ ! -e "$DATA_FILE" && ! -e "$METADATA_FILE" ]]; then
    create_backing_files
  elif [[ -e "$DATA_FILE" && -e "${METADATA_FILE}.new" ]]; then
    # Interrupted first run between the two renames: no pool ever used these files.
    log "completing an interrupted first run in ${DM_DIR}"
    rm -f "$DATA_FILE"
    create_backing_files
  else
    die "inconsistent state in ${DM_DIR}: exactly one of data and metadata exists; refusing to guess. Move both files away to start with an empty pool"
  fi

  local data_dev meta_dev sectors table
  data_dev="$(loop_for "$DATA_FILE")"
  meta_dev="$(loop_for "$METADATA_FILE")"
  sectors="$(blockdev --getsz "$data_dev")" || die "cannot read the size of ${data_dev}"
  table="0 ${sectors} thin-pool ${meta_dev} ${data_dev} ${DATA_BLOCK_SECTORS} ${LOW_WATER_MARK}"
  log "creating thin-pool ${POOL_NAME}: ${table}"
  dmsetup create "$POOL_NAME" --table "$table" || die "dmsetup create ${POOL_NAME} failed"
  log "thin-pool ${POOL_NAME} is ready"
}

main "$@"
