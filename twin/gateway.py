"""The twin's ingress gateway: an HTTP/1.1 reverse proxy that routes by Host header like istio-ingressgateway.

Behaviour copied from Envoy as Istio configures it:

* the route is chosen by the request's Host (port stripped, case-insensitive);
* no route for the host -> ``404`` with an empty body (Envoy response flag ``NR``);
* the backend refuses the connection -> ``503`` with body ``no healthy upstream``; other upstream failures -> ``503``
  ``upstream connect error or disconnect/reset before headers...``, an upstream timeout -> ``504``
  ``upstream request timeout``;
* otherwise method, path + query, headers (minus hop-by-hop) and body are proxied, the Host header is kept, and the
  backend's status, headers and body are relayed with ``server: istio-envoy`` and
  ``x-envoy-upstream-service-time: <ms>`` added.

Callers use ``requests`` with a ``Host`` header, e.g.
``requests.post(gateway.url + "/v1/models/m:predict", headers={"Host": "m.default.example.com"}, json=...)``.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional, Set, Tuple
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# RFC 9110 7.6.1 connection-specific fields, plus the proxy ones; never forwarded in either direction.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})
NO_HEALTHY_UPSTREAM = b"no healthy upstream"
UPSTREAM_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
UPSTREAM_TIMEOUT = b"upstream request timeout"


def normalize_host(host: Optional[str]) -> str:
    """``"Sklearn-Iris.Default.example.com:80"`` -> ``"sklearn-iris.default.example.com"``; IPv6 literals kept."""
    host = (host or "").strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _parse_backend(url: str) -> Tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"backend URL must be http://HOST[:PORT][/prefix], got {url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], gateway: "Gateway"):
        self.gateway = gateway
        self._conns: Set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _ProxyHandler)

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut idle keep-alive client connections so their handler threads end now."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "istio-envoy"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    server: _Server

    # ---- plumbing ----------------------------------------------------------------------------------------------

    def log_message(self, fmt: str, *args) -> None:  # quiet: debug-level access log
        log.debug("%s %s", self.address_string(), fmt % args)

    def version_string(self) -> str:
        return "istio-envoy"

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers are dropped
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _reply(self, status: int, body: bytes = b"", headers: Optional[list] = None,
               upstream_ms: Optional[int] = None, content_length: Optional[str] = None) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        if upstream_ms is not None:
            self.send_header("x-envoy-upstream-service-time", str(upstream_ms))
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            # HEAD: relay the length the backend announced; otherwise the length of what is sent
            self.send_header("Content-Length", content_length if content_length is not None else str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def _local_reply(self, status: int, body: bytes) -> None:
        headers = [("content-type", "text/plain")] if body else []
        self._reply(status, body, headers)

    # ---- proxying ----------------------------------------------------------------------------------------------

    def _proxy(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._local_reply(400, b"Bad Request")
            return
        backend = self.server.gateway.backend_for(self.headers.get("Host"))
        if backend is None:
            self._local_reply(404, b"")  # Envoy NR: no route configured for this host
            return
        host, port, prefix = backend

        forward = []
        connection_tokens = {t.strip().lower() for t in (self.headers.get("Connection") or "").split(",")}
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in connection_tokens or lname in ("content-length", "expect"):
                continue
            if lname == "x-forwarded-for":
                continue  # re-added below with the client appended, as Envoy does
            forward.append((name, value))
        names = {n.lower() for n, _ in forward}
        xff = ", ".join(self.headers.get_all("X-Forwarded-For") or [])
        forward.append(("x-forwarded-for", f"{xff}, {self.client_address[0]}" if xff else self.client_address[0]))
        if "x-forwarded-proto" not in names:
            forward.append(("x-forwarded-proto", "http"))
        if "x-request-id" not in names:
            forward.append(("x-request-id", str(uuid.uuid4())))
        if body or self.command in ("POST", "PUT", "PATCH"):
            forward.append(("Content-Length", str(len(body))))

        conn = http.client.HTTPConnection(host, port, timeout=self.server.gateway.upstream_timeout)
        started = time.monotonic()
        try:
            conn.putrequest(self.command, prefix + self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in forward:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            upstream_ms = int((time.monotonic() - started) * 1000)
            resp_body = resp.read()
            resp_headers = [(n, v) for n, v in resp.getheaders()
                            if n.lower() not in HOP_BY_HOP and n.lower() not in ("content-length", "server", "date")]
            head_length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        except ConnectionRefusedError:
            self._local_reply(503, NO_HEALTHY_UPSTREAM)
            return
        except (socket.timeout, TimeoutError):
            self._local_reply(504, UPSTREAM_TIMEOUT)
            return
        except (OSError, http.client.HTTPException) as exc:
            log.debug("upstream %s:%s failed: %r", host, port, exc)
            self._local_reply(503, UPSTREAM_RESET)
            return
        finally:
            conn.close()
        self._reply(resp.status, resp_body, resp_headers, upstream_ms=upstream_ms, content_length=head_length)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy


class Gateway:
    """Host-routing HTTP gateway on ``host:port`` (port 0: a free one). Thread-safe; also a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, upstream_timeout: float = 60.0):
        self.host = host
        self.port = port
        self.upstream_timeout = upstream_timeout
        self._routes: Dict[str, str] = {}
        self._backends: Dict[str, Tuple[str, int, str]] = {}
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"gateway already running on {self.url}")
            server = _Server((self.host, self.port), self)
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"twin-gateway-{self.port}", daemon=True)
            self._thread.start()
        log.debug("gateway listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the listening socket and open client connections; idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> "Gateway":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- routes ------------------------------------------------------------------------------------------------

    def set_route(self, host: str, backend_url: str) -> None:
        """Route requests whose Host is ``host`` (any port, any case) to ``backend_url`` (``http://h:p[/prefix]``)."""
        key = normalize_host(host)
        if not key:
            raise ValueError("route host must not be empty")
        backend = _parse_backend(backend_url)
        with self._lock:
            self._routes[key] = backend_url
            self._backends[key] = backend

    def remove_route(self, host: str) -> None:
        key = normalize_host(host)
        with self._lock:
            self._routes.pop(key, None)
            self._backends.pop(key, None)

    def routes(self) -> Dict[str, str]:
        """A copy of the routes: normalized host -> backend URL."""
        with self._lock:
            return dict(self._routes)

    def backend_for(self, host_header: Optional[str]) -> Optional[Tuple[str, int, str]]:
        key = normalize_host(host_header)
        with self._lock:
            return self._backends.get(key)

    def __repr__(self) -> str:
        return f"Gateway({self.url}, running={self.running}, routes={len(self.routes())})"
