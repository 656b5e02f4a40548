"""The front door of the twin's API: a TLS proxy in front of kube-apiserver that logs every request and injects
the API faults.

Clients of the twin's kubeconfig (the suite, kubectl, helm) go through it; the control plane and the stack's
processes talk to kube-apiserver directly. It terminates TLS with a certificate of the cluster CA and forwards
each request with its headers unchanged: authentication is by bearer token, which passes through, so every
request reaches the API server as the client's own identity. Faults:
- api-flaky:RATE  that fraction of requests (health checks excepted) is answered 500 InternalError or
  429 TooManyRequests (with Retry-After), as an overloaded API server answers;
- watch-drop      a watch without a resourceVersion ends after its first event; a watch that resumes from a
  resourceVersion gets an ERROR event 410 Expired, as after an etcd compaction.
Upgraded connections (exec, port-forward, attach) are tunnelled as they are.
"""
from __future__ import annotations

import http.client
import http.server
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import weakref
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from twin.forwarder import relay

log = logging.getLogger("twin.faultproxy")

_WRITE_VERBS = {"create", "update", "patch", "apply", "delete", "deletecollection"}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade"}
_HEALTH = ("/healthz", "/readyz", "/livez", "/version")


@dataclass
class RequestEntry:
    method: str
    path: str
    verb: str                   # get list watch create update patch apply delete deletecollection
    resource: str               # plural ("deployments/status"), "discovery", "healthz", "" when unroutable
    namespace: str | None = None
    name: str | None = None
    status: int = 0
    dry_run: bool = False
    field_manager: str | None = None
    time: float = field(default_factory=time.time)


class RequestLog:
    """Every request the proxy answered."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: list[RequestEntry] = []

    def add(self, entry: RequestEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[RequestEntry]:
        with self._lock:
            return list(self._entries)

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for e in self.entries():
            out[(e.verb, e.resource)] = out.get((e.verb, e.resource), 0) + 1
        return out

    def writes(self, include_dry_run: bool = False) -> int:
        return sum(1 for e in self.entries() if e.verb in _WRITE_VERBS and 200 <= e.status < 300
                   and (include_dry_run or not e.dry_run))

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class ApiFaults:
    flaky_rate: float = 0.0
    watch_drop: bool = False
    # The API server as before Kubernetes 1.27 (stack-facts-3.md §2.1): no SelfSubjectReview in authentication.k8s.io's
    # discovery, and a 404 for the resource, as for any resource a server does not serve.
    no_self_subject_review: bool = False


AUTHENTICATION_DISCOVERY = re.compile(r"^/apis/authentication\.k8s\.io/v1(alpha1|beta1)?/?$")
SELF_SUBJECT_REVIEW = "selfsubjectreviews"


def classify(method: str, path: str, query: dict, content_type: str = "") -> RequestEntry:
    """verb, resource, namespace and name of a request, the way the API server's request info reads a path."""
    entry = RequestEntry(method, path, method.lower(), "")
    parts = [p for p in urlsplit(path).path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        entry.resource = "healthz" if urlsplit(path).path in _HEALTH else "discovery"
        entry.verb = "get"
        return entry
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if not rest:
        entry.resource, entry.verb = "discovery", "get"
        return entry
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else "")
    if resource == "namespaces" and namespace is None and name:
        namespace = name
    entry.resource = f"{resource}/{sub}" if sub else resource
    entry.namespace, entry.name = namespace, name
    watching = query.get("watch", "").lower() in ("1", "true")
    entry.verb = {"GET": "watch" if watching else ("get" if name else "list"), "POST": "create", "PUT": "update",
                  "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
    if method == "PATCH":   # server-side apply is a PATCH of this content type (the API server's audit verb "apply")
        entry.verb = "apply" if content_type.startswith("application/apply-patch") else "patch"
    entry.dry_run = query.get("dryRun") == "All"
    entry.field_manager = query.get("fieldManager")
    return entry


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, ca_file: str, cert_file: str, key_file: str,
                 connect=None, listen_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._connect = connect           # how to open the upstream socket (inside the twin's network namespace)
        self.request_log = RequestLog()
        self.faults = ApiFaults()
        self.server_version: dict = {}
        self._upstream_ctx = ssl.create_default_context(cafile=ca_file)
        self._upstream_ctx.check_hostname = False     # the node IP is in the certificate; the CA is what matters
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_file, key_file)
        server_ctx.set_alpn_protocols(["http/1.1"])
        proxy = self

        class Handler(_Handler):
            owner = proxy

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, addr = self.socket.accept()
                return server_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                log.debug("fault proxy: connection from %s failed", client_address, exc_info=True)

        self._server = Server((listen_host, 0), Handler)
        self.host, self.port = self._server.server_address[:2]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # The connections to the API server that relays hold (a watch stays open for minutes): cut at stop, or the
        # API server's graceful shutdown would wait up to 60 s for them to end.
        self._upstreams: weakref.WeakSet = weakref.WeakSet()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def upstream_connection(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(*self.upstream, context=self._upstream_ctx, timeout=3600)
        if self._connect is not None:
            conn._create_connection = self._connect
        self._upstreams.add(conn)
        return conn

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="twin-fault-proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for upstream in list(self._upstreams):
            sock = upstream.sock if isinstance(upstream, http.client.HTTPConnection) else upstream
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)     # wakes the relay blocked reading it; the relay closes it
                except OSError:
                    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, fmt, *args):  # noqa: A002
        log.debug("fault proxy %s", fmt % args)

    def setup(self):
        super().setup()
        self._conn: http.client.HTTPSConnection | None = None

    def finish(self):
        if self._conn is not None:
            self._conn.close()
        super().finish()

    def do_GET(self):  # noqa: N802
        self._forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _forward(self) -> None:
        proxy = self.owner
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
        entry = classify(self.command, self.path, query, self.headers.get("Content-Type") or "")
        proxy.request_log.add(entry)      # logged as it arrives: a watch streams on; its status is set once known
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.headers.get("Upgrade"):
                entry.status = 101
                self._tunnel(body)
                return
            if entry.resource != "healthz" and proxy.faults.flaky_rate and random.random() < proxy.faults.flaky_rate:
                entry.status = self._transient_error()
                return
            if proxy.faults.no_self_subject_review and entry.resource == SELF_SUBJECT_REVIEW:
                entry.status = 404
                self._send_status(404, "NotFound", "the server could not find the requested resource")
                return
            if proxy.faults.no_self_subject_review and self.command == "GET" \
                    and AUTHENTICATION_DISCOVERY.match(urlsplit(self.path).path):
                entry.status = self._without_self_subject_review(body)
                return
            if entry.verb == "watch" and proxy.faults.watch_drop:
                rv = query.get("resourceVersion")
                if rv not in (None, "", "0"):
                    entry.status = self._expired(rv)
                    return
            self._relay(body, entry, cut_after_first_event=entry.verb == "watch" and proxy.faults.watch_drop)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except OSError as e:
            entry.status = 502
            self._send_status(502, "ServiceUnavailable", f"the twin's API server is unreachable: {e}")

    def _headers_out(self) -> dict:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
        headers["Host"] = f"{self.owner.upstream[0]}:{self.owner.upstream[1]}"
        return headers

    def _relay(self, body: bytes | None, entry: RequestEntry, cut_after_first_event: bool) -> None:
        if self._conn is None:
            self._conn = self.owner.upstream_connection()
        try:
            self._conn.request(self.command, self.path, body=body, headers=self._headers_out())
            resp = self._conn.getresponse()
        except (http.client.HTTPException, OSError):
            self._conn.close()          # a stale keep-alive connection: one fresh attempt
            self._conn = self.owner.upstream_connection()
            self._conn.request(self.command, self.path, body=body, headers=self._headers_out())
            resp = self._conn.getresponse()
        entry.status = resp.status
        self.send_response_only(resp.status, resp.reason)
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        chunked = not no_body and (resp.getheader("Transfer-Encoding", "").lower() == "chunked" or
                                   resp.getheader("Content-Length") is None)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP and not (chunked and k.lower() == "content-length"):
                self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not chunked:
            data = resp.read()
            if not no_body:
                self.wfile.write(data)
            return
        try:
            while True:
                data = resp.read1(65536) if not cut_after_first_event else resp.readline()
                if not data:
                    break
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                if cut_after_first_event and data.strip():
                    self._conn.close()       # the watch is dropped: the upstream stream goes with it
                    self._conn = None
                    break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            if cut_after_first_event or self.owner._stopping.is_set():
                self.close_connection = True

    def _without_self_subject_review(self, body: bytes | None) -> int:
        """authentication.k8s.io's discovery (an APIResourceList) without selfsubjectreviews."""
        if self._conn is None:
            self._conn = self.owner.upstream_connection()
        self._conn.request(self.command, self.path, body=body, headers=self._headers_out())
        resp = self._conn.getresponse()
        data = resp.read()
        if resp.status == 200:
            doc = json.loads(data)
            doc["resources"] = [r for r in doc.get("resources") or [] if r.get("name") != SELF_SUBJECT_REVIEW]
            data = json.dumps(doc).encode()
        self.send_response_only(resp.status, resp.reason)
        self.send_header("Content-Type", resp.getheader("Content-Type") or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return resp.status

    def _transient_error(self) -> int:
        if random.random() < 0.5:
            self._send_status(429, "TooManyRequests", "the server has received too many requests and has asked us "
                                                      "to try again later", retry_after=1)
            return 429
        self._send_status(500, "InternalError", "Internal error occurred: the twin's API fault (api-flaky)")
        return 500

    def _expired(self, rv: str) -> int:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": f"too old resource version: {rv}", "reason": "Expired", "code": 410}
        data = json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"
        self.send_response_only(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
        return 200

    def _send_status(self, code: int, reason: str, message: str, retry_after: int | None = None) -> None:
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": message, "reason": reason, "code": code}).encode()
        self.send_response_only(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body)

    def _tunnel(self, body: bytes | None) -> None:
        """exec / attach / port-forward: forward the upgrade request, then copy bytes both ways."""
        connect = self.owner._connect or socket.create_connection
        upstream = self.owner._upstream_ctx.wrap_socket(connect(self.owner.upstream))
        self.owner._upstreams.add(upstream)
        head = f"{self.command} {self.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in self.headers.items() if k.lower() != "host")
        head += f"Host: {self.owner.upstream[0]}:{self.owner.upstream[1]}\r\n\r\n"
        upstream.sendall(head.encode() + (body or b""))
        client = self.connection
        self.close_connection = True
        try:
            relay(client, upstream)       # a stream (exec, port-forward) may stay idle as long as it likes
        finally:
            upstream.close()
