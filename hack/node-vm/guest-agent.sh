#!/usr/bin/env bash
# The node VM tests' agent (installed as /usr/local/sbin/kata-node-test). Runs inside the VM after
# containerd started, does what the boot's phase (kernel command line kata_test=<phase>) asks,
# writes its findings to /var/lib/kata-node-test/results/<phase>/ and powers the VM off. The host
# (tests/node_vm.rs) reads the results back from the disk image and decides; this script asserts
# nothing. Phases:
#   first-boot     pool, containerd, a devmapper snapshot with a file written into it
#   reboot         after a clean reboot: the file; then a second file, and the host kills the VM
#   after-kill     after the unclean stop: both files; then a raised dataSize, then fc removed
#   after-removal  after a reboot without fc
#   faults         dm_thin_pool hidden, then a full disk, then both fixed, then a full pool
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

phase=$(sed -n 's/.*kata_test=\([a-z-]*\).*/\1/p' /proc/cmdline)
base=/var/lib/kata-node-test
out=$base/results/$phase
mkdir -p "$out"
exec > >(tee -a "$out/agent.log") 2>&1
MNT=/mnt/kata-test

fact() { echo "$1=$2" >>"$out/facts"; }
say() { echo "kata-node-test[$phase]: $*"; }

wait_containerd() {
  local _
  for _ in $(seq 1 120); do
    if ctr version >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

plugin_status() { # TYPE ID
  ctr plugins ls 2>/dev/null | awk -v t="$1" -v id="$2" '$1 == t && $2 == id { print $NF }'
}

record_state() { # SUFFIX
  local s=${1:+-$1}
  journalctl -b -o cat -u kata-devmapper.service >"$out/devmapper$s.journal" 2>&1
  ctr plugins ls >"$out/plugins$s" 2>&1
  fact "devmapper_plugin$s" "$(plugin_status io.containerd.snapshotter.v1 devmapper)"
  fact "overlayfs_plugin$s" "$(plugin_status io.containerd.snapshotter.v1 overlayfs)"
  # the CRI plugin serves the kubelet: every pod on the node needs it
  fact "cri_plugin$s" "$(plugin_status io.containerd.grpc.v1 cri)"
  fact "unit_result$s" "$(systemctl show -P Result kata-devmapper.service)"
  fact "unit_active$s" "$(systemctl show -P ActiveState kata-devmapper.service)"
  fact "containerd_active$s" "$(systemctl is-active containerd.service)"
  fact "containerd_start_mono$s" "$(systemctl show -P ExecMainStartTimestampMonotonic containerd.service)"
  fact "unit_exit_mono$s" "$(systemctl show -P ExecMainExitTimestampMonotonic kata-devmapper.service)"
  dmsetup status devpool >"$out/dmsetup-status$s" 2>&1
  fact "pool_table$s" "$(dmsetup table devpool 2>/dev/null)"
  # the pool as the node labeler reads it: the size (512-byte sectors) of the dm device named devpool
  fact "pool_sysfs_sectors$s" "$(for d in /sys/block/dm-*; do [ "$(cat "$d/dm/name" 2>/dev/null)" = devpool ] && cat "$d/size"; done)"
  fact "files$s" "$(cd /var/lib/kata-devmapper 2>/dev/null && for f in *; do [ -e "$f" ] && stat -c '%n:%i:%s:%b' "$f"; done | tr '\n' ' ')"
  df -B1 --output=size,avail /var/lib | tail -n 1 | { read -r size avail; fact "fs_size$s" "$size"; fact "fs_avail$s" "$avail"; }
  local dropin=/etc/containerd/conf.d/kata-devmapper.toml state=absent
  if [ -e "$dropin" ]; then state=present; elif [ -e "$dropin.disabled" ]; then state=disabled; fi
  fact "dropin$s" "$state"
  fact "script$s" "$([ -e /opt/bin/kata-devmapper-setup.sh ] && echo present || echo absent)"
  containerd config dump >"$out/config-dump$s" 2>&1
  cp /etc/containerd/config.toml "$out/config.toml$s" 2>/dev/null
}

# Mounts snapshot KEY of SNAPSHOTTER at $MNT (prepares it first if NEW is set).
mount_snapshot() { # SNAPSHOTTER KEY [new]
  local cmd
  if [ "${3:-}" = new ]; then
    ctr snapshots --snapshotter "$1" prepare "$2" >>"$out/snapshots.log" 2>&1 || return 1
  fi
  mkdir -p "$MNT"
  # containerd 1.7's ctr prints "-o " without options for the devmapper snapshotter
  cmd=$(ctr snapshots --snapshotter "$1" mounts "$MNT" "$2" 2>>"$out/snapshots.log" | sed 's/ -o *$//') || return 1
  echo "$cmd" >>"$out/snapshots.log"
  eval "$cmd" >>"$out/snapshots.log" 2>&1
}

write_file() { # NAME BYTES-MIB
  head -c "$(($2 << 20))" /dev/urandom >"$MNT/$1" && sha256sum "$MNT/$1" | cut -d' ' -f1
}

check_file() { # NAME
  sha256sum "$MNT/$1" 2>/dev/null | cut -d' ' -f1
}

# non-fc pods: an overlayfs snapshot can be prepared, mounted and written
overlay_works() {
  local key=overlay-$phase-$RANDOM
  if mount_snapshot overlayfs "$key" new && echo ok >"$MNT/probe" && umount "$MNT"; then echo yes; else echo no; fi
}

# Waits until the unit has run again (a retry) and finished; prints its result.
wait_rerun() { # OLD-INVOCATION-ID TIMEOUT
  local _ id state
  for _ in $(seq 1 "$2"); do
    id=$(systemctl show -P InvocationID kata-devmapper.service)
    state=$(systemctl show -P ActiveState kata-devmapper.service)
    if [ "$id" != "$1" ] && [ "$state" != activating ]; then
      echo "$state"; return 0
    fi
    sleep 1
  done
  echo timeout
}

wait_plugin_ok() { # TIMEOUT
  local _
  for _ in $(seq 1 "$1"); do
    if wait_containerd && [ "$(plugin_status io.containerd.snapshotter.v1 devmapper)" = ok ]; then echo ok; return; fi
    sleep 1
  done
  plugin_status io.containerd.snapshotter.v1 devmapper
}

# What gardener-node-agent does when the OSC changes: write files/units/containerd config, reload,
# restart the units whose files changed.
apply_osc() { # NEW OLD
  nodeagent-apply -root / -osc "$base/$1" -previous "$base/$2" -containerd /usr/local/bin/containerd >>"$out/apply.log" 2>&1
  echo "nodeagent-apply $1: $?" >>"$out/apply.log"
  systemctl daemon-reload
}

finish() {
  sync
  say "done"
  systemctl poweroff --no-block
  exit 0
}

wait_containerd || say "containerd did not answer"
say "start"

case $phase in
  first-boot)
    record_state
    if mount_snapshot devmapper kata-fc-test new; then
      fact snap_mounted yes
      fact sum_first "$(write_file first 8)"
      fact sum_first_reread "$(check_file first)"
      umount "$MNT"
    else
      fact snap_mounted no
    fi
    fact overlay_works "$(overlay_works)"
    finish
    ;;
  reboot)
    record_state
    if mount_snapshot devmapper kata-fc-test; then
      fact snap_mounted yes
      fact sum_first "$(check_file first)"
      fact sum_second "$(write_file second 4)"
      sync
      # Written after the sync and not synced: may or may not survive; the pool must, either way.
      write_file unsynced 2 >/dev/null
    else
      fact snap_mounted no
    fi
    sync
    say "KATA-NODE-TEST-KILL-ME"
    sleep infinity
    ;;
  after-kill)
    record_state
    if mount_snapshot devmapper kata-fc-test; then
      fact snap_mounted yes
      fact sum_first "$(check_file first)"
      fact sum_second "$(check_file second)"
      umount "$MNT"
    else
      fact snap_mounted no
    fi
    # raised dataSize: node-agent writes the new script and restarts the unit (filePaths)
    apply_osc osc-raised.json osc-fc.json
    systemctl restart kata-devmapper.service
    record_state raised
    if mount_snapshot devmapper kata-fc-test; then
      fact sum_first_raised "$(check_file first)"
      umount "$MNT"
    fi
    # fc removed from the pool: node-agent removes the file and unit, merges the containerd config
    # (and restarts containerd, whose config changed)
    apply_osc osc-nofc.json osc-raised.json
    systemctl stop kata-devmapper.service
    systemctl restart containerd.service
    wait_containerd
    record_state removed
    fact overlay_works_removed "$(overlay_works)"
    finish
    ;;
  after-removal)
    record_state
    fact overlay_works "$(overlay_works)"
    finish
    ;;
  faults)
    # 1. no dm_thin_pool: the unit fails, containerd runs, overlayfs works
    record_state
    fact overlay_works "$(overlay_works)"
    # 2. the disk fills up, then the module appears: the next retry finds both (a retry before the
    #    module was back fails as before and is not the one waited for)
    avail=$(df -B1 --output=avail /var/lib | tail -n 1)
    fallocate -l $((avail - (16 << 20))) /var/filler
    find /lib/modules -name 'dm-thin-pool.ko*.hidden' -exec sh -c 'mv "$1" "${1%.hidden}"' _ {} \;
    inv=$(systemctl show -P InvocationID kata-devmapper.service)
    fact rerun_full "$(wait_rerun "$inv" 150)"
    record_state full
    # 3. space is back: the next retry sets the pool up and containerd picks it up
    rm -f /var/filler
    inv=$(systemctl show -P InvocationID kata-devmapper.service)
    fact rerun_fixed "$(wait_rerun "$inv" 150)"
    fact plugin_after_fix "$(wait_plugin_ok 60)"
    record_state fixed
    if mount_snapshot devmapper kata-fc-test new; then
      fact sum_fixed "$(write_file fixed 4)"
      fact sum_fixed_reread "$(check_file fixed)"
      umount "$MNT"
    fi
    # 4. the pool runs full: a thin volume larger than the pool (as kata-fc containers may have
    #    together) written until writes fail; the node's file system must not notice
    dmsetup message devpool 0 "create_thin 16777000"
    dmsetup create kata-fill --table "0 $((4 << 21)) thin /dev/mapper/devpool 16777000"
    start=$(date +%s)
    dd if=/dev/zero of=/dev/mapper/kata-fill bs=1M count=4096 oflag=direct status=none 2>"$out/fill.log"
    fact fill_rc "$?"
    fact fill_secs "$(($(date +%s) - start))"
    fact pool_status_full "$(dmsetup status devpool)"
    record_state pool-full
    fact fs_errors "$(dmesg | grep -c 'EXT4-fs error')"
    fact fs_writable "$(echo probe >"$base/probe" && sync && echo yes || echo no)"
    dmsetup remove kata-fill
    dmsetup message devpool 0 "delete 16777000"
    finish
    ;;
  *)
    say "unknown phase '$phase'"
    finish
    ;;
esac
