"""cert-manager issuance round-trip in a fresh namespace: SelfSigned Issuer → CA Certificate (isCA) → CA Issuer →
leaf Certificate with DNS SANs; the issued Secret is validated with cryptography (chain, SANs, key pair, validity
window, usages)."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import allure
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from stack.checks import CM_API, certificates, issuers
from stack.failures import Category, expect
from stack.wait import wait_for

LEAF_DNS = ["roundtrip.kstack.example", "www.roundtrip.kstack.example"]


def _wait_ready(kube, kind: str, name: str, ns: str, deadline):
    ref = f"{ns}/{name}"
    check = certificates([ref], name=f"Certificate {ref} Ready") if kind == "Certificate" else \
        issuers(kind, [ref], name=f"{kind} {ref} Ready")
    with allure.step(f"{kind} {name} Ready"):
        wait_for(kube, check, deadline)


def _expect(condition: object, message: str) -> None:
    expect(condition, Category.CERTIFICATE, message)


def _secret(kube, ns: str, name: str) -> dict[str, bytes]:
    secret = kube.get("v1", "Secret", name, ns)
    _expect(secret is not None, f"secret {ns}/{name} absent although its Certificate is Ready")
    _expect(secret.get("type") == "kubernetes.io/tls", f"secret {ns}/{name} has type {secret.get('type')}")
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    missing = {"tls.crt", "tls.key", "ca.crt"} - set(data)
    _expect(not missing, f"secret {ns}/{name} lacks {sorted(missing)}")
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
@pytest.mark.needs("cert-manager")
@allure.title("cert-manager issues a CA and a leaf certificate that validate")
def test_certificate_roundtrip(profile, kube, stack, test_namespace, deadline, phase, diagnostics, evidence):
    ns = test_namespace("certs")
    diagnostics.namespace(ns)
    with phase.over(deadline("certificate")) as budget:
        _issue(kube, ns, budget)
    with allure.step("validate the issued Secrets with cryptography"):
        leaf, ca = _validate(kube, ns)
    evidence.add("issued certificate", {
        "subject": leaf.subject.rfc4514_string() or "(empty: DNS SANs only)",
        "SANs": leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        .get_values_for_type(x509.DNSName),
        "issuer": leaf.issuer.rfc4514_string(), "serial": format(leaf.serial_number, "x"),
        "notBefore": leaf.not_valid_before_utc.isoformat(), "notAfter": leaf.not_valid_after_utc.isoformat(),
        "chain": f"signature verified with the CA's key ({ca.subject.rfc4514_string()}, isCA); ca.crt is that CA"})


def _issue(kube, ns: str, budget) -> None:
    """SelfSigned Issuer -> CA Certificate -> CA Issuer -> leaf Certificate, each Ready."""
    kube.apply({"apiVersion": CM_API, "kind": "Issuer", "metadata": {"name": "selfsigned", "namespace": ns},
                "spec": {"selfSigned": {}}})
    _wait_ready(kube, "Issuer", "selfsigned", ns, budget)
    kube.apply({"apiVersion": CM_API, "kind": "Certificate", "metadata": {"name": "root-ca", "namespace": ns},
                "spec": {"isCA": True, "commonName": "kstack-roundtrip-ca", "secretName": "root-ca-tls",
                         "privateKey": {"algorithm": "ECDSA", "size": 256},
                         "issuerRef": {"name": "selfsigned", "kind": "Issuer"}}})
    _wait_ready(kube, "Certificate", "root-ca", ns, budget)
    kube.apply({"apiVersion": CM_API, "kind": "Issuer", "metadata": {"name": "root-ca", "namespace": ns},
                "spec": {"ca": {"secretName": "root-ca-tls"}}})
    _wait_ready(kube, "Issuer", "root-ca", ns, budget)
    kube.apply({"apiVersion": CM_API, "kind": "Certificate", "metadata": {"name": "leaf", "namespace": ns},
                "spec": {"dnsNames": LEAF_DNS, "secretName": "leaf-tls", "duration": "2160h",
                         "usages": ["digital signature", "key encipherment", "server auth"],
                         "issuerRef": {"name": "root-ca", "kind": "Issuer"}}})
    _wait_ready(kube, "Certificate", "leaf", ns, budget)


def _validate(kube, ns: str) -> tuple[x509.Certificate, x509.Certificate]:
    """The leaf and the CA, once every property of the issued pair is verified."""
    ca_data, leaf_data = _secret(kube, ns, "root-ca-tls"), _secret(kube, ns, "leaf-tls")
    ca = x509.load_pem_x509_certificate(ca_data["tls.crt"])
    leaf = x509.load_pem_x509_certificate(leaf_data["tls.crt"])
    _expect(leaf_data["ca.crt"].strip() == ca_data["tls.crt"].strip(), "leaf ca.crt is not the CA certificate")
    _expect(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, "the CA certificate is not a CA")
    try:
        _verify_signed_by(leaf, ca)
    except Exception as e:  # noqa: BLE001 - any verification error means the chain is broken
        _expect(False, f"leaf certificate does not chain to the CA: {type(e).__name__} {e}")
    _expect(leaf.issuer == ca.subject,
            f"leaf issuer {leaf.issuer.rfc4514_string()} != CA subject {ca.subject.rfc4514_string()}")
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    _expect(sorted(sans) == sorted(LEAF_DNS), f"leaf DNS SANs are {sorted(sans)}, expected {sorted(LEAF_DNS)}")
    key = serialization.load_pem_private_key(leaf_data["tls.key"], password=None)
    _expect(key.public_key().public_numbers() == leaf.public_key().public_numbers(), "tls.key does not match tls.crt")
    now = datetime.now(timezone.utc)
    _expect(leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc,
            f"leaf not valid now: {leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc}")
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    _expect(usage.digital_signature and usage.key_encipherment, "leaf lacks digital signature / key encipherment")
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    _expect(ExtendedKeyUsageOID.SERVER_AUTH in eku, "leaf lacks the server auth extended key usage")
    return leaf, ca
