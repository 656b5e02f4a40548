"""Istio sidecar stand-in: `python -m twin.standins.sidecar`, for the istio-proxy container of an injected model Pod.

Why not the real one: the sidecar is Envoy, a container image the twin cannot run, fed by istiod's xDS, which the
istiod stand-in does not serve. This process does for the Pod's inbound traffic what Envoy's inbound listeners do
with the policy istiod would push (the twin's mesh snapshot, twin/mesh.py):

- Interception: it listens on the Pod IP at every port the Pod's other containers declare (Istio's iptables
  redirect every inbound port); those containers listen on 127.0.0.1 in an injected Pod, where it forwards.
- Peer authentication: the first byte tells TLS from plaintext, as Envoy's TLS inspector does. TLS must present a
  client certificate from the mesh's CA (its SPIFFE ID is the request's principal); plaintext is accepted under
  PERMISSIVE or DISABLE and reset under STRICT, the mode in force being what istiod composes for the Pod from the
  cluster's PeerAuthentications (`compose_peer_authentication`, written from Istio 1.19.0's pilot code, never from
  the suite's judge of it, stack/mesh.py).
- Authorization: the AuthorizationPolicies that select the Pod (its namespace's, and the root namespace's), in
  Envoy's order: a matching DENY denies; then, if any ALLOW policy applies, a request must match one of its rules.
  Denied: 403 "RBAC: access denied", as Envoy answers. Matched: `from.source` principals, namespaces, ipBlocks
  (and their `not` forms), `to.operation` methods, paths, ports, hosts (and `not` forms), and `when` conditions
  on source.principal, source.namespace, source.ip and request.headers[...]. A field the twin does not model
  (request principals, JWT claims) never matches in an ALLOW rule and always matches in a DENY rule, so the twin
  errs towards denying.
- Health: :15021/healthz/ready (Envoy's readiness) and :15020/app-health/<container>/readyz, which istio-agent
  answers with the container's own probe (ISTIO_KUBE_APP_PROBERS), as for a kubelet probe Istio rewrote.

One request per connection: each forwarded request carries `Connection: close`, so every request is authorized.
Its body is read whole before it is forwarded (by Content-Length, or to the last chunk).
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import struct
import sys
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twin.mesh import ROOT_NAMESPACE
from twin.standins import meshnet, runtime

log = logging.getLogger("twin.standin.sidecar")

HEAD_LIMIT = 64 * 1024
DENIED = b"RBAC: access denied"
HOP = frozenset({"connection", "keep-alive", "proxy-connection"})



# -- peer authentication, as istiod composes it for one proxy ---------------------------------------------------------
# Istio 1.19.0: pilot/pkg/model/authentication.go getConfigsForWorkload (the policies of the workload's namespace and
# of the root namespace whose selector's matchLabels are a subset of the workload's labels) and
# pilot/pkg/security/authn/v1beta1/policy_applier.go ComposePeerAuthentication (the oldest policy of each level; a
# selector-less one is the namespace's, or the mesh's in the root namespace; one with a selector in the root namespace
# is ignored; UNSET inherits mesh -> namespace -> workload, from PERMISSIVE; the workload policy's portLevelMtls,
# UNSET ports inheriting the composed mode). tests/test_sidecar.py holds upstream's TestComposePeerAuthentication cases.
@dataclass(frozen=True)
class MergedPeerAuthentication:
    mode: str                                        # STRICT | PERMISSIVE | DISABLE
    per_port: dict[int, str] = field(default_factory=dict)


def _mtls_mode(mtls: dict | None) -> str | None:
    mode = (mtls or {}).get("mode") or "UNSET"
    return None if mode == "UNSET" else mode


def compose_peer_authentication(policies: list[dict], namespace: str, labels: dict[str, str],
                                root_namespace: str = ROOT_NAMESPACE) -> MergedPeerAuthentication:
    def selector(policy: dict) -> dict:
        return ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}

    def older(current: dict | None, policy: dict) -> dict:
        if current is None or (policy["metadata"].get("creationTimestamp") or "") < (
                current["metadata"].get("creationTimestamp") or ""):
            return policy
        return current
    mesh = own = workload = None
    for policy in policies:
        ns = policy["metadata"]["namespace"]
        if ns not in (namespace, root_namespace) or any(labels.get(k) != v for k, v in selector(policy).items()):
            continue                                          # getConfigsForWorkload: not the workload's
        if not selector(policy):
            if ns == root_namespace:
                mesh = older(mesh, policy)
            else:
                own = older(own, policy)
        elif ns != root_namespace:
            workload = older(workload, policy)
    mode = "PERMISSIVE"
    for policy in (mesh, own, workload):
        mode = _mtls_mode((policy or {}).get("spec", {}).get("mtls")) or mode
    per_port = {int(port): _mtls_mode(mtls) or mode
                for port, mtls in (((workload or {}).get("spec") or {}).get("portLevelMtls") or {}).items()}
    return MergedPeerAuthentication(mode, per_port)

@dataclass
class Request:
    """What Envoy's RBAC filter matches a request on."""
    principal: str | None
    source_ip: str
    port: int
    method: str = ""
    path: str = ""
    host: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str | None:
        parts = (self.principal or "").split("/")
        return parts[2] if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa" else None


# -- authorization (Istio's AuthorizationPolicy, security/v1beta1) -------------------------------------------------

def _string_match(patterns: list, value: str | None) -> bool:
    """Istio's string match: exact, "prefix*", "*suffix", or "*" (present)."""
    if value is None:
        return False
    for pattern in patterns:
        pattern = str(pattern)
        if pattern == "*" or pattern == value or \
                (pattern.endswith("*") and value.startswith(pattern[:-1])) or \
                (pattern.startswith("*") and value.endswith(pattern[1:])):
            return True
    return False


def _ip_match(blocks: list, ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(str(b), strict=False) for b in blocks)


UNMODELED_SOURCE = ("requestPrincipals", "notRequestPrincipals", "remoteIpBlocks", "notRemoteIpBlocks")


def _fields_match(spec: dict, checks: dict, unmodeled: tuple, deny: bool) -> bool:
    """Every field set in `spec` holds (fields AND); `checks`: field -> (match function, positive)."""
    for name in unmodeled:
        if spec.get(name):
            return deny
    for name, (match, positive) in checks.items():
        values = spec.get(name)
        if values and match(values) != positive:
            return False
    return True


def _source_matches(source: dict, req: Request, deny: bool) -> bool:
    return _fields_match(source, {
        "principals": (lambda v: _string_match(v, req.principal), True),
        "notPrincipals": (lambda v: _string_match(v, req.principal or ""), False),
        "namespaces": (lambda v: _string_match(v, req.namespace), True),
        "notNamespaces": (lambda v: _string_match(v, req.namespace or ""), False),
        "ipBlocks": (lambda v: _ip_match(v, req.source_ip), True),
        "notIpBlocks": (lambda v: _ip_match(v, req.source_ip), False),
    }, UNMODELED_SOURCE, deny)


def _operation_matches(op: dict, req: Request) -> bool:
    host = req.host.split(":", 1)[0]
    return _fields_match(op, {
        "methods": (lambda v: _string_match(v, req.method), True),
        "notMethods": (lambda v: _string_match(v, req.method), False),
        "paths": (lambda v: _string_match(v, req.path), True),
        "notPaths": (lambda v: _string_match(v, req.path), False),
        "ports": (lambda v: str(req.port) in {str(p) for p in v}, True),
        "notPorts": (lambda v: str(req.port) in {str(p) for p in v}, False),
        "hosts": (lambda v: _string_match([str(h).lower() for h in v], host.lower()), True),
        "notHosts": (lambda v: _string_match([str(h).lower() for h in v], host.lower()), False),
    }, (), False)


def _condition_value(key: str, req: Request) -> str | None | bool:
    if key == "source.principal":
        return req.principal
    if key == "source.namespace":
        return req.namespace
    if key == "source.ip":
        return req.source_ip
    if key.startswith("request.headers[") and key.endswith("]"):
        return req.headers.get(key[len("request.headers["):-1].lower())
    return False                                    # not modelled


def _condition_matches(cond: dict, req: Request, deny: bool) -> bool:
    value = _condition_value(cond.get("key", ""), req)
    if value is False:
        return deny
    matcher = _ip_match if cond.get("key") == "source.ip" and value else _string_match
    if cond.get("values") and not matcher(cond["values"], value):
        return False
    return not (cond.get("notValues") and value is not None and matcher(cond["notValues"], value))


def rule_matches(rule: dict, req: Request, deny: bool = False) -> bool:
    """A rule matches when one of its `from`, one of its `to` and all of its `when` match (absent ones match)."""
    froms, tos = rule.get("from") or [], rule.get("to") or []
    return (not froms or any(_source_matches(f.get("source") or {}, req, deny) for f in froms)) and \
        (not tos or any(_operation_matches(t.get("operation") or {}, req) for t in tos)) and \
        all(_condition_matches(c, req, deny) for c in rule.get("when") or [])


def applicable(policies: list[dict], namespace: str, labels: dict) -> list[dict]:
    """The policies that select a workload: its namespace's and the root namespace's, with no selector or a
    selector matching its labels."""
    out = []
    for policy in policies:
        if policy["metadata"]["namespace"] not in (namespace, ROOT_NAMESPACE):
            continue
        wanted = ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if all(labels.get(k) == v for k, v in wanted.items()):
            out.append(policy)
    return out


def authorize(policies: list[dict], req: Request) -> tuple[bool, str]:
    """(allowed, why), Envoy's RBAC order: DENY policies, then ALLOW policies (AUDIT and CUSTOM are not modelled)."""
    def name(p: dict) -> str:
        return f"{p['metadata']['namespace']}/{p['metadata']['name']}"
    by_action: dict[str, list[dict]] = {}
    for policy in policies:
        by_action.setdefault((policy.get("spec") or {}).get("action") or "ALLOW", []).append(policy)
    for policy in by_action.get("DENY", []):
        if any(rule_matches(r, req, deny=True) for r in (policy.get("spec") or {}).get("rules") or []):
            return False, f"denied by DENY policy {name(policy)}"
    allow = by_action.get("ALLOW", [])
    if not allow:
        return True, "no ALLOW policy applies"
    for policy in allow:
        if any(rule_matches(r, req) for r in (policy.get("spec") or {}).get("rules") or []):
            return True, f"allowed by {name(policy)}"
    return False, f"matches no rule of ALLOW {', '.join(name(p) for p in allow)}"


# -- the inbound listener ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    ip: str
    labels: dict


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST, as Envoy's inbound listener does to plaintext under STRICT."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > HEAD_LIMIT:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target = (lines[0].split(" ") + ["", ""])[:2]
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return method, target, headers


def _read_body(sock: socket.socket, rest: bytes, headers: dict[str, str]) -> bytes:
    """The rest of the request body: by Content-Length, or to the last chunk of a chunked one."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not rest.endswith(b"0\r\n\r\n"):          # the last chunk, without trailers
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return rest
    want = int(headers.get("content-length") or 0)
    while len(rest) < want:
        chunk = sock.recv(min(65536, want - len(rest)))
        if not chunk:
            break
        rest += chunk
    return rest


class Inbound:
    def __init__(self, workload: Workload, snapshot: meshnet.Snapshot, server_ctx: ssl.SSLContext | None):
        self.workload, self.snapshot, self.server_ctx = workload, snapshot, server_ctx
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def listen(self, port: int) -> None:
        server = socket.create_server((self.workload.ip, port), reuse_port=False, backlog=128)
        threading.Thread(target=self._accept, args=(server, port), daemon=True, name=f"inbound-{port}").start()

    def _accept(self, server: socket.socket, port: int) -> None:
        while True:
            client, address = server.accept()
            threading.Thread(target=self._serve, args=(client, address[0], port), daemon=True).start()

    def _serve(self, client: socket.socket, source_ip: str, port: int) -> None:
        try:
            self._handle(client, source_ip, port)
        except (OSError, ValueError) as e:
            log.debug("inbound :%d from %s: %r", port, source_ip, e)
            client.close()

    def _handle(self, client: socket.socket, source_ip: str, port: int) -> None:
        first = client.recv(1, socket.MSG_PEEK)
        if not first:
            client.close()
            return
        principal = None
        if first[0] == 0x16:                                       # a TLS ClientHello
            if self.server_ctx is None:
                _reset(client)
                return
            try:
                client = self.server_ctx.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.count("tls-rejected")
                log.info("inbound :%d from %s: mTLS handshake refused: %s", port, source_ip, e)
                client.close()
                return
            principal = meshnet.peer_principal(client)
        else:
            w = self.workload
            composed = compose_peer_authentication(self.snapshot.peer_authentications(), w.namespace, w.labels)
            mode = composed.per_port.get(port, composed.mode)
            if mode == "STRICT":
                self.count("plaintext-reset")
                log.info("inbound :%d from %s: plaintext reset under %s", port, source_ip, mode)
                _reset(client)
                return
        got = _read_head(client)
        if got is None:
            client.close()
            return
        head, rest = got
        method, target, headers = _parse_head(head)
        lower = {k.lower(): v for k, v in headers}
        req = Request(principal, source_ip, port, method, target.split("?", 1)[0], lower.get("host", ""), lower)
        w = self.workload
        allowed, why = authorize(applicable(self.snapshot.authorization_policies(), w.namespace, w.labels), req)
        body = _read_body(client, rest, lower)     # whole, before any answer: unread data would turn close into RST
        if not allowed:
            self.count("denied")
            log.info("inbound :%d %s %s from %s (principal %s): %s", port, method, req.path, source_ip, principal, why)
            client.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n"
                           b"date: %s\r\nserver: envoy\r\nconnection: close\r\n\r\n%s"
                           % (len(DENIED), formatdate(usegmt=True).encode(), DENIED))
            client.close()
            return
        self.count("forwarded")
        self._forward(client, port, head, body, headers)

    def _forward(self, client: socket.socket, port: int, head: bytes, body: bytes, headers) -> None:
        try:
            app = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nserver: envoy\r\n"
                           b"connection: close\r\n\r\n")
            client.close()
            return
        app.settimeout(None)
        # one request, then its answer: no concurrent reads and writes on one TLS socket (not thread-safe)
        request_line = head.split(b"\r\n", 1)[0]
        kept = [f"{k}: {v}" for k, v in headers if k.lower() not in HOP]
        app.sendall(request_line + b"\r\n" + "\r\n".join(kept + ["Connection: close"]).encode("latin-1")
                    + b"\r\n\r\n" + body)
        try:
            while True:
                data = app.recv(65536)
                if not data:
                    break
                client.sendall(data)
        finally:
            client.close()
            app.close()


def health_handler(probers: dict, inbound: Inbound):
    class Health(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # noqa: A002 - probes every second: debug only
            log.debug(fmt, *args)

        def do_GET(self):  # noqa: N802
            if self.path == "/healthz/ready":
                return self._answer(200, b"")
            if self.path == "/twin/stats":
                return self._answer(200, json.dumps(inbound.counts).encode())
            probe = (probers.get(self.path) or {}).get("httpGet")
            if not probe:
                return self._answer(404, b"no such probe")
            conn = http.client.HTTPConnection("127.0.0.1", int(probe["port"]), timeout=2)
            try:
                conn.request("GET", probe.get("path", "/"))
                self._answer(conn.getresponse().status, b"")
            except OSError:
                self._answer(503, b"")
            finally:
                conn.close()

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return Health


def start(stop: threading.Event) -> None:
    workload = Workload(runtime.pod_env("POD_NAMESPACE"), runtime.pod_env("POD_NAME"), runtime.pod_env("POD_IP"),
                        json.loads(os.environ.get("TWIN_POD_LABELS") or "{}"))
    certs = meshnet.certs_dir()
    inbound = Inbound(workload, meshnet.Snapshot(), meshnet.server_context(certs) if certs else None)
    ports = [int(p) for p in (os.environ.get("TWIN_INBOUND_PORTS") or "").split(",") if p]
    for port in ports:
        inbound.listen(port)
    probers = json.loads(os.environ.get("ISTIO_KUBE_APP_PROBERS") or "{}")
    for port in (15020, 15021):
        server = ThreadingHTTPServer((workload.ip, port), health_handler(probers, inbound))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("intercepting %s on %s; mTLS identity %s", ports, workload.ip, "yes" if certs else "none")


if __name__ == "__main__":
    sys.exit(runtime.run(start, "istio-proxy"))
