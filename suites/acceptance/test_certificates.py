"""cert-manager issuance round-trip in a fresh namespace: SelfSigned Issuer → CA Certificate (isCA) → CA Issuer →
leaf Certificate with DNS SANs; the issued Secret is validated with cryptography (chain, SANs, key pair, validity
window, usages)."""
from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

import allure
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from stack.readiness import certificate_status, condition_true
from stack.wait import Source, Status, wait_for

CM = "cert-manager.io/v1"
LEAF_DNS = ["roundtrip.kstack.example", "www.roundtrip.kstack.example"]


def _wait_ready(kube, kind: str, name: str, ns: str, deadline):
    with allure.step(f"{kind} {name} Ready"):
        _wait(kube, kind, name, ns, deadline)


def _wait(kube, kind: str, name: str, ns: str, deadline):
    def check(snap) -> Status:
        obj = next(iter(snap.items(0)), None)
        if kind == "Certificate":
            return certificate_status(obj, f"{ns}/{name}")
        ready = condition_true(obj, "Ready")
        return Status(ready, f"{kind.lower()} {ns}/{name}: " + ("Ready" if ready else f"not Ready ({(obj or {}).get('status')})"))
    wait_for(kube, [Source(CM, kind, ns, field_selector=f"metadata.name={name}")], check, deadline=deadline,
             describe=f"{kind} {ns}/{name} Ready")


def _secret(kube, ns: str, name: str) -> dict[str, bytes]:
    secret = kube.get("v1", "Secret", name, ns)
    assert secret is not None, f"secret {ns}/{name} absent although its Certificate is Ready"
    assert secret.get("type") == "kubernetes.io/tls", f"secret {ns}/{name} has type {secret.get('type')}"
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    missing = {"tls.crt", "tls.key", "ca.crt"} - set(data)
    assert not missing, f"secret {ns}/{name} lacks {sorted(missing)}"
    return data


def _verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


@pytest.mark.area("certificates", story="Certificate issuance round-trip", feature="cert-manager")
@pytest.mark.criteria("AC-CERT-ROUNDTRIP", "AC-CERT-MANAGER")
@pytest.mark.severity("critical")
def test_certificate_roundtrip(profile, kube, stack, test_namespace, deadline, phase, diagnostics):
    if not profile.has("cert-manager"):
        pytest.skip("the profile has no cert-manager")
    ns = test_namespace("certs")
    diagnostics.namespace(ns)
    budget = deadline("certificate")
    started = time.monotonic()

    kube.apply({"apiVersion": CM, "kind": "Issuer", "metadata": {"name": "selfsigned", "namespace": ns},
                "spec": {"selfSigned": {}}})
    _wait_ready(kube, "Issuer", "selfsigned", ns, budget)
    kube.apply({"apiVersion": CM, "kind": "Certificate", "metadata": {"name": "root-ca", "namespace": ns},
                "spec": {"isCA": True, "commonName": "kstack-roundtrip-ca", "secretName": "root-ca-tls",
                         "privateKey": {"algorithm": "ECDSA", "size": 256},
                         "issuerRef": {"name": "selfsigned", "kind": "Issuer"}}})
    _wait_ready(kube, "Certificate", "root-ca", ns, budget)
    kube.apply({"apiVersion": CM, "kind": "Issuer", "metadata": {"name": "root-ca", "namespace": ns},
                "spec": {"ca": {"secretName": "root-ca-tls"}}})
    _wait_ready(kube, "Issuer", "root-ca", ns, budget)
    kube.apply({"apiVersion": CM, "kind": "Certificate", "metadata": {"name": "leaf", "namespace": ns},
                "spec": {"dnsNames": LEAF_DNS, "secretName": "leaf-tls", "duration": "2160h",
                         "usages": ["digital signature", "key encipherment", "server auth"],
                         "issuerRef": {"name": "root-ca", "kind": "Issuer"}}})
    _wait_ready(kube, "Certificate", "leaf", ns, budget)
    phase("certificate", time.monotonic() - started)

    with allure.step("validate the issued Secrets with cryptography"):
        _validate(kube, ns)


def _validate(kube, ns: str) -> None:
    ca_data, leaf_data = _secret(kube, ns, "root-ca-tls"), _secret(kube, ns, "leaf-tls")
    ca = x509.load_pem_x509_certificate(ca_data["tls.crt"])
    leaf = x509.load_pem_x509_certificate(leaf_data["tls.crt"])
    assert leaf_data["ca.crt"].strip() == ca_data["tls.crt"].strip(), "leaf ca.crt is not the CA certificate"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, "the CA certificate is not a CA"
    try:
        _verify_signed_by(leaf, ca)
    except Exception as e:  # noqa: BLE001 - any verification error means the chain is broken
        pytest.fail(f"leaf certificate does not chain to the CA: {type(e).__name__} {e}", pytrace=False)
    assert leaf.issuer == ca.subject, f"leaf issuer {leaf.issuer.rfc4514_string()} != CA subject {ca.subject.rfc4514_string()}"
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(sans) == sorted(LEAF_DNS), f"leaf DNS SANs are {sorted(sans)}, expected {sorted(LEAF_DNS)}"
    key = serialization.load_pem_private_key(leaf_data["tls.key"], password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers(), "tls.key does not match tls.crt"
    now = datetime.now(timezone.utc)
    assert leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc, (
        f"leaf not valid now: {leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc}")
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment, "leaf lacks digital signature / key encipherment"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku, "leaf lacks the server auth extended key usage"
