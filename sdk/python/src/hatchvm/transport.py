"""One HTTP exchange with the daemon: ``http://``, ``https://`` (optionally
with a private CA) or ``unix:/path/to.sock``, as the ``hatch`` CLI accepts.
Only the standard library, so the SDK installs anywhere."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any, BinaryIO, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

from .errors import HatchError, error_from_response
from .websocket import WebSocket

#: A request body sent as it is (application/octet-stream), streamed when it is a file.
RawBody = Union[bytes, BinaryIO, Iterable[bytes]]


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (``HATCH_HTTP_ADDR=unix:/run/hatch.sock``)."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def expand(template: str, params: Mapping[str, str]) -> str:
    """``/vms/{id}`` with ``{"id": "vm-1"}`` → ``/vms/vm-1`` (ids are escaped)."""
    path = template
    for name, value in params.items():
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    return path


def query_string(query: Optional[Mapping[str, Any]]) -> str:
    """Booleans as ``true``/``false`` and None values left out, as the API expects."""
    if not query:
        return ""
    pairs = []
    for name, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((name, str(value)))
    return "?" + urlencode(pairs) if pairs else ""


class Transport:
    def __init__(self, url: str, api_key: Optional[str], timeout: float,
                 ca_cert: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        if self.url.startswith("unix:"):
            self._unix: Optional[str] = self.url[len("unix:"):]
            self._scheme, self._netloc, self._base = "unix", "", ""
        else:
            self._unix = None
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise HatchError(f"unsupported URL {url!r}: expected http://, https:// or unix:/path")
            self._scheme, self._netloc, self._base = parts.scheme, parts.netloc, parts.path
        self._ssl = ssl.create_default_context(cafile=ca_cert) if self._scheme == "https" else None

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, timeout)
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._netloc, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(self._netloc, timeout=timeout)

    def open(self, method: str, path: str, body: Any = None,
             headers: Optional[Dict[str, str]] = None,
             timeout: Optional[float] = None,
             raw: Optional[RawBody] = None) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends the request (a JSON ``body``, or ``raw`` bytes); an error
        status raises the mapped exception. The caller reads (and closes) the answer."""
        all_headers = {"Accept": "application/json", "User-Agent": "hatchvm-python"}
        all_headers.update(self._auth())
        data: Any = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw  # a file or an iterable goes out chunked, as it is read
            all_headers["Content-Type"] = "application/octet-stream"
        all_headers.update(headers or {})
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, self._base + path, body=data, headers=all_headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise HatchError(f"{method} {self.url}{path}: {err}") from err
        if response.status >= 400:
            try:
                raw = response.read()
            finally:
                conn.close()
            raise error_from_response(response.status, raw, response.getheader("Retry-After"))
        return conn, response

    def _auth(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def websocket(self, path: str, timeout: Optional[float] = None) -> WebSocket:
        """``GET path`` upgraded to a WebSocket, on a connection of its own;
        ``timeout`` bounds each read (None: wait as long as the command runs)."""
        conn = self._connection(timeout)
        try:
            conn.connect()
        except OSError as err:
            conn.close()
            raise HatchError(f"GET {self.url}{path}: {err}") from err
        assert conn.sock is not None
        host = self._netloc or "localhost"
        return WebSocket.connect(conn.sock, host, self._base + path, self._auth())

    def call(self, method: str, path: str, body: Any = None,
             headers: Optional[Dict[str, str]] = None,
             timeout: Optional[float] = None,
             raw: Optional[RawBody] = None) -> Tuple[int, Any]:
        """One request answered with JSON (None for 204); returns (status, body)."""
        conn, response = self.open(method, path, body, headers, timeout, raw)
        try:
            raw = response.read()
        finally:
            conn.close()
        if not raw:
            return response.status, None
        if "json" in (response.getheader("Content-Type") or ""):
            return response.status, json.loads(raw.decode("utf-8"))
        return response.status, raw.decode("utf-8", "replace")

    def lines(self, method: str, path: str, headers: Optional[Dict[str, str]] = None,
              timeout: Optional[float] = None) -> Iterator[str]:
        """A streamed answer line by line (SSE, a followed console); closes when dropped."""
        conn, response = self.open(method, path, None, headers, timeout)
        try:
            while True:
                line = response.readline()
                if not line:
                    return
                yield line.decode("utf-8", "replace")
        finally:
            conn.close()
