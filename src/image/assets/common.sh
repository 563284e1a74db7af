# Shared by every Hatch initramfs /init (sourced, busybox ash).
# Kept free of build-time substitutions: the builder copies it verbatim.

export PATH=/bin
umask 022

log() {
    echo "hatch-init: $*" >/dev/console
}

# The kernel hands /init an empty tree: give it proc, sys and dev.
mount_basics() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /dev/shm /run /tmp
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
}

# The Debian cloud kernel builds virtio, vfat and friends as modules;
# modprobe resolves their dependencies from the staged modules.dep.
load_modules() {
    for module in "$@"; do
        modprobe "$module" 2>/dev/null || log "module $module not loaded"
    done
}

# Value of `key=value` on the kernel command line, empty when absent.
cmdline_value() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$1="*) echo "${word#*=}"; return 0 ;;
        esac
    done
    return 0
}

# Block device carrying filesystem label $1 (several tries: probing is async
# for some devices), empty when none appears.
find_label() {
    tries=${2:-1}
    while [ "$tries" -gt 0 ]; do
        device=$(findfs "LABEL=$1" 2>/dev/null) && { echo "$device"; return 0; }
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] && sleep 0.2
    done
    return 0
}
