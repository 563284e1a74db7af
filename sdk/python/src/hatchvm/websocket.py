"""A small WebSocket client (RFC 6455) over the SDK's own connections, for
the streaming form of exec: standard library only, like the rest."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from typing import Dict, Optional, Tuple

from .errors import HatchError, error_from_response

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def _mask(data: bytes, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte key, as one big integer (fast in pure Python)."""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WebSocket:
    """One upgraded connection: :meth:`send` and :meth:`recv` whole messages."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self._sock = sock
        self._buffer = leftover
        self.closed = False

    @classmethod
    def connect(cls, sock: socket.socket, host: str, path: str, headers: Dict[str, str]) -> "WebSocket":
        """Sends the upgrade on a connected socket; an error answer raises the mapped exception."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        ws = cls(sock)
        head = ws._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, _, header_text = head.partition("\r\n")
        answer = {}
        for line in header_text.split("\r\n"):
            name, _, value = line.partition(":")
            answer[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ")[1]) if " " in status_line else 0
        if status != 101:
            length = int(answer.get("content-length", "0") or 0)
            body = ws._read_exact(length) if length else b""
            sock.close()
            raise error_from_response(status, body, answer.get("retry-after"))
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if answer.get("sec-websocket-accept") != accept:
            sock.close()
            raise HatchError("the daemon answered the WebSocket upgrade with a wrong Sec-WebSocket-Accept")
        return ws

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise HatchError("the connection closed in the middle of a WebSocket message")
        self._buffer += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        """One frame, masked as a client's must be."""
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self._sock.sendall(header + mask + _mask(payload, mask))

    def recv(self) -> Tuple[int, bytes]:
        """The next data message (TEXT or BINARY), or (CLOSE, reason); pings are answered."""
        message, opcode = b"", 0
        while True:
            first, second = self._read_exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            mask: Optional[bytes] = self._read_exact(4) if second & 0x80 else None
            payload = self._read_exact(n)
            if mask:
                payload = _mask(payload, mask)
            frame_opcode = first & 0x0F
            if frame_opcode == PING:
                self.send(PONG, payload)
                continue
            if frame_opcode == PONG:
                continue
            if frame_opcode == CLOSE:
                self.closed = True
                return CLOSE, payload
            if frame_opcode:
                opcode = frame_opcode
            message += payload
            if first & 0x80:
                return opcode, message

    def close(self) -> None:
        if not self.closed:
            try:
                self.send(CLOSE, struct.pack("!H", 1000))
            except OSError:
                pass
            self.closed = True
        self._sock.close()
