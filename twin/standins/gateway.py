"""Istio ingress gateway stand-in: `python -m twin.standins.gateway`, for the gateway Pod's istio-proxy container.

Why not the real one: the gateway is Envoy, a container image the twin cannot run; it has no xDS server either
(istiod is a stand-in too). This process does what Envoy does with what istiod would send it, read straight
from the API: the networking.istio.io Gateways that select its Pod open its listeners, and the VirtualServices
bound to those Gateways route each request.

- Listeners: a Gateway server on port N listens on the targetPort of the Service port N of a Service selecting
  this Pod (how Istio maps gateway ports), else on N; bound to the Pod IP.
- Routing: the VirtualServices whose `gateways` name a Gateway of the listener and whose `hosts` match the Host;
  their http routes in order; a match holds when its gateways, authority, uri and headers (exact, prefix, regex)
  match. The route's destination (weighted) is resolved like Envoy's EDS: the Service's EndpointSlices, ready
  endpoints only, the port matched by the Service port's name. `headers.request.set` (Host sets the authority),
  `rewrite.authority`, `rewrite.uri` apply.
- Answers as Envoy does: no route -> 404 with an empty body; no ready endpoint -> 503 "no healthy upstream"; a
  refused or reset upstream -> 503 "upstream connect error or disconnect/reset before headers..."; an upstream
  timeout -> 504 "upstream request timeout"; relayed responses carry `server: istio-envoy` and
  `x-envoy-upstream-service-time`.
"""
from __future__ import annotations

import fnmatch
import http.client
import logging
import random
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twin.standins import meshnet, runtime
from twin.standins.runtime import Informer, Kube

log = logging.getLogger("twin.standin.gateway")

ISTIO = "networking.istio.io/v1beta1"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
NO_HEALTHY_UPSTREAM = b"no healthy upstream"
UPSTREAM_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
UPSTREAM_TIMEOUT = b"upstream request timeout"
UPSTREAM_TIMEOUT_SECONDS = 60.0
CLUSTER_SUFFIX = ".svc.cluster.local"


def normalize_host(host: str | None) -> str:
    host = (host or "").strip().lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def selects(selector: dict | None, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def string_match(rule: dict | None, value: str) -> bool:
    """Istio's StringMatch: exact, prefix or (RE2, whole-string) regex."""
    if not rule:
        return True
    if "exact" in rule:
        return value == rule["exact"]
    if "prefix" in rule:
        return value.startswith(rule["prefix"])
    if "regex" in rule:
        return re.fullmatch(rule["regex"], value) is not None
    return True


def host_match(pattern: str, host: str) -> bool:
    pattern = pattern.lower()
    return pattern == "*" or fnmatch.fnmatchcase(host, pattern) if "*" in pattern else host == pattern


class Routes:
    """The gateway's view of the API: Gateways, VirtualServices, Services and EndpointSlices (informer caches)."""

    def __init__(self, kube: Kube, pod_namespace: str, pod_name: str):
        self.pod_namespace, self.pod_name = pod_namespace, pod_name
        self.labels: dict = {}
        self.container_ports: dict[str, int] = runtime.ports()
        self.gateways = Informer(kube, ISTIO, "Gateway", self._changed)
        self.virtualservices = Informer(kube, ISTIO, "VirtualService")
        self.services = Informer(kube, "v1", "Service", self._changed)
        self.slices = Informer(kube, "discovery.k8s.io/v1", "EndpointSlice")
        self.pod = Informer(kube, "v1", "Pod", self._pod_changed, namespace=pod_namespace,
                            field_selector=f"metadata.name={pod_name}")
        self.on_listeners = None          # callback(set of ports)

    def start(self) -> None:
        for informer in (self.pod, self.services, self.slices, self.virtualservices, self.gateways):
            informer.start()

    def _pod_changed(self, event_type: str, pod: dict) -> None:
        self.labels = pod["metadata"].get("labels") or {}
        self._changed(event_type, pod)

    def _changed(self, event_type: str, obj: dict) -> None:
        if self.on_listeners:
            self.on_listeners(set(self.listener_ports()))

    def my_gateways(self) -> list[dict]:
        return [g for g in self.gateways.items() if selects((g.get("spec") or {}).get("selector"), self.labels)]

    def _my_services(self) -> list[dict]:
        return [s for s in self.services.items() if s["metadata"].get("namespace") == self.pod_namespace
                and selects((s.get("spec") or {}).get("selector"), self.labels)]

    def _target_port(self, number: int) -> int:
        for svc in self._my_services():
            for port in svc["spec"].get("ports") or []:
                if port.get("port") == number:
                    target = port.get("targetPort", number)
                    if isinstance(target, str):
                        return self.container_ports.get(target, number)
                    return int(target)
        return number

    def listener_ports(self) -> dict[int, list[tuple[str, dict]]]:
        """listen port -> [(gateway "ns/name", server)]"""
        out: dict[int, list] = {}
        for gw in self.my_gateways():
            ref = f"{gw['metadata']['namespace']}/{gw['metadata']['name']}"
            for server in (gw.get("spec") or {}).get("servers") or []:
                number = int((server.get("port") or {}).get("number") or 0)
                if number and (server.get("port") or {}).get("protocol", "HTTP").upper() in ("HTTP", "HTTP2"):
                    out.setdefault(self._target_port(number), []).append((ref, server))
        return out

    def route(self, listen_port: int, host: str, path: str, headers) -> tuple[dict, dict] | None:
        """(route, virtual service) for a request, or None (no route)."""
        servers = self.listener_ports().get(listen_port) or []
        gateways = {ref for ref, server in servers
                    if any(host_match(h.split("/", 1)[-1], host) for h in server.get("hosts") or ["*"])}
        if not gateways:
            return None
        for vs in sorted(self.virtualservices.items(), key=lambda v: v["metadata"].get("creationTimestamp", "")):
            spec, ns = vs.get("spec") or {}, vs["metadata"]["namespace"]
            bound = {g if "/" in g else f"{ns}/{g}" for g in spec.get("gateways") or []} & gateways
            if not bound or not any(host_match(h, host) for h in spec.get("hosts") or []):
                continue
            for route in spec.get("http") or []:
                matches = route.get("match") or [{}]
                for m in matches:
                    if m.get("gateways") and not ({g if "/" in g else f"{ns}/{g}" for g in m["gateways"]} & bound):
                        continue
                    if not string_match(m.get("authority"), host) or not string_match(m.get("uri"), path):
                        continue
                    if not all(string_match(rule, headers.get(name, "")) for name, rule in
                               (m.get("headers") or {}).items()):
                        continue
                    return route, vs
        return None

    def endpoint(self, host: str, namespace: str, port: int | None) -> tuple[str, int] | str:
        """A ready endpoint (ip, port) of the destination Service, or the reason there is none."""
        name = host[: -len(CLUSTER_SUFFIX)] if host.endswith(CLUSTER_SUFFIX) else host
        parts = name.split(".")
        svc_name, svc_ns = parts[0], (parts[1] if len(parts) > 1 and parts[1] != "svc" else namespace)
        svc = self.services.get(svc_name, svc_ns)
        if svc is None:
            return "no such service"
        sport = next((p for p in svc["spec"].get("ports") or [] if port is None or p.get("port") == port), None)
        if sport is None:
            return "no such port"
        ready = []
        for eps in self.slices.items():
            if eps["metadata"].get("namespace") != svc_ns or \
                    (eps["metadata"].get("labels") or {}).get("kubernetes.io/service-name") != svc_name:
                continue
            number = next((p["port"] for p in eps.get("ports") or [] if (p.get("name") or "") ==
                           (sport.get("name") or "")), None)
            for ep in eps.get("endpoints") or []:
                if number and (ep.get("conditions") or {}).get("ready"):
                    ready += [(a, number) for a in ep.get("addresses") or []]
        return random.choice(ready) if ready else "no ready endpoint"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    routes: Routes
    listen_port: int

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def version_string(self) -> str:
        return "istio-envoy"

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _reply(self, status: int, body: bytes = b"", headers: list | None = None, upstream_ms: int | None = None):
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        if upstream_ms is not None:
            self.send_header("x-envoy-upstream-service-time", str(upstream_ms))
        if not (status in (204, 304) or 100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _local_reply(self, status: int, body: bytes) -> None:
        self._reply(status, body, [("content-type", "text/plain")] if body else [])

    def _proxy(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._local_reply(400, b"Bad Request")
            return
        host = normalize_host(self.headers.get("Host"))
        path = self.path.split("?", 1)[0]
        found = self.routes.route(self.listen_port, host, path, self.headers)
        if found is None:
            self._local_reply(404, b"")        # Envoy NR: no route for this host
            return
        route, vs = found
        destinations = route.get("route") or []
        if not destinations:
            self._local_reply(404, b"")
            return
        weights = [int(d.get("weight", 100)) for d in destinations]
        dest = random.choices(destinations, weights=weights or None)[0] if sum(weights) else destinations[0]
        target = dest.get("destination") or {}
        endpoint = self.routes.endpoint(target.get("host", ""), vs["metadata"]["namespace"],
                                        (target.get("port") or {}).get("number"))
        if isinstance(endpoint, str):
            self._local_reply(503, NO_HEALTHY_UPSTREAM)
            return
        authority = self.headers.get("Host", "")
        set_headers: dict[str, str] = {}
        for ops in ((route.get("headers") or {}).get("request"), (dest.get("headers") or {}).get("request")):
            set_headers.update((ops or {}).get("set") or {})
        rewrite = route.get("rewrite") or {}
        if rewrite.get("authority"):
            authority = rewrite["authority"]
        for name in list(set_headers):
            if name.lower() == "host":
                authority = set_headers.pop(name)
        upstream_path = self.path
        if rewrite.get("uri") and (route.get("match") or [{}])[0].get("uri", {}).get("prefix"):
            prefix = route["match"][0]["uri"]["prefix"]
            upstream_path = rewrite["uri"] + self.path[len(prefix):]
        forward = [("Host", authority)]
        drop = HOP_BY_HOP | {"host", "content-length", "expect", "x-forwarded-for"} | {n.lower() for n in set_headers}
        forward += [(n, v) for n, v in self.headers.items() if n.lower() not in drop]
        forward += list(set_headers.items())
        xff = ", ".join(self.headers.get_all("X-Forwarded-For") or [])
        forward.append(("x-forwarded-for", f"{xff}, {self.client_address[0]}" if xff else self.client_address[0]))
        if "x-request-id" not in {n.lower() for n, _ in forward}:
            forward.append(("x-request-id", str(uuid.uuid4())))
        if body or self.command in ("POST", "PUT", "PATCH"):
            forward.append(("Content-Length", str(len(body))))
        conn = meshnet.upstream(endpoint, UPSTREAM_TIMEOUT_SECONDS)   # auto mTLS to a sidecar
        started = time.monotonic()
        try:
            conn.putrequest(self.command, upstream_path, skip_host=True, skip_accept_encoding=True)
            for name, value in forward:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            upstream_ms = int((time.monotonic() - started) * 1000)
            resp_body = resp.read()
            resp_headers = [(n, v) for n, v in resp.getheaders()
                            if n.lower() not in HOP_BY_HOP and n.lower() not in ("content-length", "server", "date",
                                                                                 "x-envoy-upstream-service-time")]
        except ConnectionRefusedError:
            self._local_reply(503, UPSTREAM_RESET)
            return
        except (socket.timeout, TimeoutError):
            self._local_reply(504, UPSTREAM_TIMEOUT)
            return
        except (OSError, http.client.HTTPException) as exc:
            log.debug("upstream %s failed: %r", endpoint, exc)
            self._local_reply(503, UPSTREAM_RESET)
            return
        finally:
            conn.close()
        self._reply(resp.status, resp_body, resp_headers, upstream_ms=upstream_ms)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy


class Gateway:
    def __init__(self, kube: Kube):
        self.ip = runtime.listen_address()
        self.routes = Routes(kube, runtime.pod_env("POD_NAMESPACE"), runtime.pod_env("POD_NAME"))
        self.routes.on_listeners = self.sync_listeners
        self.servers: dict[int, ThreadingHTTPServer] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.routes.start()

    def sync_listeners(self, ports: set[int]) -> None:
        with self._lock:
            for port in ports - set(self.servers):
                handler = type("PortHandler", (Handler,), {"routes": self.routes, "listen_port": port})
                try:
                    server = ThreadingHTTPServer((self.ip, port), handler)
                except OSError as e:
                    log.warning("cannot listen on %s:%d: %s", self.ip, port, e)
                    continue
                server.daemon_threads = True
                threading.Thread(target=server.serve_forever, daemon=True).start()
                self.servers[port] = server
                log.info("listening on %s:%d", self.ip, port)
            for port in set(self.servers) - ports:
                server = self.servers.pop(port)
                server.shutdown()
                server.server_close()


def start(stop: threading.Event) -> None:
    Gateway(Kube()).start()


if __name__ == "__main__":
    sys.exit(runtime.run(start, "istio-ingressgateway"))
