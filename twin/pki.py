"""Real X.509 for the twin (cryptography): keys, CSRs, certificates, chains, the components' own CAs.

cert-manager's issuers in the twin issue genuine certificates with this module, and the admission path verifies a
webhook's serving certificate against the caBundle of its configuration exactly as a TLS client would (signature by
one of the bundle's CAs, DNS name, validity window).

Components that manage their own webhook TLS (istiod, the Knative webhooks, the cert-manager webhook) get a
*deterministic* CA: its key is derived from the component's service name, so every process of a run (the twin, an
xdist worker synthesising install manifests) computes the same CA without sharing state.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import re
import threading
from dataclasses import dataclass
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stack.durations import go_seconds

UTC = datetime.timezone.utc

# cert-manager KeyUsage strings -> x509.KeyUsage keyword / ExtendedKeyUsage OID
KEY_USAGES = {
    "digital signature": "digital_signature",
    "signing": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "data encipherment": "data_encipherment",
    "key agreement": "key_agreement",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
EXT_KEY_USAGES = {
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
DEFAULT_USAGES = ("digital signature", "key encipherment", "server auth")


class PKIError(Exception):
    """Bad input for issuance (unknown usage, bad key size, bad duration...)."""


# ---------------------------------------------------------------------------------------------------------------
# keys

def new_private_key(algorithm: str = "RSA", size: int | None = None):
    algorithm = (algorithm or "RSA").upper()
    if algorithm == "RSA":
        size = size or 2048
        if size < 2048 or size > 8192:
            raise PKIError(f"RSA key size must be between 2048 and 8192, got {size}")
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    if algorithm == "ECDSA":
        curves = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
        size = size or 256
        if size not in curves:
            raise PKIError(f"ECDSA key size must be one of 256, 384, 521, got {size}")
        return ec.generate_private_key(curves[size]())
    if algorithm == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PKIError(f"unknown private key algorithm {algorithm!r} (RSA, ECDSA, Ed25519)")


def deterministic_ec_key(seed: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from `seed`: the same seed gives the same key in every process."""
    order = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    value = int.from_bytes(hashlib.sha256(("twin-pki/" + seed).encode()).digest(), "big") % (order - 1) + 1
    return ec.derive_private_key(value, ec.SECP256R1())


def key_pem(key, encoding: str = "PKCS1") -> bytes:
    """cert-manager's default encoding is PKCS1 (RSA PRIVATE KEY / EC PRIVATE KEY); PKCS8 on request."""
    if isinstance(key, ed25519.Ed25519PrivateKey) or (encoding or "PKCS1").upper() == "PKCS8":
        fmt = serialization.PrivateFormat.PKCS8
    else:
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def load_key(pem: bytes):
    return serialization.load_pem_private_key(pem, password=None)


def _sign_hash(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def public_bytes(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_cert(key, cert: x509.Certificate) -> bool:
    return public_bytes(key.public_key()) == public_bytes(cert.public_key())


# ---------------------------------------------------------------------------------------------------------------
# names

def _name(common_name: str | None = None, subject: dict | None = None) -> x509.Name:
    attrs = []
    subject = subject or {}
    for field_name, oid in (("countries", NameOID.COUNTRY_NAME), ("provinces", NameOID.STATE_OR_PROVINCE_NAME),
                            ("localities", NameOID.LOCALITY_NAME), ("streetAddresses", NameOID.STREET_ADDRESS),
                            ("postalCodes", NameOID.POSTAL_CODE), ("organizations", NameOID.ORGANIZATION_NAME),
                            ("organizationalUnits", NameOID.ORGANIZATIONAL_UNIT_NAME)):
        for value in subject.get(field_name) or []:
            attrs.append(x509.NameAttribute(oid, str(value)))
    if subject.get("serialNumber"):
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, str(subject["serialNumber"])))
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _sans(dns_names=(), ip_addresses=(), uris=(), emails=()) -> list:
    out: list = [x509.DNSName(d) for d in dns_names or []]
    out += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses or []]
    out += [x509.UniformResourceIdentifier(u) for u in uris or []]
    out += [x509.RFC822Name(e) for e in emails or []]
    return out


@dataclass
class Request:
    """What to put in a certificate (mirrors a cert-manager Certificate spec)."""
    common_name: str | None = None
    dns_names: tuple = ()
    ip_addresses: tuple = ()
    uris: tuple = ()
    emails: tuple = ()
    subject: dict | None = None
    is_ca: bool = False
    usages: tuple = DEFAULT_USAGES
    duration: datetime.timedelta = datetime.timedelta(days=90)


def make_csr(key, req: Request) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(req.common_name, req.subject))
    sans = _sans(req.dns_names, req.ip_addresses, req.uris, req.emails)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if req.is_ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, _sign_hash(key))


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(pem)


def _key_usage(usages: Iterable[str], is_ca: bool) -> tuple[x509.KeyUsage, list]:
    flags = {v: False for v in KEY_USAGES.values()}
    ekus = []
    for usage in usages:
        u = usage.lower()
        if u in KEY_USAGES:
            flags[KEY_USAGES[u]] = True
        elif u in EXT_KEY_USAGES:
            if EXT_KEY_USAGES[u] not in ekus:
                ekus.append(EXT_KEY_USAGES[u])
        else:
            raise PKIError(f"unknown key usage {usage!r}")
    if is_ca:
        flags["key_cert_sign"] = True
        flags["crl_sign"] = True
    if not flags["key_agreement"]:
        flags["encipher_only"] = flags["decipher_only"] = False
    return x509.KeyUsage(**flags), ekus


def sign(public_key, req: Request, issuer_cert: x509.Certificate | None, issuer_key, *,
         not_before: datetime.datetime | None = None, serial: int | None = None,
         deterministic: bool = False) -> x509.Certificate:
    """Issue a certificate for `public_key`; self-signed when issuer_cert is None (issuer_key signs)."""
    not_before = (not_before or datetime.datetime.now(UTC)).replace(microsecond=0)
    subject = _name(req.common_name, req.subject)
    issuer = issuer_cert.subject if issuer_cert is not None else subject
    ku, ekus = _key_usage(req.usages, req.is_ca)
    sans = _sans(req.dns_names, req.ip_addresses, req.uris, req.emails)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_before + req.duration)
               .add_extension(ku, critical=True)
               .add_extension(x509.BasicConstraints(ca=req.is_ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
    if sans:
        # RFC 5280: the SAN extension is critical when the subject is empty
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
    algorithm = _sign_hash(issuer_key)
    if deterministic and isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)
    return builder.sign(issuer_key, algorithm)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.S)


def load_certs(pem: bytes | str | None) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; [] when nothing parses."""
    if not pem:
        return []
    if isinstance(pem, str):
        pem = pem.encode()
    out = []
    for block in _PEM_CERT.findall(pem):
        try:
            out.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            continue
    return out


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when `ca` signed `cert` (issuer name matches and the signature verifies with ca's key)."""
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def verify_signature(cert: x509.Certificate, public_key) -> bool:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                              cert.signature_hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            public_key.verify(cert.signature, cert.tbs_certificate_bytes)
        return True
    except InvalidSignature:
        return False


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        return []


def common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(data: str | None) -> bytes:
    if not data:
        return b""
    try:
        return base64.b64decode(data)
    except (ValueError, TypeError):
        return b""


# ---------------------------------------------------------------------------------------------------------------
# Go durations ("2160h", "1h30m", "720h0m0s")

def parse_duration(text: str | None, default: datetime.timedelta) -> datetime.timedelta:
    if not text:
        return default
    try:
        return datetime.timedelta(seconds=go_seconds(str(text)))
    except ValueError:
        raise PKIError(f'time: invalid duration "{str(text).strip()}"') from None


# ---------------------------------------------------------------------------------------------------------------
# components' own CAs (deterministic) and their serving certificates

_FIXED_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=UTC)
_CA_LIFETIME = datetime.timedelta(days=3650 * 3)


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: object

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


_cache: dict[str, KeyPair] = {}
_cache_lock = threading.Lock()


def component_ca(name: str) -> KeyPair:
    """The deterministic CA of a component that serves its own webhook TLS (`name`: e.g. "istio-system/istiod")."""
    with _cache_lock:
        if name in _cache:
            return _cache[name]
    key = deterministic_ec_key("ca/" + name)
    serial = int.from_bytes(hashlib.sha256(("serial/" + name).encode()).digest()[:16], "big") >> 1
    org = name.split("/", 1)[0]
    req = Request(common_name=name.rsplit("/", 1)[-1] + "-ca", subject={"organizations": [org]}, is_ca=True,
                  usages=("digital signature", "key encipherment", "cert sign"), duration=_CA_LIFETIME)
    cert = sign(key.public_key(), req, None, key, not_before=_FIXED_NOT_BEFORE, serial=serial, deterministic=True)
    pair = KeyPair(cert, key)
    with _cache_lock:
        return _cache.setdefault(name, pair)


def serving_pair(ca: KeyPair, dns: Iterable[str]) -> KeyPair:
    """A serving certificate (cached per CA and names) signed by `ca` for the given DNS names."""
    dns = tuple(dns)
    fingerprint = ca.cert.fingerprint(hashes.SHA256()).hex()
    cache_key = f"serving/{fingerprint}/{','.join(dns)}"
    with _cache_lock:
        if cache_key in _cache:
            return _cache[cache_key]
    key = deterministic_ec_key(cache_key)
    req = Request(common_name=dns[0] if dns else None, dns_names=dns,
                  usages=("digital signature", "key encipherment", "server auth"),
                  duration=datetime.timedelta(days=3650))
    cert = sign(key.public_key(), req, ca.cert, ca.key, not_before=_FIXED_NOT_BEFORE, deterministic=True)
    pair = KeyPair(cert, key)
    with _cache_lock:
        return _cache.setdefault(cache_key, pair)


def load_pair(cert_data: bytes, key_data: bytes) -> KeyPair:
    certs = load_certs(cert_data)
    if not certs:
        raise PKIError("error decoding certificate PEM block")
    try:
        key = load_key(key_data)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"error decoding private key PEM block: {exc}") from None
    if not key_matches_cert(key, certs[0]):
        raise PKIError("certificate and private key do not match")
    return KeyPair(certs[0], key)


def stranger_ca() -> KeyPair:
    """The CA the cabundle-invalid fault puts in a caBundle: the same in every process of the twin (so the twin and
    the components that keep caBundles agree on it), and the issuer of no serving certificate."""
    return component_ca("twin-fault/not-the-serving-ca")
