#!/bin/sh
# /init of the initrd shipped with Hatch's `debian` image: load the virtio
# drivers the cloud kernel builds as modules, find the root filesystem by
# its label and hand over to its /sbin/init.
. /lib/hatch/common.sh

fail() {
    log "$*"
    log "cannot continue; rebooting in 5 s"
    sleep 5
    reboot -f
}

mount_basics
load_modules $(cat /etc/hatch/modules)

label=$(cmdline_value hatch.root_label)
[ -n "$label" ] || label=$(cat /etc/hatch/root-label)
device=$(find_label "$label" 50)
[ -n "$device" ] || fail "no disk with a file system labelled $label"

# Like initramfs-tools: mount read-only unless `rw` is on the command line;
# systemd remounts it read-write from /etc/fstab.
mode=ro
for word in $(cat /proc/cmdline); do
    case "$word" in ro|rw) mode=$word ;; esac
done
mkdir -p /newroot
mount -t ext4 -o "$mode" "$device" /newroot || fail "could not mount $device"
# /sbin/init is usually an absolute symlink, meaningful only inside the new root.
[ -e /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "$device has no /sbin/init"
log "root file system $device ($label, $mode)"

# Keep /dev (with /dev/pts, /dev/shm) for the real system; it mounts its own
# proc and sys.
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
