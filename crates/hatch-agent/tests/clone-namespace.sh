#!/bin/sh
# Runs hatch-agent the way a guest restored from another VM's snapshot
# would find itself, inside fresh network, UTS, mount and pid namespaces
# (nothing of the machine's own is changed; the agent is pid 1 there and
# dies with this script's unshare process):
#   eth0 (a veth) with the parent's MAC 52:54:00:00:00:01, up, addresses
#   10.9.9.9/16 and 192.168.50.2/24, default route via 10.9.0.1;
#   hostname "parent"; ETC (a directory of the test's) bound over /etc;
#   an empty tmpfs on /run (no networkd or D-Bus of the machine's);
#   /sys remounted so that /sys/class/net shows this namespace's links;
#   with IP_BINARY, that program bound over the `ip` the agent will find.
# The SetIdentity tests of crates/hatch-agent and tests/integration use it.
# usage: clone-namespace.sh ETC AGENT SOCKET [IP_BINARY]
set -eu
if [ "${1:-}" != --inside ]; then
    exec unshare --net --uts --mount --pid --mount-proc --kill-child -- sh "$0" --inside "$@"
fi
etc=$2 agent=$3 socket=$4 ip_binary=${5:-}
mount -t sysfs sysfs /sys
ip link add eth0 type veth peer name peer0
ip link set dev eth0 address 52:54:00:00:00:01
ip link set dev peer0 up
ip link set dev eth0 up
ip -4 addr add 10.9.9.9/16 dev eth0
ip -4 addr add 192.168.50.2/24 dev eth0
ip -4 route add default via 10.9.0.1 dev eth0
hostname parent
if [ -n "$ip_binary" ]; then
    for ip_path in /sbin/ip /usr/sbin/ip /bin/ip /usr/bin/ip; do
        [ -f "$ip_path" ] && break
    done
    mount --bind "$ip_binary" "$ip_path"
fi
# A private /run: the agent would otherwise find the machine's networkd
# (/run/systemd/netif, its D-Bus socket) and ask it to reconfigure "eth0".
mount -t tmpfs tmpfs /run
# Last: the programs above may need the machine's /etc (the loader's cache).
mount --bind "$etc" /etc
exec "$agent" --connect-unix "$socket"
