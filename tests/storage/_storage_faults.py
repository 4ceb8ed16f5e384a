"""A loopback HTTP proxy that injects the failures object stores show: 5xx, resets, short bodies, stalls.

It can also play an intermediary that ignores byte ranges (``ignore_range``), as some caches do.
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FaultProxy", "FAULTS"]

FAULTS = ("500", "503", "reset", "truncate", "stall")

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-length",
}

_RANGE_HEADERS = {"range", "x-ms-range"}


class FaultProxy:
    """Forwards HTTP/1.1 requests from ``127.0.0.1:<port>`` to an upstream loopback server.

    Each request fails with probability ``rate``, the failure drawn from ``faults``:

    - an HTTP status such as ``"500"``, ``"503"``, ``"429"`` or ``"403"``: answered by the proxy with that
      status, never forwarded;
    - ``"reset"``: the connection is reset (RST) without an answer;
    - ``"truncate"``: forwarded, then the answer's headers and half its body are sent and the connection
      closed (an empty body is reset instead);
    - ``"stall"``: nothing is answered for ``stall_seconds``, then the connection is closed.

    With ``only``, failures are injected only into requests whose path contains that text. Discovery
    requests (``/.well-known/...``) are forwarded untouched.

    With ``first``, the first requests (of those ``only`` selects) get these faults in order (``None``:
    none), before the random draws begin.

    With ``trickle_seconds``, every answer body (of an unfailed request) is sent in two halves that far
    apart, so that a download stays in flight for a while (for tests that kill a process mid-download).

    With ``ignore_range``, every request is forwarded without its ``Range`` (and Azure's ``x-ms-range``)
    header, so the server answers ranged reads with 200 and the whole object, as an endpoint or cache
    that ignores ``Range`` does.

    Attributes:
        requests: Requests received, per ``(method, path without query)``.
        sent_bytes: Answer body bytes sent to clients, per ``(method, path without query)`` (forwarded
            bodies, injected error bodies and the half of a truncated one; HEAD answers send none).
        injected: Failures injected, per kind.
        timeline: ``(method, path, fault, received, answered)`` per request, ``time.monotonic()`` stamps
            (``answered`` is when the last byte of the answer was sent).
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        stall_seconds: float = 5.0,
        seed: int = 0,
        only: str | None = None,
        ignore_range: bool = False,
        trickle_seconds: float = 0.0,
        first: tuple[str | None, ...] = (),
    ) -> None:
        unknown = {
            f
            for f in (*faults, *first)
            if f is not None and f not in FAULTS and not (f.isdigit() and len(f) == 3)
        }
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS} and HTTP statuses")
        self.upstream_port = upstream_port
        self.rate = rate
        self.faults = faults
        self.stall_seconds = stall_seconds
        self.only = only
        self.ignore_range = ignore_range
        self.trickle_seconds = trickle_seconds
        self._first = list(first)
        self.timeline: list[tuple[str, str, str | None, float, float]] = []
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.sent_bytes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    @property
    def store_requests(self) -> int:
        """Requests about objects: all but discovery ones (``/.well-known/...``, which databricks-sdk sends
        once when a client is configured)."""
        with self._lock:
            return sum(n for (_, path), n in self.requests.items() if not path.startswith("/.well-known/"))

    @property
    def total_sent_bytes(self) -> int:
        with self._lock:
            return sum(self.sent_bytes.values())

    def _sent(self, method: str, path: str, size: int) -> None:
        with self._lock:
            self.sent_bytes[(method, path.split("?")[0])] += size

    def _draw(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests[(method, path.split("?")[0])] += 1
            if self.only is not None and self.only not in path or path.startswith("/.well-known/"):
                return None  # discovery requests (databricks-sdk's settings probe) are not under test
            if self._first:
                fault = self._first.pop(0)
            elif self._random.random() < self.rate:
                fault = self._random.choice(self.faults)
            else:
                fault = None
            if fault is None:
                return None
            self.injected[fault] += 1
            return fault


def _reset(connection: socket.socket) -> None:
    """Close with RST instead of FIN."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            dropped = _HOP_BY_HOP | (_RANGE_HEADERS if proxy.ignore_range else set())
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            if body or self.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            for attempt in range(2):  # a kept-alive upstream connection may have been closed meanwhile
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    self.upstream.request(self.command, self.path, body=body, headers=headers)
                    response = self.upstream.getresponse()
                    data = response.read()
                    return response.status, response.reason, response.getheaders(), data
                except (ConnectionError, http.client.HTTPException):
                    self.upstream.close()
                    self.upstream = None
                    if attempt:
                        raise
            raise AssertionError("unreachable")

        def _handle(self) -> None:
            body = self._read_body()
            received = time.monotonic()
            fault = proxy._draw(self.command, self.path)
            try:
                self._answer(body, fault)
            finally:
                with proxy._lock:
                    proxy.timeline.append((self.command, self.path, fault, received, time.monotonic()))

        def _answer(self, body: bytes, fault: str | None) -> None:
            if fault == "reset" or (fault == "truncate" and self.command == "HEAD"):
                self.close_connection = True
                _reset(self.connection)
                return
            if fault is not None and fault.isdigit():
                payload = b"injected failure"
                self.send_response(int(fault))
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                    proxy._sent(self.command, self.path, len(payload))
                return
            if fault == "stall":
                proxy._stopping.wait(proxy.stall_seconds)
                self.close_connection = True
                return
            status, reason, headers, data = self._forward(body)
            if fault == "truncate" and not data:
                self.close_connection = True
                _reset(self.connection)
                return
            self.send_response(status, reason)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP or (
                    name.lower() == "content-length" and self.command == "HEAD"
                ):
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                proxy._sent(self.command, self.path, len(data) // 2)
                self.close_connection = True
                return
            if proxy.trickle_seconds and len(data) > 1:
                half = len(data) // 2
                self.wfile.write(data[:half])
                self.wfile.flush()
                proxy._sent(self.command, self.path, half)
                proxy._stopping.wait(proxy.trickle_seconds)
                data = data[half:]
            self.wfile.write(data)
            proxy._sent(self.command, self.path, len(data))

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _handle

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                if self.upstream is not None:
                    self.upstream.close()

    return Handler
