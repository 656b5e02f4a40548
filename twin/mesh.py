"""The twin's service mesh data plane: what istiod would push to the Envoy proxies, and their workload certificates.

Why this exists: Envoy is a container image the twin cannot run, and istiod is a stand-in without an xDS server
(twin/standins/istiod.py). The proxies of the twin are stand-ins too (twin/standins/sidecar.py for an injected
Pod's inbound traffic; the gateway and the activator originate mTLS as their proxies would), and they need what
xDS gives the real ones:
- the security policy: every PeerAuthentication and AuthorizationPolicy of the cluster, read from the API by
  informers here (istiod watches them the same way) and written as one JSON snapshot, `mesh/config.json`, which
  the proxies re-read when it changes;
- the endpoint metadata: which Pod IPs have a sidecar (Istio's `security.istio.io/tlsMode: istio` label, which
  auto mTLS reads from EDS), registered by the twin's kubelets when they start an injected Pod;
- a workload certificate per injected Pod, as istio-agent gets it from istiod's CA: signed by the CA in Secret
  istio-system/istio-ca-secret, with the SPIFFE ID of the Pod's ServiceAccount as its only SAN, written as
  istio-agent writes them (cert-chain.pem, key.pem, root-cert.pem).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from pathlib import Path

from twin import pki

log = logging.getLogger("twin.mesh")

# Istio's own names, as the twin's istiod would know them: the mesh's root namespace (meshConfig.rootNamespace, by
# default the istiod namespace, istio-system), the security API istiod serves at 1.19 and 1.30, the sidecar's container.
ROOT_NAMESPACE = "istio-system"
SECURITY_API = "security.istio.io/v1beta1"
PA_KIND = "PeerAuthentication"
SIDECAR = "istio-proxy"
CA_SECRET = "istio-ca-secret"
TRUST_DOMAIN = "cluster.local"
STATUS_ANNOTATION = "sidecar.istio.io/status"
CERT_LIFETIME = datetime.timedelta(hours=24)      # istio-agent's default workload certificate TTL
ENV_CONFIG, ENV_CERTS = "TWIN_MESH_CONFIG", "TWIN_MESH_CERTS"
SYNC_SECONDS = 30.0


def config_path(workdir: Path) -> Path:
    return Path(workdir) / "mesh" / "config.json"


def injected(pod: dict) -> bool:
    """istiod's injector ran for the Pod (a sidecar or a gateway proxy): it holds a mesh identity."""
    return STATUS_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def issue_workload_certificate(admin, pod: dict, directory: Path) -> Path | None:
    """The Pod's workload certificate from istiod's CA, into `directory`; None while istiod has made no CA yet."""
    secret = admin.get("v1", "Secret", CA_SECRET, ROOT_NAMESPACE)
    data = (secret or {}).get("data") or {}
    if "ca-cert.pem" not in data or "ca-key.pem" not in data:
        log.warning("no %s/%s yet: %s gets no workload certificate", ROOT_NAMESPACE, CA_SECRET,
                    pod["metadata"]["name"])
        return None
    ca = pki.load_pair(pki.unb64(data["ca-cert.pem"]), pki.unb64(data["ca-key.pem"]))
    meta = pod["metadata"]
    identity = spiffe_id(meta["namespace"], (pod.get("spec") or {}).get("serviceAccountName") or "default")
    key = pki.new_private_key("ECDSA")
    request = pki.Request(uris=(identity,), usages=("digital signature", "key encipherment", "server auth",
                                                    "client auth"), duration=CERT_LIFETIME)
    cert = pki.sign(key.public_key(), request, ca.cert, ca.key)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert-chain.pem").write_bytes(pki.cert_pem(cert) + ca.cert_pem)
    (directory / "key.pem").write_bytes(pki.key_pem(key, "PKCS8"))
    (directory / "root-cert.pem").write_bytes(ca.cert_pem)
    return directory


def proxy_env(admin, pod: dict, pod_dir: Path, workdir: Path) -> dict[str, str]:
    """What the processes of an injected Pod get to act as its proxy: the mesh snapshot and the Pod's certificate."""
    if not injected(pod):
        return {}
    certs = issue_workload_certificate(admin, pod, pod_dir / "istio")
    return {ENV_CONFIG: str(config_path(workdir)), **({ENV_CERTS: str(certs)} if certs else {})}


class MeshConfig:
    """The snapshot istiod would push: security policies from the API, endpoints from the twin's kubelets."""

    def __init__(self, admin, workdir: Path):
        self.admin = admin
        self.path = config_path(workdir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.endpoints: dict[str, dict] = {}
        self.informers: dict[str, object] = {}
        self.lock = threading.Lock()

    def start(self) -> "MeshConfig":
        from twin.standins.runtime import Informer
        for kind in ("PeerAuthentication", "AuthorizationPolicy"):
            self.informers[kind] = Informer(self.admin, SECURITY_API, kind, lambda *_: self._write()).start()
        for kind, informer in self.informers.items():     # Envoy serves nothing before its first push either
            if not informer.synced.wait(SYNC_SECONDS):
                raise TimeoutError(f"the twin's mesh config: {kind}s not listed in {SYNC_SECONDS:.0f}s")
        self._write()
        return self

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def register(self, ip: str, pod: dict) -> None:
        """An injected Pod serves behind its sidecar at `ip` (auto mTLS sends it mTLS)."""
        meta = pod["metadata"]
        with self.lock:
            self.endpoints[ip] = {"tlsMode": "istio", "pod": f"{meta['namespace']}/{meta['name']}"}
        self._write()

    def unregister(self, ip: str) -> None:
        with self.lock:
            self.endpoints.pop(ip, None)
        self._write()

    def _policies(self, kind: str) -> list[dict]:
        informer = self.informers.get(kind)
        return sorted(informer.items(), key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])) \
            if informer else []

    def _write(self) -> None:
        with self.lock:
            snapshot = {"peerAuthentications": self._policies("PeerAuthentication"),
                        "authorizationPolicies": self._policies("AuthorizationPolicy"),
                        "endpoints": dict(self.endpoints)}
            partial = self.path.with_suffix(".tmp")
            partial.write_text(json.dumps(snapshot))
            os.replace(partial, self.path)          # a reader sees the old snapshot or the new, never half of one
