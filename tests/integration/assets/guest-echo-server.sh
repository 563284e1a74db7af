#!/bin/sh
# One client connection of the guest's test service (started per connection
# by `nc -ll -e`; stdin and stdout are the socket). Plain HTTP/1.1 requests
# are answered on the same kept-alive connection with "connection <pid>"
# (so a test can tell connections apart); an Upgrade: websocket request is
# accepted and its text frames (up to 125 bytes) are echoed until a close.
CR=$(printf '\r')
WS_GUID=258EAFA5-E914-47DA-95CA-C5AB0DC85B11

# N bytes from the socket as decimal numbers.
bytes() {
    dd bs=1 count="$1" 2>/dev/null | od -An -tu1 -v
}

websocket() {
    accept=$(printf '%s%s' "$1" "$WS_GUID" | sha1sum | cut -d' ' -f1 | xxd -r -p | base64)
    printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
    while :; do
        set -- $(bytes 2)
        [ $# -eq 2 ] || return
        first=$1
        length=$(($2 & 127))
        [ "$length" -lt 126 ] || return
        set -- $(bytes $((4 + length)))
        m0=$1 m1=$2 m2=$3 m3=$4
        shift 4
        # A ping (opcode 9) is answered with a pong (10), anything else echoed.
        [ $((first & 15)) -eq 9 ] && first=$((first + 1))
        frame="\\$(printf %o "$first")\\$(printf %o "$length")"
        i=0
        for byte in "$@"; do
            case $((i % 4)) in 0) mask=$m0 ;; 1) mask=$m1 ;; 2) mask=$m2 ;; *) mask=$m3 ;; esac
            frame="$frame\\$(printf %o $((byte ^ mask)))"
            i=$((i + 1))
        done
        printf "$frame"
        [ $((first & 15)) -eq 8 ] && return
    done
}

while IFS= read -r request_line; do
    key=
    length=0
    while IFS= read -r header; do
        header=${header%"$CR"}
        [ -z "$header" ] && break
        value=${header#*:}
        value=${value# }
        case $(echo "${header%%:*}" | tr A-Z a-z) in
            sec-websocket-key) key=$value ;;
            content-length) length=$value ;;
        esac
    done
    if [ -n "$key" ]; then
        websocket "$key"
        exit 0
    fi
    [ "$length" -gt 0 ] 2>/dev/null && dd bs=1 count="$length" of=/dev/null 2>/dev/null
    body="connection $$"
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\n\r\n%s' "${#body}" "$body"
done
