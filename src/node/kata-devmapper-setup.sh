#!/usr/bin/env bash
# Managed by gardener-extension-runtime-kata (OperatingSystemConfig webhook). Do not edit: the
# extension overwrites this file.
#
# Creates (first run) or re-attaches (every boot) the devmapper thin-pool that containerd's
# devmapper snapshotter needs for Kata's Firecracker shim (kata-fc).
#
# Idempotent and reboot-safe:
# - an active pool is left alone, except that it grows when the configured data size is larger;
# - the backing files are created only if absent and never truncated, shrunk or re-initialised;
# - after a reboot the same files are re-attached (an existing loop device backed by a file is
#   reused) and the pool is re-created from them with the same table, without wiping anything;
# - thin-pool metadata is zero-initialised only in a metadata file this run has just created.
#
# Never overcommits the disk: the data file is preallocated (fallocate), so the pool cannot run the
# node's file system out of space under the containers (a sparse file would: the loop device then
# fails writes while the pool still reports "rw"). When the configured data size does not fit into
# the free space minus a reserve (RESERVE_PERCENT of the file system stays free for the node), the
# pool is made smaller with a warning; below MIN_DATA_SIZE the run fails. A full pool is visible in
# `dmsetup status` (out_of_data_space) and fails writes at once (error_if_no_space).
#
# containerd's devmapper configuration is a drop-in (CONTAINERD_DROPIN) that this script renames
# to *.disabled while the pool cannot be set up, and back once it is: containerd 2.x does not run
# any pod while a configured devmapper snapshotter fails to load, 1.7 only loses that snapshotter.
#
# Run by systemd: a failed run schedules another start of its unit (a transient timer, every
# RETRY_SEC seconds until it succeeds). containerd is restarted when its devmapper snapshotter
# does not match the pool: failed after a run failed, or not loaded after a run succeeded.
#
# Paths, pool name and sizes can be overridden through the environment (used by tests).
set -euo pipefail

DM_DIR="${KATA_DEVMAPPER_DIR:-@DATA_DIR@}"
POOL_NAME="${KATA_DEVMAPPER_POOL:-@POOL_NAME@}"
DATA_SIZE="${KATA_DEVMAPPER_DATA_SIZE:-@DATA_SIZE@}"
METADATA_SIZE="${KATA_DEVMAPPER_METADATA_SIZE:-@METADATA_SIZE@}"
SNAPSHOTTER_ROOT="${KATA_DEVMAPPER_SNAPSHOTTER_ROOT:-@SNAPSHOTTER_ROOT@}"
RESERVE_PERCENT="${KATA_DEVMAPPER_RESERVE_PERCENT:-20}"
RETRY_SEC="${KATA_DEVMAPPER_RETRY_SEC:-60}"
UNIT_NAME="@UNIT_NAME@"
CONTAINERD_DROPIN="${KATA_DEVMAPPER_CONTAINERD_DROPIN:-@CONTAINERD_DROPIN@}"
MIN_DATA_SIZE=$((256 << 20))

DATA_FILE="${DM_DIR}/data"
METADATA_FILE="${DM_DIR}/metadata"
# 128 sectors of 512 bytes = 64 KiB per data block; a dm event fires below 32768 free blocks (2 GiB).
DATA_BLOCK_SECTORS=128
LOW_WATER_MARK=32768

log() { echo "kata-devmapper: $*" >&2; }
die() {
  log "ERROR: $*"
  disable_containerd_dropin
  restart_containerd_unless_devmapper error
  schedule_retry
  exit 1
}

disable_containerd_dropin() {
  if [[ -e "$CONTAINERD_DROPIN" ]]; then
    mv -f "$CONTAINERD_DROPIN" "${CONTAINERD_DROPIN}.disabled"
    log "disabled containerd's devmapper snapshotter until the pool exists (${CONTAINERD_DROPIN}.disabled): kata-fc pods cannot start, all others can"
  fi
}

# gardener-node-agent (re)writes the drop-in itself when its content changes; then an older
# disabled copy is stale.
enable_containerd_dropin() {
  if [[ -e "${CONTAINERD_DROPIN}.disabled" ]]; then
    if [[ -e "$CONTAINERD_DROPIN" ]]; then
      rm -f "${CONTAINERD_DROPIN}.disabled"
    else
      mv "${CONTAINERD_DROPIN}.disabled" "$CONTAINERD_DROPIN"
      log "enabled containerd's devmapper snapshotter (${CONTAINERD_DROPIN})"
    fi
  fi
}

# Under systemd only (INVOCATION_ID): start the unit again in RETRY_SEC seconds. The fixed timer
# name keeps one retry pending at a time; it unloads once elapsed.
schedule_retry() {
  [[ -n "${INVOCATION_ID:-}" ]] || return 0
  command -v systemd-run >/dev/null 2>&1 || return 0
  if systemd-run --quiet --unit=kata-devmapper-retry --on-active="${RETRY_SEC}" \
    --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
    --description="Retry ${UNIT_NAME}" systemctl --no-block start "${UNIT_NAME}" >/dev/null 2>&1; then
    log "retrying in ${RETRY_SEC}s"
  fi
}

# containerd loads its devmapper snapshotter once, at start. Restarts a running containerd whose
# devmapper snapshotter is not in state WANT (ok after a success, anything but error after a
# failure). Running containers survive a containerd restart. Under systemd only (INVOCATION_ID).
restart_containerd_unless_devmapper() { # WANT: ok | error
  [[ -n "${INVOCATION_ID:-}" ]] || return 0
  command -v ctr >/dev/null 2>&1 || return 0
  systemctl is-active --quiet containerd.service 2>/dev/null || return 0
  local status
  status="$(ctr plugins ls 2>/dev/null | awk '$1 == "io.containerd.snapshotter.v1" && $2 == "devmapper" { print $NF }')"
  if [[ "$1" == ok && "$status" != ok ]]; then
    log "containerd's devmapper snapshotter is '${status:-absent}' but the pool is ready: restarting containerd"
  elif [[ "$1" == error && "$status" == error ]]; then
    log "containerd's devmapper snapshotter failed to load: restarting containerd without it"
  else
    return 0
  fi
  systemctl --no-block try-restart containerd.service
}

# Bytes the pool may still take from the file system: free space minus the reserve and room for
# the metadata the pool will write into its sparse metadata file (about 64 bytes per data block).
space_budget() { # DATA-SIZE
  local size avail reserve meta
  size="$(df -B1 --output=size "$DM_DIR" | tail -n 1)"
  avail="$(df -B1 --output=avail "$DM_DIR" | tail -n 1)"
  reserve=$((size * RESERVE_PERCENT / 100))
  meta=$(($1 * 64 / (DATA_BLOCK_SECTORS * 512) + (16 << 20)))
  if ((meta > METADATA_SIZE)); then meta=$METADATA_SIZE; fi
  echo $((avail - reserve - meta))
}

# Rounds down to whole MiB.
mib() { echo $(($1 / (1 << 20) * (1 << 20))); }

validate_settings() {
  [[ "$DM_DIR" == /* ]] || die "KATA_DEVMAPPER_DIR must be an absolute path, got '${DM_DIR}'"
  [[ "$SNAPSHOTTER_ROOT" == /* ]] || die "KATA_DEVMAPPER_SNAPSHOTTER_ROOT must be an absolute path, got '${SNAPSHOTTER_ROOT}'"
  [[ "$POOL_NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "invalid pool name '${POOL_NAME}'"
  [[ "$DATA_SIZE" =~ ^[0-9]+$ ]] || die "data size must be a number of bytes, got '${DATA_SIZE}'"
  [[ "$METADATA_SIZE" =~ ^[0-9]+$ ]] || die "metadata size must be a number of bytes, got '${METADATA_SIZE}'"
  if [[ ! "$RESERVE_PERCENT" =~ ^[0-9]+$ ]] || ((RESERVE_PERCENT >= 100)); then
    die "reserve must be a percentage below 100, got '${RESERVE_PERCENT}'"
  fi
  [[ "$RETRY_SEC" =~ ^[0-9]+$ ]] || die "retry interval must be a number of seconds, got '${RETRY_SEC}'"
}

require_tools() {
  local tool
  local missing=()
  for tool in dmsetup losetup blockdev truncate fallocate df stat dd; do
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
  local budget data_size
  budget="$(space_budget "$DATA_SIZE")"
  data_size=$DATA_SIZE
  if ((data_size > budget)); then
    data_size="$(mib "$budget")"
    if ((data_size < MIN_DATA_SIZE)); then
      die "not enough free space in ${DM_DIR} for the thin-pool: $((budget > 0 ? budget : 0)) bytes usable after keeping ${RESERVE_PERCENT}% of the file system free, at least ${MIN_DATA_SIZE} needed (configured dataSize ${DATA_SIZE}). Free disk space or use larger worker disks"
    fi
    log "WARNING: dataSize ${DATA_SIZE} does not fit into the free space of ${DM_DIR} (keeping ${RESERVE_PERCENT}% of the file system free): creating a pool of ${data_size} bytes instead"
  fi
  log "creating backing files in ${DM_DIR} (data ${data_size} bytes preallocated, metadata ${METADATA_SIZE} bytes sparse)"
  # *.new files never backed a pool: leftovers of an interrupted first run are safe to replace.
  rm -f "${DATA_FILE}.new" "${METADATA_FILE}.new"
  if ! fallocate -l "$data_size" "${DATA_FILE}.new"; then
    rm -f "${DATA_FILE}.new"
    die "cannot allocate ${data_size} bytes for ${DATA_FILE} (not enough free space, or the file system does not support fallocate); nothing was created"
  fi
  if ! truncate -s "$METADATA_SIZE" "${METADATA_FILE}.new" ||
    ! dd if=/dev/zero of="${METADATA_FILE}.new" bs=4096 count=1 conv=notrunc status=none; then
    # A new pool needs a zeroed metadata superblock (the kernel then formats it); the file was
    # created just now, so this wipes nothing.
    rm -f "${DATA_FILE}.new" "${METADATA_FILE}.new"
    die "cannot create ${METADATA_FILE} (not enough free space?); nothing was created"
  fi
  # containerd's snapshotter state refers to thin devices of a pool that no longer exists.
  if [[ -e "$SNAPSHOTTER_ROOT" ]]; then
    log "removing stale devmapper snapshotter state ${SNAPSHOTTER_ROOT} (its pool is gone)"
    rm -rf "${SNAPSHOTTER_ROOT:?}"
  fi
  mv "${DATA_FILE}.new" "$DATA_FILE"
  # The metadata file comes last: its presence marks a complete set.
  mv "${METADATA_FILE}.new" "$METADATA_FILE"
}

# Existing data files of older versions are sparse: reserve their space now if it fits; never
# refuse to attach them (that would cut kata-fc off its data).
reserve_existing() {
  local size allocated missing budget
  size="$(stat -c %s "$DATA_FILE")"
  allocated=$(($(stat -c %b "$DATA_FILE") * $(stat -c %B "$DATA_FILE")))
  missing=$((size - allocated))
  ((missing > 0)) || return 0
  budget="$(space_budget "$size")"
  if ((missing <= budget)) && fallocate -l "$size" "$DATA_FILE"; then
    log "reserved ${missing} bytes of disk space for ${DATA_FILE} (it was sparse)"
  else
    log "WARNING: ${DATA_FILE} is sparse and ${missing} bytes of it do not fit into the free space: the pool can run the disk full, and then writes of kata-fc containers fail with I/O errors. Free disk space on this node"
  fi
}

# Grows the data file (and an active pool) to the configured size, as far as it fits. A pool is
# never shrunk.
grow_if_configured() {
  local have budget target dev sectors table
  have="$(stat -c %s "$DATA_FILE")"
  if ((DATA_SIZE < have)); then
    log "note: ${DATA_FILE} has ${have} bytes, the configured size is ${DATA_SIZE}; keeping the existing size (a pool is never shrunk)"
    return 0
  fi
  ((DATA_SIZE > have)) || return 0
  budget="$(space_budget "$DATA_SIZE")"
  target=$DATA_SIZE
  if ((target - have > budget)); then
    target="$(mib $((have + (budget > 0 ? budget : 0))))"
    if ((target <= have)); then
      log "WARNING: dataSize ${DATA_SIZE} is larger than the pool (${have} bytes), but there is no free space to grow it (keeping ${RESERVE_PERCENT}% of the file system free); keeping ${have} bytes"
      return 0
    fi
    log "WARNING: dataSize ${DATA_SIZE} does not fit into the free space; growing only to ${target} bytes"
  fi
  log "growing ${DATA_FILE} from ${have} to ${target} bytes"
  if ! fallocate -l "$target" "$DATA_FILE"; then
    log "WARNING: cannot grow ${DATA_FILE} to ${target} bytes; keeping the pool as it is"
    return 0
  fi
  dev="$(losetup -j "$DATA_FILE" | sed -n '1s/:.*//p')"
  [[ -n "$dev" ]] || return 0
  if ! losetup -c "$dev"; then
    log "WARNING: cannot refresh the size of ${dev}; the pool grows at the next boot"
    return 0
  fi
  dmsetup status "$POOL_NAME" >/dev/null 2>&1 || return 0
  sectors="$(blockdev --getsz "$dev")" || return 0
  table="$(dmsetup table "$POOL_NAME" | awk -v s="$sectors" '{ $2 = s; print }')"
  # reload + resume swaps the table of the live pool; thin devices and their data stay
  if ! dmsetup reload "$POOL_NAME" --table "$table" || ! dmsetup resume "$POOL_NAME"; then
    dmsetup clear "$POOL_NAME" >/dev/null 2>&1 || true
    log "WARNING: cannot load the grown table of ${POOL_NAME}; the pool keeps its size until the next boot"
    return 0
  fi
  log "grew thin-pool ${POOL_NAME} to ${sectors} sectors"
}

main() {
  validate_settings
  require_tools
  require_kernel

  if dmsetup status "$POOL_NAME" >/dev/null 2>&1; then
    if [[ -e "$DATA_FILE" ]]; then
      grow_if_configured
    fi
    log "thin-pool ${POOL_NAME} is active, nothing to do"
    enable_containerd_dropin
    restart_containerd_unless_devmapper ok
    return 0
  fi

  mkdir -p "$DM_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${DM_DIR}/.lock"
    flock 9
    if dmsetup status "$POOL_NAME" >/dev/null 2>&1; then
      log "thin-pool ${POOL_NAME} was created concurrently, nothing to do"
      enable_containerd_dropin
      return 0
    fi
  fi

  if [[ -e "$DATA_FILE" && -e "$METADATA_FILE" ]]; then
    log "re-attaching the existing backing files in ${DM_DIR} (nothing is truncated or wiped)"
    reserve_existing
    grow_if_configured
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
  # error_if_no_space: a full pool fails writes at once instead of queueing them for a minute
  table="0 ${sectors} thin-pool ${meta_dev} ${data_dev} ${DATA_BLOCK_SECTORS} ${LOW_WATER_MARK} 1 error_if_no_space"
  log "creating thin-pool ${POOL_NAME}: ${table}"
  dmsetup create "$POOL_NAME" --table "$table" || die "dmsetup create ${POOL_NAME} failed"
  log "thin-pool ${POOL_NAME} is ready"
  enable_containerd_dropin
  restart_containerd_unless_devmapper ok
}

main "$@"
