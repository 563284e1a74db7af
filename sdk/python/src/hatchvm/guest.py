"""Commands and files in a VM's guest, through its agent (``hatch-agent``):
``/vms/{id}/exec`` and ``/vms/{id}/files``. A snapshotted VM is woken by
these calls; a VM whose image has no agent raises :class:`AgentUnavailable`."""

from __future__ import annotations

import base64
import json
import shutil
from typing import (IO, Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union,
                    cast)

from .errors import HatchError, error_from_response
from .operations import endpoint
from .transport import Transport, expand, query_string
from .types import ExecExit, ExecResult, ExecStart, FileListing, FileWritten
from .websocket import BINARY, CLOSE, TEXT, WebSocket

#: The stream id byte the daemon puts before each output message.
STREAMS = {1: "stdout", 2: "stderr"}
_STATUS_OF_CODE = {"invalid_field": 400, "invalid_json": 400, "forbidden": 403, "not_found": 404,
                   "agent_unavailable": 409, "invalid_state": 409}


def output_bytes(result: ExecResult, name: str = "stdout") -> bytes:
    """``stdout`` or ``stderr`` of an exec result as bytes, whichever way it was sent."""
    text = result.get(name)
    if isinstance(text, str):
        return text.encode("utf-8")
    encoded = result.get(f"{name}_base64")
    return base64.b64decode(encoded) if isinstance(encoded, str) else b""


def _command(cmd: Sequence[str], env: Optional[Mapping[str, str]], cwd: Optional[str],
             user: Optional[str], timeout_s: Optional[float]) -> Dict[str, Any]:
    if isinstance(cmd, str):
        raise TypeError("cmd is an argv list, e.g. ['sh', '-c', 'echo hi'], not a string")
    body: Dict[str, Any] = {"cmd": list(cmd)}
    for name, value in (("env", dict(env) if env else None), ("cwd", cwd), ("user", user),
                        ("timeout_s", timeout_s)):
        if value is not None:
            body[name] = value
    return body


class ExecSession:
    """A command running over the WebSocket form of exec. Iterate it for
    ``(stream, bytes)`` pairs ("stdout" or "stderr") until it ends; then
    :attr:`exit` holds how. Closing the session kills the command."""

    def __init__(self, socket: WebSocket) -> None:
        self._socket = socket
        self._send_error: Optional[OSError] = None
        self.exit: Optional[ExecExit] = None

    def _send(self, opcode: int, payload: bytes) -> None:
        # The daemon closes right after its last message (an error, say):
        # a failed send is kept, and reading tells what the daemon said.
        if self._send_error is None:
            try:
                self._socket.send(opcode, payload)
            except OSError as err:
                self._send_error = err

    def write(self, data: Union[bytes, str]) -> None:
        """Sends bytes to the command's standard input."""
        self._send(BINARY, data.encode("utf-8") if isinstance(data, str) else data)

    def _control(self, message: Dict[str, Any]) -> None:
        self._send(TEXT, json.dumps(message).encode("utf-8"))

    def close_stdin(self) -> None:
        self._control({"type": "eof"})

    def resize(self, rows: int, cols: int) -> None:
        self._control({"type": "resize", "rows": rows, "cols": cols})

    def kill(self) -> None:
        self._control({"type": "kill"})

    def __iter__(self) -> Iterator[Tuple[str, bytes]]:
        while self.exit is None:
            opcode, payload = self._socket.recv()
            if opcode == BINARY and payload:
                yield STREAMS.get(payload[0], "stdout"), payload[1:]
            elif opcode == TEXT:
                message = json.loads(payload.decode("utf-8"))
                if message.get("type") == "exit":
                    self.exit = cast(ExecExit, message)
                    return
                body = json.dumps({"error": message}).encode("utf-8")
                raise error_from_response(_STATUS_OF_CODE.get(message.get("code"), 500), body)
            elif opcode == CLOSE:
                raise HatchError("the daemon closed the exec stream before the command ended") from self._send_error

    def wait(self) -> Tuple[bytes, bytes, ExecExit]:
        """Reads everything to the end: (stdout, stderr, exit)."""
        out: Dict[str, List[bytes]] = {"stdout": [], "stderr": []}
        for stream, data in self:
            out[stream].append(data)
        assert self.exit is not None
        return b"".join(out["stdout"]), b"".join(out["stderr"]), self.exit

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> "ExecSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class GuestMixin:
    """The :class:`~hatchvm.Client` methods for the guest agent."""

    _http: Transport
    timeout: float

    def _files_path(self, vm_id: str, path: str, **query: Any) -> str:
        return expand("/vms/{id}/files", {"id": vm_id}) + query_string({"path": path, **query})

    @endpoint("POST", "/vms/{id}/exec")
    def exec(self, vm_id: str, cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
             cwd: Optional[str] = None, user: Optional[str] = None,
             stdin: Union[str, bytes, None] = None, timeout_s: Optional[float] = None) -> ExecResult:
        """Runs ``cmd`` (an argv list, no shell) in the guest and answers when
        it has ended: exit_code (None when a signal ended it), stdout, stderr
        (see :func:`output_bytes`), timed_out, truncated. ``timeout_s``
        defaults to 60 on the daemon (at most 3600)."""
        body = _command(cmd, env, cwd, user, timeout_s)
        if isinstance(stdin, str):
            body["stdin"] = stdin
        elif stdin is not None:
            body["stdin_base64"] = base64.b64encode(stdin).decode("ascii")
        path = expand("/vms/{id}/exec", {"id": vm_id})
        wait = max(self.timeout, (timeout_s or 60.0) + 30.0)
        return cast(ExecResult, self._http.call("POST", path, body, timeout=wait)[1])

    @endpoint("GET", "/vms/{id}/exec")
    def exec_stream(self, vm_id: str, cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, user: Optional[str] = None,
                    timeout_s: Optional[float] = None, tty: bool = False, rows: Optional[int] = None,
                    cols: Optional[int] = None) -> ExecSession:
        """Starts ``cmd`` over a WebSocket: write its stdin, read its output as
        it comes, resize its terminal (``tty=True``). No timeout unless given."""
        start = cast(ExecStart, _command(cmd, env, cwd, user, timeout_s))
        if tty:
            start["tty"] = True
        if rows is not None:
            start["rows"] = rows
        if cols is not None:
            start["cols"] = cols
        socket = self._http.websocket(expand("/vms/{id}/exec", {"id": vm_id}))
        socket.send(TEXT, json.dumps(start).encode("utf-8"))
        return ExecSession(socket)

    @endpoint("PUT", "/vms/{id}/files")
    def upload_file(self, vm_id: str, path: str, data: Union[bytes, str, BinaryIO], *,
                    mode: Union[int, str, None] = None, uid: Optional[int] = None,
                    gid: Optional[int] = None) -> FileWritten:
        """Writes ``data`` (bytes, text, or a binary file streamed as read) to
        the absolute ``path`` in the guest, atomically; ``mode`` as 0o755 or "0755"."""
        if isinstance(mode, int):
            mode = format(mode, "04o")
        raw = data.encode("utf-8") if isinstance(data, str) else data
        target = self._files_path(vm_id, path, mode=mode, uid=uid, gid=gid)
        return cast(FileWritten, self._http.call("PUT", target, raw=raw, timeout=max(self.timeout, 600.0))[1])

    @endpoint("GET", "/vms/{id}/files")
    def download_file(self, vm_id: str, path: str, into: Optional[IO[bytes]] = None) -> bytes:
        """The guest file's bytes; with ``into`` (a binary file) they are
        streamed there instead and b"" is answered."""
        conn, response = self._http.open("GET", self._files_path(vm_id, path),
                                          timeout=max(self.timeout, 600.0))
        try:
            if into is None:
                return response.read()
            shutil.copyfileobj(response, into, 1 << 16)
            return b""
        finally:
            conn.close()

    def list_files(self, vm_id: str, path: str) -> FileListing:
        """A guest directory's entries (name, type, size, mode, uid, gid, modified)."""
        return cast(FileListing, self._http.call("GET", self._files_path(vm_id, path, list=True))[1])

    @endpoint("DELETE", "/vms/{id}/files")
    def delete_file(self, vm_id: str, path: str) -> None:
        self._http.call("DELETE", self._files_path(vm_id, path))
