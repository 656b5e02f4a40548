"""Knative activator stand-in: `python -m twin.standins.activator`, for the activator container.

Why not the real one: knative.dev/serving's activator builds, but it proxies to queue-proxy and reports request
statistics to the autoscaler over a websocket the autoscaler then scales from; neither the real autoscaler (it also
scrapes queue-proxy's metrics) nor queue-proxy can run without containers.

What it does, as the activator does for a revision whose public Service points at it (the Knative stand-in keeps the
activator in the path, as Knative does by default for a small revision: target-burst-capacity 211 exceeds its spare
capacity):
- receives the gateway's request on :8012 with the Knative-Serving-Namespace and Knative-Serving-Revision headers the
  route sets;
- counts it (in flight, last seen, concurrency over time) for the autoscaler stand-in, which reads the counts from
  :9090/twin/stats;
- holds it until the revision has a ready endpoint (its `<revision>-private` Service), at most HOLD_SECONDS, as on a
  scale from zero; then proxies it there and relays the answer. No endpoint in time: 503, as the activator answers.
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twin.standins import meshnet, runtime
from twin.standins.runtime import Informer, Kube

log = logging.getLogger("twin.standin.activator")

PORT, STATS_PORT = 8012, 9090
HOLD_SECONDS = 300.0          # the activator holds a request for a revision at zero while it scales up
UPSTREAM_TIMEOUT = 300.0
SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host",
                  "content-length"})


class Revisions:
    """Ready endpoints of each revision's private Service, and the requests seen per revision."""

    def __init__(self, kube: Kube):
        self.slices = Informer(kube, "discovery.k8s.io/v1", "EndpointSlice", self._changed,
                               label_selector="kubernetes.io/service-name")
        self._cond = threading.Condition()
        self.stats: dict[str, dict] = {}           # "ns/revision" -> {"in_flight", "last_request", "requests"}

    def start(self) -> None:
        self.slices.start()

    def _changed(self, event_type: str, obj: dict) -> None:
        with self._cond:
            self._cond.notify_all()

    def _ready(self, namespace: str, revision: str) -> list[tuple[str, int]]:
        out = []
        for eps in self.slices.items():
            meta = eps["metadata"]
            if meta.get("namespace") != namespace or \
                    (meta.get("labels") or {}).get("kubernetes.io/service-name") != f"{revision}-private":
                continue
            port = next((p["port"] for p in eps.get("ports") or [] if p.get("port")), None)
            out += [(a, port) for ep in eps.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready")
                    for a in ep.get("addresses") or [] if port]
        return out

    def wait_endpoint(self, namespace: str, revision: str, timeout: float) -> tuple[str, int] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ready = self._ready(namespace, revision)
                if ready:
                    return random.choice(ready)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 1.0))

    def _count(self, key: str, change: int) -> None:
        """In-flight requests, and their integral over time (concurrency-seconds: the autoscaler divides its growth
        by the time between two reads for the average concurrency, as the activator's stats report it)."""
        now = time.time()
        entry = self.stats.setdefault(key, {"in_flight": 0, "last_request": 0.0, "requests": 0,
                                            "concurrency_seconds": 0.0, "since": now})
        entry["concurrency_seconds"] += entry["in_flight"] * (now - entry["since"])
        entry["since"] = entry["last_request"] = now
        entry["in_flight"] += change
        entry["requests"] += max(change, 0)

    def begin(self, key: str) -> None:
        with self._cond:
            self._count(key, +1)

    def end(self, key: str) -> None:
        with self._cond:
            self._count(key, -1)

    def snapshot(self) -> dict:
        now = time.time()
        with self._cond:
            out = json.loads(json.dumps(self.stats))
        for entry in out.values():       # the integral up to now
            entry["concurrency_seconds"] += entry["in_flight"] * (now - entry.pop("since"))
        return out


def handler_for(revisions: Revisions):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:
            log.debug(fmt, *args)

        def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _relay(self) -> None:
            ns, rev = self.headers.get("Knative-Serving-Namespace"), self.headers.get("Knative-Serving-Revision")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not ns or not rev:
                self._answer(404, b"no Knative-Serving-Namespace/-Revision header: not a revision's request")
                return
            key = f"{ns}/{rev}"
            revisions.begin(key)
            try:
                endpoint = revisions.wait_endpoint(ns, rev, HOLD_SECONDS)
                if endpoint is None:
                    self._answer(503, f"no ready endpoint of revision {key} within {HOLD_SECONDS:g}s".encode())
                    return
                conn = meshnet.upstream(endpoint, UPSTREAM_TIMEOUT)   # auto mTLS where its Pod is in the mesh
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    conn.putheader("Host", self.headers.get("Host", ""))
                    for name, value in self.headers.items():
                        if name.lower() not in SKIP:
                            conn.putheader(name, value)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    self._answer(resp.status, resp.read(),
                                 [(n, v) for n, v in resp.getheaders() if n.lower() not in SKIP])
                except (OSError, http.client.HTTPException) as exc:
                    self._answer(503, f"revision {key} at {endpoint[0]}:{endpoint[1]} failed: {exc}".encode())
                finally:
                    conn.close()
            finally:
                revisions.end(key)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay   # noqa: N815 - BaseHTTPRequestHandler's names

    return Handler


def stats_handler_for(revisions: Revisions):
    class Stats(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args) -> None:
            log.debug(fmt, *args)

        def do_GET(self) -> None:   # noqa: N802
            body = json.dumps(revisions.snapshot()).encode()
            self.send_response(200 if self.path == "/twin/stats" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Stats


def start(stop: threading.Event) -> None:
    revisions = Revisions(Kube())
    revisions.start()
    address = runtime.listen_address()
    for port, handler in ((PORT, handler_for(revisions)), (STATS_PORT, stats_handler_for(revisions))):
        server = ThreadingHTTPServer((address, port), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True, name=f"activator-{port}").start()
    log.info("activator on %s:%d, statistics on :%d", address, PORT, STATS_PORT)


if __name__ == "__main__":
    sys.exit(runtime.run(start, "activator"))
