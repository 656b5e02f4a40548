"""What a stand-in's Envoy would know and do: the twin's mesh snapshot (twin/mesh.py) and auto mTLS to upstreams.

A process of an injected Pod (the gateway, an activator in a namespace labelled for injection) gets
TWIN_MESH_CONFIG and TWIN_MESH_CERTS from the twin's kubelet. Its upstream connections then go as its proxy would
send them: mTLS with the Pod's workload certificate where the endpoint has a sidecar (Istio's auto mTLS), plaintext
elsewhere. A process without them is outside the mesh and always speaks plaintext.
"""
from __future__ import annotations

import functools
import http.client
import json
import os
import ssl
import threading
from pathlib import Path

from twin.mesh import ENV_CERTS, ENV_CONFIG


class Snapshot:
    """The latest mesh snapshot, re-read when its file changes (istiod's push)."""

    def __init__(self, path: str | None = None):
        self.path = Path(path or os.environ.get(ENV_CONFIG) or "/nonexistent")
        self._stamp: tuple | None = None
        self._data: dict = {}
        self._lock = threading.Lock()

    def data(self) -> dict:
        with self._lock:
            try:
                st = self.path.stat()
            except OSError:
                return {}
            if self._stamp != (st.st_mtime_ns, st.st_size):
                self._data = json.loads(self.path.read_text())
                self._stamp = (st.st_mtime_ns, st.st_size)
            return self._data

    def peer_authentications(self) -> list[dict]:
        return self.data().get("peerAuthentications") or []

    def authorization_policies(self) -> list[dict]:
        return self.data().get("authorizationPolicies") or []

    def has_sidecar(self, ip: str) -> bool:
        return (self.data().get("endpoints") or {}).get(ip, {}).get("tlsMode") == "istio"


def certs_dir() -> Path | None:
    path = os.environ.get(ENV_CERTS)
    return Path(path) if path else None


def server_context(certs: Path) -> ssl.SSLContext:
    """A sidecar's inbound TLS: its workload certificate, and a client certificate from the mesh's CA required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "cert-chain.pem", certs / "key.pem")
    ctx.load_verify_locations(certs / "root-cert.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(certs: Path) -> ssl.SSLContext:
    """Outbound mTLS: the workload certificate, the peer's verified against the mesh's CA. The peer is named by its
    SPIFFE ID, not a host name, so there is no host name check (Envoy matches the SAN against the service's
    accounts, which the twin leaves out)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_cert_chain(certs / "cert-chain.pem", certs / "key.pem")
    ctx.load_verify_locations(certs / "root-cert.pem")
    return ctx


def peer_principal(sock: ssl.SSLSocket) -> str | None:
    """The peer's principal as Istio names it: its SPIFFE ID without the scheme (cluster.local/ns/N/sa/S)."""
    cert = sock.getpeercert() or {}
    for kind, value in cert.get("subjectAltName") or ():
        if kind == "URI" and value.startswith("spiffe://"):
            return value[len("spiffe://"):]
    return None


_snapshot = Snapshot()


@functools.lru_cache(maxsize=1)
def _own_client_context(certs: Path) -> ssl.SSLContext:
    """This process's outbound context, made once: its certificate is written before it starts."""
    return client_context(certs)


def upstream(endpoint: tuple[str, int], timeout: float) -> http.client.HTTPConnection:
    """The connection this process's proxy would open to `endpoint`: mTLS to a sidecar when this Pod is in the mesh."""
    certs = certs_dir()
    if certs is not None and _snapshot.has_sidecar(endpoint[0]):
        return http.client.HTTPSConnection(*endpoint, timeout=timeout, context=_own_client_context(certs))
    return http.client.HTTPConnection(*endpoint, timeout=timeout)
