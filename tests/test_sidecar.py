"""The twin's sidecar stand-in: Istio's AuthorizationPolicy semantics, and its inbound listener on loopback with
real mTLS from a CA like istiod's (certificates issued by twin/mesh.py as the twin's kubelets issue them)."""
from __future__ import annotations

import datetime
import http.client
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from twin import mesh, pki
from twin.standins import meshnet, selfca
from twin.standins.sidecar import Inbound, Request, Workload, applicable, authorize

ISTIO_GW = "cluster.local/ns/istio-system/sa/istio-ingressgateway"
ACTIVATOR = "cluster.local/ns/knative-serving/sa/controller"


def policy(name: str, namespace: str, spec: dict) -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def req(principal: str | None = None, method: str = "POST", path: str = "/v1/models/iris:predict", **kw) -> Request:
    return Request(principal, kw.pop("source_ip", "10.244.0.9"), kw.pop("port", 8080), method, path,
                   kw.pop("host", "iris"), kw.pop("headers", {}))


ALLOW_MESH_NAMESPACES = policy("allow", "models", {"action": "ALLOW", "rules": [
    {"from": [{"source": {"namespaces": ["istio-system", "knative-serving"]}}]}]})


@pytest.mark.parametrize("principal, allowed", [
    (None, False),                          # plaintext: no principal, so no namespace
    (ISTIO_GW, True),
    (ACTIVATOR, True),
    ("cluster.local/ns/models/sa/default", False),
])
def test_an_allow_policy_lets_in_only_the_sources_its_rules_name(principal, allowed):
    assert authorize([ALLOW_MESH_NAMESPACES], req(principal))[0] is allowed


def test_allow_policies_follow_istios_empty_rule_semantics():
    deny_all = policy("deny-all", "models", {"action": "ALLOW"})            # no rules: matches nothing
    allow_all = policy("allow-all", "models", {"action": "ALLOW", "rules": [{}]})
    assert authorize([deny_all], req(ISTIO_GW)) == (False, "matches no rule of ALLOW models/deny-all")
    assert authorize([deny_all, allow_all], req())[0] is True               # ALLOW policies are OR'ed
    assert authorize([], req()) == (True, "no ALLOW policy applies")


def test_a_deny_policy_wins_over_an_allow_and_matches_operations():
    deny = policy("no-explain", "models", {"action": "DENY", "rules": [
        {"to": [{"operation": {"paths": ["*:explain"], "methods": ["POST"]}}]}]})
    allow_all = policy("allow-all", "models", {"action": "ALLOW", "rules": [{}]})
    assert authorize([deny, allow_all], req(ISTIO_GW, path="/v1/models/iris:explain"))[0] is False
    assert authorize([deny, allow_all], req(ISTIO_GW))[0] is True


def test_what_the_twin_does_not_model_errs_towards_denying():
    jwt = {"from": [{"source": {"requestPrincipals": ["*"]}}]}
    assert authorize([policy("jwt", "models", {"action": "ALLOW", "rules": [jwt]})], req(ISTIO_GW))[0] is False
    assert authorize([policy("jwt", "models", {"action": "DENY", "rules": [jwt]})], req(ISTIO_GW))[0] is False
    claim = {"when": [{"key": "request.auth.claims[group]", "values": ["ml"]}]}
    assert authorize([policy("claims", "models", {"action": "ALLOW", "rules": [claim]})], req(ISTIO_GW))[0] is False


def test_negative_fields_and_conditions():
    not_plain = policy("p", "models", {"action": "ALLOW", "rules": [
        {"from": [{"source": {"notPrincipals": ["cluster.local/ns/models/sa/default"], "ipBlocks": ["10.244.0.0/16"]}}],
         "when": [{"key": "request.headers[x-team]", "values": ["ml"]}]}]})
    assert authorize([not_plain], req(ISTIO_GW, headers={"x-team": "ml"}))[0] is True
    assert authorize([not_plain], req(ISTIO_GW, headers={"x-team": "web"}))[0] is False
    assert authorize([not_plain], req(ISTIO_GW, headers={"x-team": "ml"}, source_ip="192.168.1.1"))[0] is False
    assert authorize([not_plain], req("cluster.local/ns/models/sa/default", headers={"x-team": "ml"}))[0] is False


def test_the_policies_that_apply_are_the_namespaces_and_the_root_namespaces_that_select_the_workload():
    mine = policy("mine", "models", {"selector": {"matchLabels": {"app": "iris"}}})
    other = policy("other", "models", {"selector": {"matchLabels": {"app": "wine"}}})
    ns_wide = policy("ns", "models", {})
    root = policy("root", "istio-system", {})
    elsewhere = policy("elsewhere", "web", {})
    got = applicable([mine, other, ns_wide, root, elsewhere], "models", {"app": "iris"})
    assert [p["metadata"]["name"] for p in got] == ["mine", "ns", "root"]


# -- the listener, on loopback ------------------------------------------------------------------------------------

class FakeAdmin:
    def __init__(self, ca: pki.KeyPair):
        self.secret = {"data": {"ca-cert.pem": pki.b64(ca.cert_pem), "ca-key.pem": pki.b64(ca.key_pem)}}

    def get(self, api_version, kind, name, namespace=None):
        assert (kind, name, namespace) == ("Secret", mesh.CA_SECRET, mesh.ROOT_NAMESPACE)
        return self.secret


def certificates(ca: pki.KeyPair, directory: Path, namespace: str, service_account: str) -> Path:
    pod = {"metadata": {"name": f"{service_account}-pod", "namespace": namespace},
           "spec": {"serviceAccountName": service_account}}
    return mesh.issue_workload_certificate(FakeAdmin(ca), pod, directory)


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return selfca.new_ca("Istio CA", datetime.timedelta(days=1))


class Mesh:
    """A sidecar on 127.0.0.2:<port> in front of an app on 127.0.0.1:<port>, and a mesh snapshot to set."""

    def __init__(self, tmp_path: Path, ca: pki.KeyPair):
        self.seen: list[dict] = []
        seen = self.seen

        class App(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append({"path": self.path, "body": body, "connection": self.headers.get("Connection")})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass
        self.app = ThreadingHTTPServer(("127.0.0.1", 0), App)
        threading.Thread(target=self.app.serve_forever, daemon=True).start()
        self.port = self.app.server_address[1]
        self.config = tmp_path / "config.json"
        self.set()
        certs = certificates(ca, tmp_path / "server", "models", "default")
        self.inbound = Inbound(Workload("models", "iris-pod", "127.0.0.2", {"app": "iris"}),
                               meshnet.Snapshot(str(self.config)), meshnet.server_context(certs))
        self.inbound.listen(self.port)

    def set(self, mode: str | None = None, policies: list[dict] = ()) -> None:
        pas = [policy("default", "istio-system", {"mtls": {"mode": mode}})] if mode else []
        self.config.write_text(json.dumps({"peerAuthentications": pas, "authorizationPolicies": list(policies)}))

    def post(self, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        conn = (http.client.HTTPSConnection("127.0.0.2", self.port, timeout=5, context=context) if context
                else http.client.HTTPConnection("127.0.0.2", self.port, timeout=5))
        try:
            conn.request("POST", "/v1/models/iris:predict", body=b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}')
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.app.shutdown()


@pytest.fixture
def sidecar(tmp_path, ca):
    m = Mesh(tmp_path, ca)
    yield m
    m.close()


def test_under_strict_plaintext_is_reset_and_mtls_from_the_mesh_is_forwarded(sidecar, tmp_path, ca):
    sidecar.set("STRICT")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        sidecar.post()
    assert sidecar.seen == [] and sidecar.inbound.counts == {"plaintext-reset": 1}
    client = meshnet.client_context(certificates(ca, tmp_path / "gw", "istio-system", "istio-ingressgateway"))
    assert sidecar.post(client) == (200, b"ok")
    assert sidecar.seen == [{"path": "/v1/models/iris:predict", "body": b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}',
                             "connection": "close"}]


def test_a_client_certificate_from_another_ca_is_refused(sidecar, tmp_path, ca):
    stranger = selfca.new_ca("Not Istio", datetime.timedelta(days=1))
    own = certificates(stranger, tmp_path / "x", "istio-system", "istio-ingressgateway")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_cert_chain(own / "cert-chain.pem", own / "key.pem")
    client.load_verify_locations(cadata=ca.cert_pem.decode())      # it trusts the mesh; the mesh does not trust it
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
        sidecar.post(client)
    deadline = time.monotonic() + 5
    while not sidecar.inbound.counts and time.monotonic() < deadline:   # the server counts after its alert went out
        time.sleep(0.02)
    assert sidecar.seen == [] and sidecar.inbound.counts == {"tls-rejected": 1}


def test_under_permissive_the_authorization_policy_denies_by_principal(sidecar, tmp_path, ca):
    sidecar.set("PERMISSIVE", [ALLOW_MESH_NAMESPACES])
    assert sidecar.post() == (403, b"RBAC: access denied")
    outsider = meshnet.client_context(certificates(ca, tmp_path / "o", "models", "default"))
    assert sidecar.post(outsider) == (403, b"RBAC: access denied")
    activator = meshnet.client_context(certificates(ca, tmp_path / "a", "knative-serving", "controller"))
    assert sidecar.post(activator) == (200, b"ok")
    assert len(sidecar.seen) == 1


def test_without_any_policy_plaintext_is_forwarded(sidecar):
    assert sidecar.post() == (200, b"ok")          # Istio's default is PERMISSIVE


def test_the_workload_certificate_carries_only_the_spiffe_id_of_its_service_account(tmp_path, ca):
    certs = certificates(ca, tmp_path / "c", "models", "iris-sa")
    cert = pki.load_certs((certs / "cert-chain.pem").read_bytes())[0]
    assert pki.issued_by(cert, ca.cert)
    from cryptography import x509
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/models/sa/iris-sa"]
    assert sans.get_values_for_type(x509.DNSName) == []


def test_the_snapshot_is_reread_when_it_changes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"endpoints": {}}))
    snapshot = meshnet.Snapshot(str(path))
    assert not snapshot.has_sidecar("10.244.0.9")
    path.write_text(json.dumps({"endpoints": {"10.244.0.9": {"tlsMode": "istio"}}, "pad": "x"}))
    assert snapshot.has_sidecar("10.244.0.9")


# Istio 1.19.0's own cases for ComposePeerAuthentication (pilot/pkg/security/authn/v1beta1/policy_applier_test.go
# TestComposePeerAuthentication), with getConfigsForWorkload's selection in front: the root namespace is
# "root-namespace", the workload is app=foo in my-ns.
def pa(name: str, namespace: str, mode: str | None = None, selector: dict | None = None, ports: dict | None = None,
       created: str = "2026-01-01T00:00:00Z") -> dict:
    spec = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports is not None:
        spec["portLevelMtls"] = ports
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created}, "spec": spec}


FOO = {"app": "foo"}
EARLY, LATE = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


@pytest.mark.parametrize("policies, mode, per_port", [
    ([], "PERMISSIVE", {}),                                                               # no config
    ([pa("default", "root-namespace", "STRICT")], "STRICT", {}),                          # mesh only
    ([pa("default", "root-namespace", "STRICT"), pa("default", "my-ns", "PERMISSIVE")], "PERMISSIVE", {}),
    ([pa("default", "root-namespace", "STRICT"),                                          # a selector in the root
      pa("foo", "root-namespace", "DISABLE", FOO)], "STRICT", {}),                        # namespace: ignored
    ([pa("default", "my-ns", "STRICT"), pa("foo", "my-ns", "DISABLE", FOO)], "DISABLE", {}),
    ([pa("default", "root-namespace", "STRICT"), pa("foo", "my-ns", "DISABLE", FOO)], "DISABLE", {}),
    ([pa("late", "root-namespace", "DISABLE", created=LATE),                              # multiple mesh policies:
      pa("early", "root-namespace", "STRICT", created=EARLY)], "STRICT", {}),             # the oldest
    ([pa("late", "my-ns", "DISABLE", created=LATE), pa("early", "my-ns", "STRICT", created=EARLY)], "STRICT", {}),
    ([pa("late", "my-ns", "DISABLE", FOO, created=LATE), pa("early", "my-ns", "STRICT", FOO, created=EARLY)],
     "STRICT", {}),
    ([pa("default", "root-namespace", "UNSET")], "PERMISSIVE", {}),                       # inheritance: default mesh
    ([pa("default", "root-namespace", "STRICT"), pa("foo", "my-ns", "UNSET", FOO)], "STRICT", {}),
    ([pa("default", "my-ns", "STRICT"), pa("foo", "my-ns", "UNSET", FOO)], "STRICT", {}),
    ([pa("default", "root-namespace", "STRICT"), pa("default", "my-ns", "UNSET"), pa("foo", "my-ns", None, FOO)],
     "STRICT", {}),
    ([pa("default", "root-namespace", "STRICT"),                                          # port level
      pa("foo", "my-ns", None, FOO, {"80": {"mode": "DISABLE"}, "90": {"mode": "UNSET"}, "100": {}})],
     "STRICT", {80: "DISABLE", 90: "STRICT", 100: "STRICT"}),
    ([pa("bar", "my-ns", "DISABLE", {"app": "bar"})], "PERMISSIVE", {}),                  # selects another workload
    ([pa("default", "other-ns", "STRICT")], "PERMISSIVE", {}),                            # another namespace's
])
def test_peer_authentication_is_composed_as_istiod_composes_it(policies, mode, per_port):
    from twin.standins.sidecar import compose_peer_authentication
    got = compose_peer_authentication(policies, "my-ns", {**FOO, "version": "v1"}, root_namespace="root-namespace")
    assert (got.mode, got.per_port) == (mode, per_port)
