"""cert-manager controller stand-in: Issuers/ClusterIssuers, Certificates -> CertificateRequests -> real X.509.

It acts only while the cert-manager controller Deployment (the profile's version_probe) is Ready: a broken
cert-manager issues nothing. Conditions, reasons, messages, Secret layout and annotations follow cert-manager v1.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging

from twin import pki
from twin.controllers.base import Controller, now_iso, owner_ref, rfc3339, set_condition
from twin.api_store import ApiError

log = logging.getLogger("twin.controllers.certmanager")

GROUP = "cert-manager.io"
API = "cert-manager.io/v1"
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"
COMPONENT = "cert-manager-certificates-issuing"


class CertManagerController(Controller):
    name = "cert-manager"

    def __init__(self, ctx):
        super().__init__(ctx)
        probe = ctx.profile.components["cert-manager"].version_probe
        self.gate = (probe["namespace"], probe["deployment"])
        self._gate_open = False
        self.issued: dict[tuple, tuple] = {}   # (ns, cert) -> (spec fingerprint, sha256 of tls.crt)

    # -- events ---------------------------------------------------------------------------------------------------

    def on_event(self, event_type: str, obj: dict) -> None:
        kind, api = obj.get("kind"), obj.get("apiVersion", "")
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        if kind == "Deployment" and (ns, name) == self.gate:
            was, self._gate_open = self._gate_open, self.ctx.deployment_ready(*self.gate)
            if self._gate_open and not was:
                self.resync_all()
            return
        if not api.startswith(GROUP + "/"):
            if kind == "Secret" and self._gate_open:
                self._secret_changed(ns, name)
            return
        if not self._gate_open:
            self._gate_open = self.ctx.deployment_ready(*self.gate)
            if not self._gate_open:
                return
        if event_type == "DELETED":
            if kind == "Certificate":
                self.issued.pop((ns, name), None)
            elif kind in ("Issuer", "ClusterIssuer"):
                self._issuer_changed(kind, ns, name)
            return
        if kind in ("Issuer", "ClusterIssuer"):
            self.reconcile_issuer(obj)
            self._issuer_changed(kind, ns, name)
        elif kind == "Certificate":
            self.reconcile_certificate(obj)

    def resync_all(self) -> None:
        for kind in ("ClusterIssuer", "Issuer"):
            for obj in self.ctx.list(API, kind):
                self.reconcile_issuer(obj)
        for cert in self.ctx.list(API, "Certificate"):
            self.reconcile_certificate(cert)

    def _issuer_changed(self, kind: str, ns: str | None, name: str) -> None:
        for cert in self.ctx.list(API, "Certificate", ns if kind == "Issuer" else None):
            ref = (cert.get("spec") or {}).get("issuerRef") or {}
            if ref.get("name") == name and (ref.get("kind") or "Issuer") == kind:
                self.reconcile_certificate(cert)

    def _secret_changed(self, ns: str, name: str) -> None:
        for issuer in self.ctx.list(API, "Issuer", ns):
            if ((issuer.get("spec") or {}).get("ca") or {}).get("secretName") == name:
                self.reconcile_issuer(issuer)
                self._issuer_changed("Issuer", ns, issuer["metadata"]["name"])
        if ns == CLUSTER_RESOURCE_NAMESPACE:
            for issuer in self.ctx.list(API, "ClusterIssuer"):
                if ((issuer.get("spec") or {}).get("ca") or {}).get("secretName") == name:
                    self.reconcile_issuer(issuer)
                    self._issuer_changed("ClusterIssuer", None, issuer["metadata"]["name"])
        for cert in self.ctx.list(API, "Certificate", ns):
            if (cert.get("spec") or {}).get("secretName") == name:
                self.reconcile_certificate(cert)

    # -- issuers --------------------------------------------------------------------------------------------------

    def _ca_pair(self, issuer: dict) -> tuple[pki.KeyPair | None, str, str]:
        """(key pair, reason, message) of a CA issuer's secret."""
        ns = issuer["metadata"].get("namespace") or CLUSTER_RESOURCE_NAMESPACE
        secret_name = issuer["spec"]["ca"].get("secretName", "")
        secret = self.ctx.get("v1", "Secret", secret_name, ns)
        if secret is None:
            return None, "ErrGetKeyPair", f'Error getting keypair for CA issuer: secrets "{secret_name}" not found'
        data = secret.get("data") or {}
        try:
            pair = pki.load_pair(pki.unb64(data.get("tls.crt")), pki.unb64(data.get("tls.key")))
        except pki.PKIError as exc:
            return None, "ErrInvalidKeyPair", f"Error getting keypair for CA issuer: {exc}"
        if not pki.is_ca(pair.cert):
            return None, "ErrInvalidKeyPair", "Error getting keypair for CA issuer: certificate is not a CA"
        return pair, "KeyPairVerified", "Signing CA verified"

    def reconcile_issuer(self, issuer: dict) -> None:
        spec = issuer.get("spec") or {}
        generation = issuer["metadata"].get("generation", 1)
        if "selfSigned" in spec:
            status, reason, message = "True", "IsReady", ""
        elif "ca" in spec:
            pair, reason, message = self._ca_pair(issuer)
            status = "True" if pair else "False"
        else:
            return  # ACME, Vault, Venafi: not simulated
        old = issuer.get("status") or {}
        conds = set_condition(old.get("conditions"), "Ready", status, reason, message,
                              observedGeneration=generation)
        self.ctx.write_status(issuer, dict(old, conditions=conds))

    def _issuer(self, cert: dict) -> tuple[dict | None, str]:
        ref = (cert.get("spec") or {}).get("issuerRef") or {}
        kind = ref.get("kind") or "Issuer"
        name = ref.get("name", "")
        if kind == "ClusterIssuer":
            return self.ctx.get(API, "ClusterIssuer", name), kind
        return self.ctx.get(API, "Issuer", name, cert["metadata"]["namespace"]), kind

    # -- certificates ---------------------------------------------------------------------------------------------

    def _fingerprint(self, cert: dict, issuer: dict | None) -> str:
        spec = dict(cert.get("spec") or {})
        spec.pop("secretTemplate", None)
        return hashlib.sha256(json.dumps([spec, (issuer or {}).get("metadata", {}).get("uid")],
                                         sort_keys=True).encode()).hexdigest()

    def reconcile_certificate(self, cert: dict) -> None:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            return
        group = ((spec.get("issuerRef") or {}).get("group") or GROUP)
        if group != GROUP:
            return  # an external issuer's controller would sign it
        secret_name = spec.get("secretName", "")
        issuer, issuer_kind = self._issuer(cert)
        secret = self.ctx.get("v1", "Secret", secret_name, ns) if secret_name else None
        fingerprint = self._fingerprint(cert, issuer)
        if secret is not None and self.issued.get((ns, name)) == (fingerprint, _crt_hash(secret)):
            return  # up to date
        old = cert.get("status") or {}
        revision = int(old.get("revision") or 0)
        not_exist = "Issuing certificate as Secret does not exist"
        issuing_message = not_exist if secret is None else "Issuing certificate as Secret was previously issued " \
                                                          "by a different issuer or does not match the spec"
        issuing_reason = "DoesNotExist" if secret is None else "Reissuing"
        pending = dict(old)
        conds = set_condition(old.get("conditions"), "Ready", "False", issuing_reason if secret is None
                              else "Reissuing", issuing_message, observedGeneration=meta.get("generation", 1))
        conds = set_condition(conds, "Issuing", "True", issuing_reason, issuing_message,
                              observedGeneration=meta.get("generation", 1))
        pending["conditions"] = conds
        ready_issuer = issuer is not None and any(c.get("type") == "Ready" and c.get("status") == "True"
                                                  for c in (issuer.get("status") or {}).get("conditions") or [])
        cr_name = f"{name}-{revision + 1}"
        if self.ctx.faults.has("cert-stuck") or not ready_issuer:
            if issuer is None:
                cr_reason = f'Referenced "{issuer_kind}" not found: {issuer_kind.lower()}.{GROUP} ' \
                            f'"{(spec.get("issuerRef") or {}).get("name", "")}" not found'
            elif not ready_issuer:
                cr_reason = f'Referenced "{issuer_kind}" does not have a Ready status condition'
            else:
                cr_reason = "Waiting for the issuer to sign the certificate request"
            self.ctx.write_status(cert, pending)
            self._pending_request(cert, cr_name, cr_reason)
            return
        try:
            self._issue(cert, issuer, issuer_kind, revision + 1, fingerprint, cr_name)
        except (pki.PKIError, ValueError) as exc:
            failed = dict(pending)
            failed["conditions"] = set_condition(pending["conditions"], "Issuing", "False", "Failed", str(exc))
            failed["lastFailureTime"] = now_iso()
            self.ctx.write_status(cert, failed)
            self.ctx.event(cert, "Failed", f"The certificate request has failed to complete and will be retried: "
                                           f"{exc}", "Warning", COMPONENT)

    def _request_spec(self, cert: dict) -> pki.Request:
        spec = cert.get("spec") or {}
        dns = list(spec.get("dnsNames") or [])
        if self.ctx.faults.has("cert-wrong-san"):
            dns = ["wrong-" + d for d in dns]
        usages = tuple(spec.get("usages") or pki.DEFAULT_USAGES)
        default = datetime.timedelta(hours=2160)
        return pki.Request(common_name=spec.get("commonName"), dns_names=tuple(dns),
                           ip_addresses=tuple(spec.get("ipAddresses") or ()), uris=tuple(spec.get("uris") or ()),
                           emails=tuple(spec.get("emailAddresses") or ()), subject=spec.get("subject"),
                           is_ca=bool(spec.get("isCA")), usages=usages,
                           duration=pki.parse_duration(spec.get("duration"), default))

    def _pending_request(self, cert: dict, cr_name: str, message: str) -> None:
        ns = cert["metadata"]["namespace"]
        existing = self.ctx.get(API, "CertificateRequest", cr_name, ns)
        if existing is None:
            spec = cert.get("spec") or {}
            key = pki.new_private_key("ECDSA")  # a placeholder CSR: the real key is generated at issuance
            csr = pki.make_csr(key, self._request_spec(cert))
            existing = self._create_request(cert, cr_name, pki.csr_pem(csr), spec)
            if existing is None:
                return
        status = dict(existing.get("status") or {})
        conds = set_condition(status.get("conditions"), "Approved", "True", "cert-manager.io",
                              "Certificate request has been approved by cert-manager.io")
        conds = set_condition(conds, "Ready", "False", "Pending", message)
        status["conditions"] = conds
        self.ctx.write_status(existing, status)

    def _create_request(self, cert: dict, cr_name: str, csr: bytes, spec: dict) -> dict | None:
        ns = cert["metadata"]["namespace"]
        cr = {"apiVersion": API, "kind": "CertificateRequest",
              "metadata": {"name": cr_name, "namespace": ns,
                           "annotations": {"cert-manager.io/certificate-name": cert["metadata"]["name"],
                                           "cert-manager.io/certificate-revision": cr_name.rsplit("-", 1)[-1],
                                           "cert-manager.io/private-key-secret-name":
                                               f"{cert['metadata']['name']}-{cr_name.rsplit('-', 1)[-1]}"},
                           "ownerReferences": [owner_ref(cert)]},
              "spec": {"request": pki.b64(csr), "issuerRef": spec.get("issuerRef") or {},
                       "isCA": bool(spec.get("isCA")), "usages": list(spec.get("usages") or pki.DEFAULT_USAGES),
                       "username": "system:serviceaccount:cert-manager:cert-manager",
                       "groups": ["system:serviceaccounts", "system:serviceaccounts:cert-manager",
                                  "system:authenticated"]}}
        if spec.get("duration"):
            cr["spec"]["duration"] = spec["duration"]
        try:
            return self.store.create(cr)
        except ApiError as exc:
            if exc.code == 409:
                return self.ctx.get(API, "CertificateRequest", cr_name, ns)
            log.warning("CertificateRequest %s/%s not created: %s", ns, cr_name, exc.message)
            return None

    def _issue(self, cert: dict, issuer: dict, issuer_kind: str, revision: int, fingerprint: str,
               cr_name: str) -> None:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        req = self._request_spec(cert)
        pk = spec.get("privateKey") or {}
        key = pki.new_private_key(pk.get("algorithm") or "RSA", pk.get("size"))
        csr = pki.make_csr(key, req)
        self.ctx.event(cert, "Issuing", "Issuing certificate as Secret does not exist", "Normal", COMPONENT)
        self.ctx.event(cert, "Generated", "Stored new private key in temporary Secret resource", "Normal",
                       "cert-manager-certificates-key-manager")
        cr = self.ctx.get(API, "CertificateRequest", cr_name, ns)
        if cr is not None:
            self.ctx.delete(API, "CertificateRequest", cr_name, ns)  # a stale pending request of this revision
        cr = self._create_request(cert, cr_name, pki.csr_pem(csr), spec)
        self.ctx.event(cert, "Requested", f'Created new CertificateRequest resource "{cr_name}"', "Normal",
                       "cert-manager-certificates-request-manager")
        if "selfSigned" in issuer.get("spec", {}):
            leaf = pki.sign(key.public_key(), req, None, key)
            ca_pem = pki.cert_pem(leaf)
            chain_pem = ca_pem
        else:
            pair, _, message = self._ca_pair(issuer)
            if pair is None:
                raise pki.PKIError(message)
            leaf = pki.sign(key.public_key(), req, pair.cert, pair.key)
            ca_certs = pki.load_certs(pki.unb64((self.ctx.get("v1", "Secret", issuer["spec"]["ca"]["secretName"],
                                                              issuer["metadata"].get("namespace")
                                                              or CLUSTER_RESOURCE_NAMESPACE) or {})
                                                .get("data", {}).get("tls.crt")))
            root = ca_certs[-1] if ca_certs else pair.cert
            ca_pem = pki.cert_pem(root)
            chain_pem = pki.cert_pem(leaf) + b"".join(pki.cert_pem(c) for c in ca_certs[:-1])
        if cr is not None:
            conds = set_condition(None, "Approved", "True", "cert-manager.io",
                                  "Certificate request has been approved by cert-manager.io")
            conds = set_condition(conds, "Ready", "True", "Issued", "Certificate fetched from issuer successfully")
            self.ctx.write_status(cr, {"conditions": conds, "certificate": pki.b64(chain_pem),
                                       "ca": pki.b64(ca_pem)})
        key_pem = pki.key_pem(key, pk.get("encoding") or "PKCS1")
        annotations = {
            "cert-manager.io/alt-names": ",".join(req.dns_names),
            "cert-manager.io/certificate-name": name,
            "cert-manager.io/common-name": req.common_name or "",
            "cert-manager.io/ip-sans": ",".join(req.ip_addresses),
            "cert-manager.io/issuer-group": GROUP,
            "cert-manager.io/issuer-kind": issuer_kind,
            "cert-manager.io/issuer-name": issuer["metadata"]["name"],
            "cert-manager.io/uri-sans": ",".join(req.uris),
        }
        template = spec.get("secretTemplate") or {}
        annotations.update(template.get("annotations") or {})
        labels = dict(template.get("labels") or {}, **{"controller.cert-manager.io/fao": "true"})
        secret_name = spec["secretName"]
        data = {"tls.crt": pki.b64(chain_pem), "tls.key": pki.b64(key_pem), "ca.crt": pki.b64(ca_pem)}
        live = self.ctx.get("v1", "Secret", secret_name, ns)
        if live is None:
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                      "metadata": {"name": secret_name, "namespace": ns, "annotations": annotations,
                                   "labels": labels}, "data": data}
            written = self.store.create(secret)
        else:
            live["metadata"].setdefault("annotations", {}).update(annotations)
            live["metadata"].setdefault("labels", {}).update(labels)
            live["metadata"].pop("resourceVersion", None)
            live["data"] = dict(live.get("data") or {}, **data)
            written = self.store.update(live)
        self.issued[(ns, name)] = (fingerprint, _crt_hash(written))
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        renew_before = pki.parse_duration(spec.get("renewBefore"), (not_after - not_before) / 3)
        status = {k: v for k, v in (cert.get("status") or {}).items() if k not in ("lastFailureTime",
                                                                                   "failedIssuanceAttempts")}
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "Issuing"]
        conds = set_condition(conds, "Ready", "True", "Ready", "Certificate is up to date and has not expired",
                              observedGeneration=meta.get("generation", 1))
        status.update({"conditions": conds, "notBefore": rfc3339(not_before), "notAfter": rfc3339(not_after),
                       "renewalTime": rfc3339(not_after - renew_before), "revision": revision})
        fresh = self.ctx.get(API, "Certificate", name, ns) or cert
        self.ctx.write_status(fresh, status)
        self.ctx.event(cert, "Issuing", "The certificate has been successfully issued", "Normal", COMPONENT)
        self.ctx.event(cert, "CertIssued", "Certificate issued successfully", "Normal", COMPONENT)


def _crt_hash(secret: dict | None) -> str:
    return hashlib.sha256(((secret or {}).get("data") or {}).get("tls.crt", "").encode()).hexdigest()
