#!/bin/sh
# /init of Hatch's `minimal` image: a tiny PID 1 that brings up the
# network, applies a NoCloud seed (a small subset of cloud-init, see
# docs/images.md), starts dropbear and hatch-agent and then idles, answering
# shutdown requests (Ctrl-Alt-Del, ACPI power button, halt/poweroff/reboot).
. /lib/hatch/common.sh

SEED_DIR=/var/lib/hatch/seed
# The seed's user-data as cloud-init reads it: gunzipped when compressed.
# The seed's own copy stays byte for byte in $SEED_DIR.
USER_DATA=/var/lib/hatch/user-data
HOST_KEY=/etc/dropbear/dropbear_ed25519_host_key
AGENT=/usr/sbin/hatch-agent

# Items of the top-level YAML list `$1` in file `$2`. Understands the block
# form (`key:` then `- item` lines) and a single scalar (`key: value`);
# anything fancier is outside the supported subset.
yaml_list() {
    awk -v key="$1" '
        function unquote(s) {
            sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s)
            if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) s = substr(s, 2, length(s) - 2)
            return s
        }
        inlist && /^[ \t]*-[ \t]/ { item = $0; sub(/^[ \t]*-[ \t]+/, "", item); print unquote(item); next }
        inlist && /^[ \t]*(#.*)?\r?$/ { next }
        inlist { inlist = 0 }
        index($0, key ":") == 1 {
            rest = unquote(substr($0, length(key) + 2))
            if (rest == "") inlist = 1
            else if (rest !~ /^[\[{]/) print rest
        }
    ' "$2"
}

yaml_scalar() {
    yaml_list "$1" "$2" | head -n 1
}

apply_hostname() {
    name=$1
    case "$name" in
        ""|-*|*[!A-Za-z0-9.-]*) log "ignoring invalid local-hostname"; return 0 ;;
    esac
    hostname "$name"
    echo "$name" >/etc/hostname
    echo "127.0.1.1 $name" >>/etc/hosts
}

# Root's authorized_keys from meta-data `public-keys` and user-data
# `ssh_authorized_keys`; only lines that look like OpenSSH public keys.
install_keys() {
    mkdir -p /root/.ssh
    chmod 700 /root/.ssh
    {
        [ -f "$SEED_DIR/meta-data" ] && yaml_list public-keys "$SEED_DIR/meta-data"
        [ -f "$USER_DATA" ] && yaml_list ssh_authorized_keys "$USER_DATA"
    } | grep -E '^(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+' >>/root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
}

# cloud-init decompresses gzip user-data (magic 1f 8b) before looking at
# it; so do we. Anything else, or a damaged archive, is used as it is.
decompress_user_data() {
    raw="$SEED_DIR/user-data"
    [ -f "$raw" ] || return 0
    if [ "$(head -c 2 "$raw" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
        if gunzip -c "$raw" >"$USER_DATA" 2>/dev/null; then
            log "user-data was gzip-compressed"
            return 0
        fi
        log "user-data looks gzip-compressed but does not decompress; using it as is"
    fi
    cp "$raw" "$USER_DATA"
}

read_seed() {
    device=$(find_label CIDATA 5)
    [ -n "$device" ] || device=$(find_label cidata 1)
    if [ -z "$device" ]; then
        log "no CIDATA seed disk"
        return 0
    fi
    mkdir -p /run/cidata "$SEED_DIR"
    if ! mount -t vfat -o ro "$device" /run/cidata; then
        log "could not mount seed disk $device"
        return 0
    fi
    for file in meta-data user-data network-config vendor-data; do
        [ -f "/run/cidata/$file" ] && cp "/run/cidata/$file" "$SEED_DIR/$file"
    done
    umount /run/cidata
    log "read seed from $device"
    decompress_user_data
    [ -f "$SEED_DIR/meta-data" ] && apply_hostname "$(yaml_scalar local-hostname "$SEED_DIR/meta-data")"
    install_keys
}

start_network() {
    ip link set lo up
    [ -e /sys/class/net/eth0 ] || { log "no eth0"; return 0; }
    ip link set eth0 up
    # Foreground until a lease (or ~10 s), then udhcpc keeps renewing in the background.
    udhcpc -i eth0 -s /etc/udhcpc.script -t 5 -T 2 -b -S -x "hostname:$(hostname)" >/dev/null 2>&1
}

start_ssh() {
    mkdir -p /etc/dropbear
    [ -f "$HOST_KEY" ] || dropbearkey -t ed25519 -f "$HOST_KEY" >/dev/null 2>&1
    dropbear -s -r "$HOST_KEY" -p 22 -P /run/dropbear.pid
}

# Without udev nobody makes /dev/virtio-ports/<name>: link each named
# virtio-serial port there, as udev would. Ports appear when the host
# announces them, so this runs before every start of the agent.
link_virtio_ports() {
    for port in /sys/class/virtio-ports/*; do
        [ -f "$port/name" ] || continue
        name=$(cat "$port/name")
        [ -n "$name" ] || continue
        mkdir -p /dev/virtio-ports
        ln -sf "../${port##*/}" "/dev/virtio-ports/$name"
    done
}

# The agent's hello is the VM's readiness, so it starts once SSH is up (a
# VM with a network is SSH-able when ready). It is restarted when it dies.
start_agent() {
    [ -x "$AGENT" ] || { log "no $AGENT"; return 0; }
    (
        while :; do
            link_virtio_ports
            log "hatch-agent started"
            "$AGENT" >/dev/console 2>&1 </dev/null
            log "hatch-agent exited with status $?; restarting in 1 s"
            sleep 1
        done
    ) &
}

run_user_data() {
    script="$USER_DATA"
    [ -f "$script" ] || return 0
    [ "$(head -c 2 "$script")" = "#!" ] || return 0
    chmod 700 "$script"
    log "running user-data"
    ( "$script" >>/var/log/user-data.log 2>&1; log "user-data exited with $?" ) &
}

# The button driver turns an ACPI power-button event into an input event;
# any event on that device means "power off".
watch_power_button() {
    for event in /sys/class/input/event*; do
        [ -e "$event/device/name" ] || continue
        case "$(cat "$event/device/name")" in
            *"Power Button"*)
                ( dd if="/dev/input/${event##*/}" of=/dev/null bs=24 count=1 2>/dev/null && kill -USR2 1 ) &
                ;;
        esac
    done
}

shutdown_now() {
    log "shutting down"
    [ -f /run/dropbear.pid ] && kill "$(cat /run/dropbear.pid)" 2>/dev/null
    sync
    # Firecracker (reboot=k) and QEMU (-no-reboot) end the VM on reboot.
    reboot -f
}

mount_basics
trap shutdown_now INT TERM USR1 USR2
# Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
echo 0 >/proc/sys/kernel/ctrl-alt-del
load_modules $(cat /etc/hatch/modules)
hostname hatch-minimal
read_seed
start_network
start_ssh
start_agent
watch_power_button
run_user_data
log "boot finished"
echo "hatch-minimal: ready" >/dev/console

beat=0
heartbeat=$(cmdline_value hatch.heartbeat)
while :; do
    if [ "$heartbeat" = 1 ]; then
        beat=$((beat + 1))
        echo "hatch-heartbeat $beat" >/dev/console
    fi
    sleep 1
done
