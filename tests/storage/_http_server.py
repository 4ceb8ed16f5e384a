"""What the loopback HTTP stand-ins of the storage tests share (``_dbfs_server``, ``_hub_server``,
``_storage_oci_server``): a threaded server on a free port of ``127.0.0.1``, and a quiet HTTP/1.1 request
handler with the replies, body reading and ``Range`` answers they all make.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

__all__ = ["LoopbackServer", "ServedError", "StandInHandler"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_Server = TypeVar("_Server", bound="LoopbackServer")


class ServedError(Exception):
    """An error to answer: the HTTP status, the service's error code (if it has one) and a message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LoopbackServer:
    """A threaded HTTP server on ``127.0.0.1:<free port>``, serving from a daemon thread once started.

    Args:
        handler: The request handler class.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self: _Server) -> _Server:
        """Start serving; returns the server."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


class StandInHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler with the replies the stand-ins make; a HEAD reply carries no body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, value: object, headers: dict[str, str] | None = None) -> None:
        self._reply(200, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _body(self) -> bytes:
        """The request body, sent with ``Content-Length`` or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)

    def _data(self, data: bytes, headers: dict[str, str]) -> None:
        """Answer with ``data`` (200) or, to a GET with ``Range``, the part asked for (206); a range that
        starts past the end goes to ``_range_past_end``."""
        wanted = self.headers.get("Range")
        if not wanted or self.command != "GET":
            self._reply(200, data, headers)
            return
        first, last = _RANGE.match(wanted).groups()  # type: ignore[union-attr]
        start = int(first or 0)
        if start >= len(data):
            self._range_past_end(len(data))
            return
        stop = min(int(last) + 1 if last else len(data), len(data))
        self._reply(
            206, data[start:stop], {**headers, "Content-Range": f"bytes {start}-{stop - 1}/{len(data)}"}
        )

    def _range_past_end(self, size: int) -> None:
        """Answer a range that starts at or past the end of the ``size`` bytes asked from: 416."""
        self._reply(416, b"", {"Content-Range": f"bytes */{size}"})
