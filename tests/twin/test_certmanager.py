"""cert-manager in the twin: real X.509 issuance, CA chains, conditions and the cainjector."""
from __future__ import annotations

import base64
import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes import client, config

from stack.profile import Profile
from twin.seed import seed
from twin import Twin, pki

G, V = "cert-manager.io", "v1"
NS = "cert-test"
UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def twin():
    with Twin(Profile.load("seed")) as twin:
        api = config.new_client_from_config(config_file=str(twin.kubeconfig_path), context=twin.context)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        twin.api_client = api
        yield twin


def _custom(twin):
    return client.CustomObjectsApi(twin.api_client)


def _core(twin):
    return client.CoreV1Api(twin.api_client)


def _create(twin, plural, body, namespace=NS):
    if plural == "clusterissuers":
        return _custom(twin).create_cluster_custom_object(G, V, plural, body)
    return _custom(twin).create_namespaced_custom_object(G, V, namespace, plural, body)


def _get(twin, plural, name, namespace=NS):
    twin.settle()
    if plural == "clusterissuers":
        return _custom(twin).get_cluster_custom_object(G, V, plural, name)
    return _custom(twin).get_namespaced_custom_object(G, V, namespace, plural, name)


def _ready(obj):
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def _secret_certs(twin, name, namespace=NS):
    secret = _core(twin).read_namespaced_secret(name, namespace)
    data = {k: base64.b64decode(v) for k, v in secret.data.items()}
    return secret, data


def test_selfsigned_issuance_round_trip(twin):
    """upstream-stack.md 1.5: the issuance round-trip cert-manager's docs use."""
    _create(twin, "issuers", {"apiVersion": f"{G}/{V}", "kind": "Issuer", "metadata": {"name": "test-selfsigned"},
                              "spec": {"selfSigned": {}}})
    _create(twin, "certificates", {"apiVersion": f"{G}/{V}", "kind": "Certificate",
                                   "metadata": {"name": "selfsigned-cert"},
                                   "spec": {"dnsNames": ["example.com"], "secretName": "selfsigned-cert-tls",
                                            "issuerRef": {"name": "test-selfsigned"}}})
    issuer = _get(twin, "issuers", "test-selfsigned")
    assert {k: _ready(issuer)[k] for k in ("status", "reason", "message")} == \
        {"status": "True", "reason": "IsReady", "message": ""}
    cert = _get(twin, "certificates", "selfsigned-cert")
    ready = _ready(cert)
    assert (ready["status"], ready["reason"], ready["message"]) == \
        ("True", "Ready", "Certificate is up to date and has not expired")
    assert cert["status"]["revision"] == 1
    for field in ("notBefore", "notAfter", "renewalTime"):
        assert cert["status"][field].endswith("Z")
    secret, data = _secret_certs(twin, "selfsigned-cert-tls")
    assert secret.type == "kubernetes.io/tls"
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    assert data["ca.crt"] == data["tls.crt"]
    annotations = secret.metadata.annotations
    assert annotations["cert-manager.io/certificate-name"] == "selfsigned-cert"
    assert annotations["cert-manager.io/issuer-name"] == "test-selfsigned"
    assert annotations["cert-manager.io/issuer-kind"] == "Issuer"
    assert annotations["cert-manager.io/alt-names"] == "example.com"
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    assert pki.dns_names(leaf) == ["example.com"]
    assert pki.issued_by(leaf, leaf)  # self-signed: it verifies with its own key
    key = pki.load_key(data["tls.key"])
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048 and pki.key_matches_cert(key, leaf)
    # 90 days by default; renewal at 2/3 of the lifetime
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=90)
    # the CertificateRequest carries a REAL CSR for the same key
    cr = _get(twin, "certificaterequests", "selfsigned-cert-1")
    csr = pki.load_csr(base64.b64decode(cr["spec"]["request"]))
    assert pki.public_bytes(csr.public_key()) == pki.public_bytes(leaf.public_key())
    conds = {c["type"]: (c["status"], c.get("reason")) for c in cr["status"]["conditions"]}
    assert conds == {"Approved": ("True", "cert-manager.io"), "Ready": ("True", "Issued")}
    events = _core(twin).list_namespaced_event(NS).items
    assert any(e.reason == "CertIssued" and e.message == "Certificate issued successfully" and
               e.involved_object.name == "selfsigned-cert" for e in events)


def test_ca_chain_selfsigned_to_ca_issuer_to_leaf(twin):
    _create(twin, "clusterissuers", {"apiVersion": f"{G}/{V}", "kind": "ClusterIssuer",
                                     "metadata": {"name": "bootstrap"}, "spec": {"selfSigned": {}}})
    _create(twin, "certificates", {"apiVersion": f"{G}/{V}", "kind": "Certificate", "metadata": {"name": "root-ca"},
                                   "spec": {"isCA": True, "commonName": "twin-test-root", "secretName": "root-ca",
                                            "duration": "8760h",
                                            "privateKey": {"algorithm": "ECDSA", "size": 256},
                                            "issuerRef": {"name": "bootstrap", "kind": "ClusterIssuer"}}})
    _create(twin, "issuers", {"apiVersion": f"{G}/{V}", "kind": "Issuer", "metadata": {"name": "ca-issuer"},
                              "spec": {"ca": {"secretName": "root-ca"}}})
    _create(twin, "certificates", {"apiVersion": f"{G}/{V}", "kind": "Certificate", "metadata": {"name": "leaf"},
                                   "spec": {"commonName": "svc.cert-test.svc", "secretName": "leaf-tls",
                                            "dnsNames": ["svc.cert-test.svc", "svc.cert-test.svc.cluster.local"],
                                            "ipAddresses": ["10.96.0.42"], "uris": ["spiffe://cluster.local/ns/x"],
                                            "duration": "24h", "usages": ["digital signature", "key encipherment",
                                                                          "server auth", "client auth"],
                                            "issuerRef": {"name": "ca-issuer"}}})
    ca_issuer = _get(twin, "issuers", "ca-issuer")
    assert (_ready(ca_issuer)["status"], _ready(ca_issuer)["reason"], _ready(ca_issuer)["message"]) == \
        ("True", "KeyPairVerified", "Signing CA verified")
    assert _ready(_get(twin, "certificates", "leaf"))["status"] == "True"

    _, ca_data = _secret_certs(twin, "root-ca")
    ca = x509.load_pem_x509_certificate(ca_data["tls.crt"])
    assert isinstance(pki.load_key(ca_data["tls.key"]), ec.EllipticCurvePrivateKey)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign

    secret, data = _secret_certs(twin, "leaf-tls")
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    # chain: the leaf's signature verifies with the CA's public key; ca.crt is the CA
    assert pki.verify_signature(leaf, ca.public_key())
    assert leaf.issuer == ca.subject
    assert x509.load_pem_x509_certificate(data["ca.crt"]) == ca
    assert not pki.verify_signature(leaf, leaf.public_key())
    # SANs, CN, key pair, validity window, usages
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc.cert-test.svc", "svc.cert-test.svc.cluster.local"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.96.0.42")]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/x"]
    assert pki.common_name(leaf) == "svc.cert-test.svc"
    assert pki.key_matches_cert(pki.load_key(data["tls.key"]), leaf)
    now = datetime.datetime.now(UTC)
    assert leaf.not_valid_before_utc <= now + datetime.timedelta(seconds=5)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(hours=24)
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    ekus = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert secret.metadata.annotations["cert-manager.io/issuer-kind"] == "Issuer"
    assert secret.metadata.annotations["cert-manager.io/ip-sans"] == "10.96.0.42"


def test_ca_issuer_with_bad_secrets(twin):
    _create(twin, "issuers", {"apiVersion": f"{G}/{V}", "kind": "Issuer", "metadata": {"name": "ca-missing"},
                              "spec": {"ca": {"secretName": "nope"}}})
    ready = _ready(_get(twin, "issuers", "ca-missing"))
    assert (ready["status"], ready["reason"]) == ("False", "ErrGetKeyPair")
    assert 'secrets "nope" not found' in ready["message"]
    # a key pair that is not a CA (the self-signed leaf from the first test or a fresh one)
    _create(twin, "certificates", {"apiVersion": f"{G}/{V}", "kind": "Certificate", "metadata": {"name": "not-ca"},
                                   "spec": {"dnsNames": ["not-ca.example"], "secretName": "not-ca",
                                            "issuerRef": {"name": "bootstrap-ns"}}})
    _create(twin, "issuers", {"apiVersion": f"{G}/{V}", "kind": "Issuer", "metadata": {"name": "bootstrap-ns"},
                              "spec": {"selfSigned": {}}})
    assert _ready(_get(twin, "certificates", "not-ca"))["status"] == "True"
    _create(twin, "issuers", {"apiVersion": f"{G}/{V}", "kind": "Issuer", "metadata": {"name": "ca-invalid"},
                              "spec": {"ca": {"secretName": "not-ca"}}})
    ready = _ready(_get(twin, "issuers", "ca-invalid"))
    assert (ready["status"], ready["reason"]) == ("False", "ErrInvalidKeyPair")


def test_missing_issuer_then_created(twin):
    _create(twin, "certificates", {"apiVersion": f"{G}/{V}", "kind": "Certificate", "metadata": {"name": "waits"},
                                   "spec": {"dnsNames": ["waits.example"], "secretName": "waits-tls",
                                            "issuerRef": {"name": "later"}}})
    cert = _get(twin, "certificates", "waits")
    ready = _ready(cert)
    assert (ready["status"], ready["reason"], ready["message"]) == \
        ("False", "DoesNotExist", "Issuing certificate as Secret does not exist")
    cr = _get(twin, "certificaterequests", "waits-1")
    pending = next(c for c in cr["status"]["conditions"] if c["type"] == "Ready")
    assert pending["reason"] == "Pending" and 'issuer.cert-manager.io "later" not found' in pending["message"]
    _create(twin, "issuers", {"apiVersion": f"{G}/{V}", "kind": "Issuer", "metadata": {"name": "later"},
                              "spec": {"selfSigned": {}}})
    assert _ready(_get(twin, "certificates", "waits"))["status"] == "True"
    # deleting the Secret re-issues it (revision 2)
    _core(twin).delete_namespaced_secret("waits-tls", NS)
    cert = _get(twin, "certificates", "waits")
    assert _ready(cert)["status"] == "True" and cert["status"]["revision"] == 2
    assert _core(twin).read_namespaced_secret("waits-tls", NS).data["tls.crt"]


def test_kserve_serving_cert_and_cainjector(twin):
    cert = _get(twin, "certificates", "serving-cert", "kserve")
    assert _ready(cert)["status"] == "True"
    _, data = _secret_certs(twin, "kserve-webhook-server-cert", "kserve")
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    assert pki.dns_names(leaf) == ["kserve-webhook-server-service.kserve.svc"]
    adm = client.AdmissionregistrationV1Api(twin.api_client)
    for cfg in (adm.read_validating_webhook_configuration("inferenceservice.serving.kserve.io"),
                adm.read_mutating_webhook_configuration("inferenceservice.serving.kserve.io")):
        for webhook in cfg.webhooks:
            assert base64.b64decode(webhook.client_config.ca_bundle) == data["ca.crt"]
    crd = client.ApiextensionsV1Api(twin.api_client).read_custom_resource_definition(
        "inferenceservices.serving.kserve.io")
    assert base64.b64decode(crd.spec.conversion.webhook.client_config.ca_bundle) == data["ca.crt"]
    # cert-manager's own webhook: its self-generated CA secret, injected by the cainjector
    ca_secret, ca_data = _secret_certs(twin, "cert-manager-webhook-ca", "cert-manager")
    assert ca_secret.metadata.annotations["cert-manager.io/allow-direct-injection"] == "true"
    cfg = adm.read_validating_webhook_configuration("cert-manager-webhook")
    assert base64.b64decode(cfg.webhooks[0].client_config.ca_bundle) == ca_data["ca.crt"]


def test_cainjector_follows_a_reissued_ca(twin):
    """When the serving cert is re-issued (new self-signed CA) the injected caBundle follows."""
    _core(twin).delete_namespaced_secret("kserve-webhook-server-cert", "kserve")
    twin.settle()
    _, data = _secret_certs(twin, "kserve-webhook-server-cert", "kserve")
    cfg = client.AdmissionregistrationV1Api(twin.api_client).read_validating_webhook_configuration(
        "inferenceservice.serving.kserve.io")
    assert base64.b64decode(cfg.webhooks[0].client_config.ca_bundle) == data["ca.crt"]


def test_a_broken_cert_manager_issues_nothing():
    twin = Twin(Profile.load("seed"), faults=["crashloop:cert-manager/cert-manager"], preinstalled=False)
    twin.start()
    seed(twin.store, twin.profile, twin.ctx.faults, preinstalled=True)   # installed while cert-manager crashes
    twin.settle()
    with twin:
        cert = twin.store.get("cert-manager.io/v1", "Certificate", "serving-cert", "kserve")
        assert "status" not in cert or not cert["status"].get("conditions")
        assert twin.store.get("v1", "Secret", "kserve-webhook-server-cert", "kserve") is None
        issuer = twin.store.get("cert-manager.io/v1", "Issuer", "selfsigned-issuer", "kserve")
        assert not (issuer.get("status") or {}).get("conditions")
