"""cert-manager stand-in: `python -m twin.standins.certmanager controller|cainjector|webhook [container args]`.

Why not the real one: since v1.12 cert-manager's binaries live in their own Go modules
(github.com/cert-manager/cert-manager/cmd/{controller,webhook,cainjector}), which the module proxy here refuses
("Go module path not permitted"); the main module holds no main package for them.

What each role does, against the real API server, as cert-manager v1 does it:
- controller: Issuers and ClusterIssuers (SelfSigned, CA) get their Ready condition; a Certificate gets a
  CertificateRequest per revision and, when its issuer is Ready, a real X.509 certificate (twin/pki.py) in its
  Secret (tls.crt, tls.key, ca.crt and cert-manager's annotations), then Ready with notBefore/notAfter/renewalTime.
  A Secret that already holds a matching certificate is not reissued.
- cainjector: `cert-manager.io/inject-ca-from` (a Certificate) and `inject-ca-from-secret` (a Secret marked
  `cert-manager.io/allow-direct-injection`) fill the caBundle of webhook configurations and of CRD conversion
  webhooks, and follow the source when it changes.
- webhook: its own CA in the Secret named by --dynamic-serving-ca-secret-name (marked for direct injection), a
  serving certificate for its Service's names, and the validation of cert-manager resources (the checks and
  messages of internal/apis/certmanager/validation) plus the CertificateRequest mutation (user info).

Faults (TWIN_FAULTS_FILE): cert-stuck (no Certificate becomes Ready), cert-wrong-san (issued certificates carry
wrong DNS names), cabundle-invalid:<webhook configuration> (the cainjector injects a different CA there).
"""
from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import logging
import sys
import threading

from kubernetes.client.rest import ApiException

from twin import pki
from twin.standins import runtime
from twin.standins.runtime import Admission, Informer, Kube, WorkQueue, now_iso, owner_ref, set_condition

log = logging.getLogger("twin.standin.cert-manager")

GROUP = "cert-manager.io"
API = "cert-manager.io/v1"
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"
ISSUING = "cert-manager-certificates-issuing"
INJECT_CA_FROM = "cert-manager.io/inject-ca-from"
INJECT_CA_FROM_SECRET = "cert-manager.io/inject-ca-from-secret"
ALLOW_DIRECT = "cert-manager.io/allow-direct-injection"


def rfc3339(dt: datetime.datetime) -> str:
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------------------
# controller

class Controller:
    def __init__(self, kube: Kube):
        self.kube = kube
        self.queue = WorkQueue(self.reconcile)
        self.issuers = Informer(kube, API, "Issuer", lambda t, o: self._issuer_event("Issuer", o))
        self.cluster_issuers = Informer(kube, API, "ClusterIssuer", lambda t, o: self._issuer_event("ClusterIssuer", o))
        self.certificates = Informer(kube, API, "Certificate", self._certificate_event)
        self.secrets = Informer(kube, "v1", "Secret", self._secret_event)

    def start(self) -> None:
        for informer in (self.secrets, self.issuers, self.cluster_issuers, self.certificates):
            informer.start()

    # -- events -> keys --------------------------------------------------------------------------------------------

    def _issuer_event(self, kind: str, obj: dict) -> None:
        meta = obj["metadata"]
        self.queue.add((kind, meta.get("namespace"), meta["name"]))
        for cert in self.certificates.items():
            ref = cert.get("spec", {}).get("issuerRef") or {}
            same_ns = kind == "ClusterIssuer" or cert["metadata"]["namespace"] == meta.get("namespace")
            if ref.get("name") == meta["name"] and (ref.get("kind") or "Issuer") == kind and same_ns:
                self.queue.add(("Certificate", cert["metadata"]["namespace"], cert["metadata"]["name"]))

    def _certificate_event(self, event_type: str, obj: dict) -> None:
        if event_type != "DELETED":
            self.queue.add(("Certificate", obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def _secret_event(self, event_type: str, obj: dict) -> None:
        ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
        for issuer in self.issuers.items():
            if issuer["metadata"]["namespace"] == ns and (issuer.get("spec", {}).get("ca") or {}).get("secretName") == name:
                self._issuer_event("Issuer", issuer)
        if ns == CLUSTER_RESOURCE_NAMESPACE:
            for issuer in self.cluster_issuers.items():
                if (issuer.get("spec", {}).get("ca") or {}).get("secretName") == name:
                    self._issuer_event("ClusterIssuer", issuer)
        for cert in self.certificates.items():
            if cert["metadata"]["namespace"] == ns and cert.get("spec", {}).get("secretName") == name:
                self.queue.add(("Certificate", ns, cert["metadata"]["name"]))

    # -- reconcile -------------------------------------------------------------------------------------------------

    def reconcile(self, key) -> None:
        kind, ns, name = key
        obj = self.kube.get(API, kind, name, ns)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        if kind in ("Issuer", "ClusterIssuer"):
            self.reconcile_issuer(obj)
        else:
            self.reconcile_certificate(obj)

    def _ca_pair(self, issuer: dict) -> tuple[pki.KeyPair | None, str, str]:
        ns = issuer["metadata"].get("namespace") or CLUSTER_RESOURCE_NAMESPACE
        secret_name = issuer["spec"]["ca"].get("secretName", "")
        secret = self.kube.get("v1", "Secret", secret_name, ns)
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
        if "selfSigned" in spec:
            status, reason, message = "True", "IsReady", ""
        elif "ca" in spec:
            pair, reason, message = self._ca_pair(issuer)
            status = "True" if pair else "False"
        else:
            return  # ACME, Vault, Venafi: not simulated
        old = issuer.get("status") or {}
        conds = set_condition(old.get("conditions"), "Ready", status, reason, message,
                              observedGeneration=issuer["metadata"].get("generation", 1))
        if conds != old.get("conditions"):
            self._status(issuer, {"conditions": conds})

    def _status(self, obj: dict, status: dict) -> None:
        meta = obj["metadata"]
        self.kube.patch(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"), {"status": status},
                        subresource="status")

    def _issuer(self, cert: dict) -> tuple[dict | None, str]:
        ref = cert.get("spec", {}).get("issuerRef") or {}
        kind = ref.get("kind") or "Issuer"
        ns = None if kind == "ClusterIssuer" else cert["metadata"]["namespace"]
        return self.kube.get(API, kind, ref.get("name", ""), ns), kind

    def _request(self, cert: dict) -> pki.Request:
        spec = cert.get("spec") or {}
        dns = list(spec.get("dnsNames") or [])
        if runtime.has_fault("cert-wrong-san"):
            dns = ["wrong-" + d for d in dns]
        return pki.Request(common_name=spec.get("commonName"), dns_names=tuple(dns),
                           ip_addresses=tuple(spec.get("ipAddresses") or ()), uris=tuple(spec.get("uris") or ()),
                           emails=tuple(spec.get("emailAddresses") or ()), subject=spec.get("subject"),
                           is_ca=bool(spec.get("isCA")), usages=tuple(spec.get("usages") or pki.DEFAULT_USAGES),
                           duration=pki.parse_duration(spec.get("duration"), datetime.timedelta(hours=2160)))

    def _up_to_date(self, cert: dict, secret: dict | None, issuer: dict | None, issuer_kind: str) -> bool:
        """Whether the Secret already holds a certificate for this spec from this issuer (no reissue needed)."""
        if secret is None or issuer is None:
            return False
        annotations = secret["metadata"].get("annotations") or {}
        if (annotations.get("cert-manager.io/issuer-name"), annotations.get("cert-manager.io/issuer-kind")) != \
                (issuer["metadata"]["name"], issuer_kind):
            return False
        certs = pki.load_certs(pki.unb64((secret.get("data") or {}).get("tls.crt")))
        if not certs:
            return False
        leaf, want = certs[0], self._request(cert)
        now = datetime.datetime.now(datetime.timezone.utc)
        return (sorted(pki.dns_names(leaf)) == sorted(want.dns_names) and pki.is_ca(leaf) == want.is_ca
                and (pki.common_name(leaf) or None) == (want.common_name or None) and leaf.not_valid_after_utc > now)

    def reconcile_certificate(self, cert: dict) -> None:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        if ((spec.get("issuerRef") or {}).get("group") or GROUP) != GROUP:
            return  # an external issuer's controller would sign it
        issuer, issuer_kind = self._issuer(cert)
        secret = self.kube.get("v1", "Secret", spec.get("secretName", ""), meta["namespace"])
        status = cert.get("status") or {}
        if self._up_to_date(cert, secret, issuer, issuer_kind):
            if not runtime.condition(cert, "Ready") or not runtime.is_true(cert, "Ready"):
                self._ready(cert, secret, int(status.get("revision") or 1))
            return
        revision = int(status.get("revision") or 0)
        reason = "DoesNotExist" if secret is None else "Reissuing"
        message = ("Issuing certificate as Secret does not exist" if secret is None else
                   "Issuing certificate as Secret was previously issued by a different issuer or does not match "
                   "the spec")
        conds = set_condition(status.get("conditions"), "Ready", "False", reason, message,
                              observedGeneration=meta.get("generation", 1))
        conds = set_condition(conds, "Issuing", "True", reason, message, observedGeneration=meta.get("generation", 1))
        ready_issuer = runtime.is_true(issuer, "Ready")
        cr_name = f"{meta['name']}-{revision + 1}"
        if runtime.has_fault("cert-stuck") or not ready_issuer:
            if issuer is None:
                why = (f'Referenced "{issuer_kind}" not found: {issuer_kind.lower()}.{GROUP} '
                       f'"{(spec.get("issuerRef") or {}).get("name", "")}" not found')
            elif not ready_issuer:
                why = f'Referenced "{issuer_kind}" does not have a Ready status condition'
            else:
                why = "Waiting for the issuer to sign the certificate request"
            if conds != status.get("conditions"):
                self._status(cert, {"conditions": conds})
            self._pending_request(cert, cr_name, why)
            return
        try:
            self._issue(cert, issuer, issuer_kind, revision + 1, cr_name)
        except (pki.PKIError, ValueError) as exc:
            conds = set_condition(conds, "Issuing", "False", "Failed", str(exc))
            self._status(cert, {"conditions": conds, "lastFailureTime": now_iso()})
            self.kube.event(cert, "Failed", f"The certificate request has failed to complete and will be retried: "
                                            f"{exc}", "Warning", ISSUING)

    def _pending_request(self, cert: dict, cr_name: str, message: str) -> None:
        ns = cert["metadata"]["namespace"]
        cr = self.kube.get(API, "CertificateRequest", cr_name, ns)
        if cr is None:
            key = pki.new_private_key("ECDSA")  # the CSR of this revision; the key is regenerated at issuance
            cr = self._create_request(cert, cr_name, pki.csr_pem(pki.make_csr(key, self._request(cert))))
        conds = set_condition((cr.get("status") or {}).get("conditions"), "Approved", "True", "cert-manager.io",
                              "Certificate request has been approved by cert-manager.io")
        conds = set_condition(conds, "Ready", "False", "Pending", message)
        if conds != (cr.get("status") or {}).get("conditions"):
            self._status(cr, {"conditions": conds})

    def _create_request(self, cert: dict, cr_name: str, csr: bytes) -> dict:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        revision = cr_name.rsplit("-", 1)[-1]
        cr = {"apiVersion": API, "kind": "CertificateRequest",
              "metadata": {"name": cr_name, "namespace": meta["namespace"],
                           "annotations": {"cert-manager.io/certificate-name": meta["name"],
                                           "cert-manager.io/certificate-revision": revision,
                                           "cert-manager.io/private-key-secret-name": f"{meta['name']}-{revision}"},
                           "ownerReferences": [owner_ref(cert)]},
              "spec": {"request": pki.b64(csr), "issuerRef": spec.get("issuerRef") or {},
                       "isCA": bool(spec.get("isCA")), "usages": list(spec.get("usages") or pki.DEFAULT_USAGES)}}
        if spec.get("duration"):
            cr["spec"]["duration"] = spec["duration"]
        try:
            return self.kube.create(cr)
        except ApiException as e:
            if e.status == 409:
                return self.kube.get(API, "CertificateRequest", cr_name, meta["namespace"])
            raise

    def _issue(self, cert: dict, issuer: dict, issuer_kind: str, revision: int, cr_name: str) -> None:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        ns = meta["namespace"]
        req = self._request(cert)
        pk = spec.get("privateKey") or {}
        key = pki.new_private_key(pk.get("algorithm") or "RSA", pk.get("size"))
        self.kube.event(cert, "Issuing", "Issuing certificate as Secret does not exist", "Normal", ISSUING)
        if self.kube.get(API, "CertificateRequest", cr_name, ns) is not None:
            self.kube.delete(API, "CertificateRequest", cr_name, ns)   # this revision's pending request
        cr = self._create_request(cert, cr_name, pki.csr_pem(pki.make_csr(key, req)))
        self.kube.event(cert, "Requested", f'Created new CertificateRequest resource "{cr_name}"', "Normal",
                        "cert-manager-certificates-request-manager")
        if "selfSigned" in issuer.get("spec", {}):
            leaf = pki.sign(key.public_key(), req, None, key)
            ca_pem = chain_pem = pki.cert_pem(leaf)
        else:
            pair, _, message = self._ca_pair(issuer)
            if pair is None:
                raise pki.PKIError(message)
            leaf = pki.sign(key.public_key(), req, pair.cert, pair.key)
            ca_secret = self.kube.get("v1", "Secret", issuer["spec"]["ca"]["secretName"],
                                      issuer["metadata"].get("namespace") or CLUSTER_RESOURCE_NAMESPACE) or {}
            ca_certs = pki.load_certs(pki.unb64((ca_secret.get("data") or {}).get("tls.crt")))
            ca_pem = pki.cert_pem(ca_certs[-1] if ca_certs else pair.cert)
            chain_pem = pki.cert_pem(leaf) + b"".join(pki.cert_pem(c) for c in ca_certs[:-1])
        conds = set_condition(None, "Approved", "True", "cert-manager.io",
                              "Certificate request has been approved by cert-manager.io")
        conds = set_condition(conds, "Ready", "True", "Issued", "Certificate fetched from issuer successfully")
        self._status(cr, {"conditions": conds, "certificate": pki.b64(chain_pem), "ca": pki.b64(ca_pem)})
        annotations = {"cert-manager.io/alt-names": ",".join(req.dns_names),
                       "cert-manager.io/certificate-name": meta["name"],
                       "cert-manager.io/common-name": req.common_name or "",
                       "cert-manager.io/ip-sans": ",".join(req.ip_addresses),
                       "cert-manager.io/issuer-group": GROUP, "cert-manager.io/issuer-kind": issuer_kind,
                       "cert-manager.io/issuer-name": issuer["metadata"]["name"],
                       "cert-manager.io/uri-sans": ",".join(req.uris)}
        template = spec.get("secretTemplate") or {}
        annotations.update(template.get("annotations") or {})
        labels = dict(template.get("labels") or {}, **{"controller.cert-manager.io/fao": "true"})
        data = {"tls.crt": pki.b64(chain_pem), "tls.key": pki.b64(pki.key_pem(key, pk.get("encoding") or "PKCS1")),
                "ca.crt": pki.b64(ca_pem)}
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": spec["secretName"], "namespace": ns, "annotations": annotations,
                               "labels": labels}, "data": data}
        if self.kube.get("v1", "Secret", spec["secretName"], ns) is None:
            written = self.kube.create(secret)
        else:
            written = self.kube.patch("v1", "Secret", spec["secretName"], ns,
                                      {"metadata": {"annotations": annotations, "labels": labels}, "data": data})
        self._ready(cert, written, revision)
        self.kube.event(cert, "Issuing", "The certificate has been successfully issued", "Normal", ISSUING)

    def _ready(self, cert: dict, secret: dict, revision: int) -> None:
        leaf = pki.load_certs(pki.unb64((secret.get("data") or {}).get("tls.crt")))[0]
        spec = cert.get("spec") or {}
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        renew_before = pki.parse_duration(spec.get("renewBefore"), (not_after - not_before) / 3)
        status = cert.get("status") or {}
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "Issuing"]
        conds = set_condition(conds, "Ready", "True", "Ready", "Certificate is up to date and has not expired",
                              observedGeneration=cert["metadata"].get("generation", 1))
        fresh = self.kube.get(API, "Certificate", cert["metadata"]["name"], cert["metadata"]["namespace"]) or cert
        body = {"conditions": conds, "notBefore": rfc3339(not_before), "notAfter": rfc3339(not_after),
                "renewalTime": rfc3339(not_after - renew_before), "revision": revision,
                "lastFailureTime": None, "failedIssuanceAttempts": None}
        self._status(fresh, body)


# ---------------------------------------------------------------------------------------------------------------
# cainjector

TARGETS = (("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
           ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
           ("apiextensions.k8s.io/v1", "CustomResourceDefinition"))


class CAInjector:
    def __init__(self, kube: Kube):
        self.kube = kube
        self.queue = WorkQueue(self.inject)
        self.targets = [Informer(kube, api, kind, lambda t, o: self._target_event(t, o)) for api, kind in TARGETS]
        self.secrets = Informer(kube, "v1", "Secret", lambda t, o: self._source_event(o))
        self.certificates = Informer(kube, API, "Certificate", lambda t, o: self._source_event(o))

    def start(self) -> None:
        for informer in (self.secrets, self.certificates, *self.targets):
            informer.start()

    def _target_event(self, event_type: str, obj: dict) -> None:
        if event_type != "DELETED" and _source_annotation(obj):
            self.queue.add((obj["apiVersion"], obj["kind"], obj["metadata"]["name"]))

    def _source_event(self, obj: dict) -> None:
        for informer in self.targets:
            for target in informer.items():
                if _source_annotation(target):
                    self.queue.add((target["apiVersion"], target["kind"], target["metadata"]["name"]))

    def _source(self, obj: dict) -> tuple[str, str] | None:
        annotations = obj["metadata"].get("annotations") or {}
        if annotations.get(INJECT_CA_FROM_SECRET):
            ns, _, name = annotations[INJECT_CA_FROM_SECRET].partition("/")
            return (ns, name) if name else None
        if annotations.get(INJECT_CA_FROM):
            ns, _, cert_name = annotations[INJECT_CA_FROM].partition("/")
            cert = self.kube.get(API, "Certificate", cert_name, ns)
            secret = ((cert or {}).get("spec") or {}).get("secretName")
            return (ns, secret) if secret else None
        return None

    def _bundle(self, obj: dict) -> str | None:
        src = self._source(obj)
        secret = self.kube.get("v1", "Secret", src[1], src[0]) if src else None
        if secret is None:
            return None
        if (obj["metadata"].get("annotations") or {}).get(INJECT_CA_FROM_SECRET) and \
                (secret["metadata"].get("annotations") or {}).get(ALLOW_DIRECT) != "true":
            return None   # cainjector refuses a Secret not marked for direct injection
        ca = pki.unb64((secret.get("data") or {}).get("ca.crt"))
        return pki.b64(ca) if ca else None

    def inject(self, key) -> None:
        api, kind, name = key
        obj = self.kube.get(api, kind, name)
        if obj is None:
            return
        bundle = self._bundle(obj)
        if bundle is None:
            return
        if name in runtime.fault_targets("cabundle-invalid"):
            bundle = pki.b64(pki.stranger_ca().cert_pem)
        if kind == "CustomResourceDefinition":
            conversion = (obj.get("spec") or {}).get("conversion") or {}
            webhook = conversion.get("webhook")
            if conversion.get("strategy") != "Webhook" or not isinstance(webhook, dict):
                return
            if (webhook.get("clientConfig") or {}).get("caBundle") == bundle:
                return
            webhook.setdefault("clientConfig", {})["caBundle"] = bundle
            body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                    "spec": {"conversion": conversion}}
        else:
            webhooks = obj.get("webhooks") or []
            if all((w.get("clientConfig") or {}).get("caBundle") == bundle for w in webhooks):
                return
            for webhook in webhooks:
                webhook.setdefault("clientConfig", {})["caBundle"] = bundle
            # webhooks is an atomic list: the whole list with the resourceVersion (a concurrent writer -> 409, retry)
            body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "webhooks": webhooks}
        self.kube.patch(api, kind, name, None, body)
        log.info("injected the CA into %s %s", kind, name)


def _source_annotation(obj: dict) -> bool:
    annotations = obj["metadata"].get("annotations") or {}
    return bool(annotations.get(INJECT_CA_FROM) or annotations.get(INJECT_CA_FROM_SECRET))


# ---------------------------------------------------------------------------------------------------------------
# webhook

def _errors(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"


def _go_bytes(data: bytes) -> str:
    return "[]byte{" + ", ".join(f"0x{b:x}" for b in data) + "}"


def validate(request: dict) -> Admission:
    kind = (request.get("kind") or {}).get("kind")
    if request.get("operation") == "DELETE":
        return Admission()
    spec = (request.get("object") or {}).get("spec") or {}
    errors: list[str] = []
    if kind == "Certificate":
        if not spec.get("secretName"):
            errors.append("spec.secretName: Required value: must be specified")
        if not (spec.get("issuerRef") or {}).get("name"):
            errors.append("spec.issuerRef.name: Required value: must be specified")
        if not any(spec.get(k) for k in ("commonName", "dnsNames", "uris", "ipAddresses", "emailAddresses")):
            errors.append('spec: Invalid value: "": at least one of commonName, dnsNames, uris ipAddresses, or '
                          'emailAddresses must be set')
        if spec.get("duration"):
            try:
                if pki.parse_duration(spec["duration"], datetime.timedelta(0)) < datetime.timedelta(hours=1):
                    errors.append(f'spec.duration: Invalid value: "{spec["duration"]}": certificate duration '
                                  f'must be greater than 1h0m0s')
            except pki.PKIError as exc:
                errors.append(f'spec.duration: Invalid value: "{spec["duration"]}": {exc}')
    elif kind == "CertificateRequest":
        if not (spec.get("issuerRef") or {}).get("name"):
            errors.append("spec.issuerRef.name: Required value: must be specified")
        raw = spec.get("request") or ""
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            data = raw.encode() if isinstance(raw, str) else b""
        try:
            pki.load_csr(data)
        except (ValueError, TypeError):
            errors.append(f"spec.request: Invalid value: {_go_bytes(data)}: error decoding certificate request "
                          f"PEM block")
    elif kind in ("Issuer", "ClusterIssuer"):
        kinds = [k for k in ("acme", "ca", "selfSigned", "vault", "venafi") if k in spec]
        if not kinds:
            errors.append("spec: Required value: at least one issuer must be configured")
        elif len(kinds) > 1:
            errors.append("spec: Forbidden: may not specify more than one issuer type")
        if "ca" in spec and not (spec.get("ca") or {}).get("secretName"):
            errors.append("spec.ca.secretName: Required value")
    return Admission.deny(_errors(errors)) if errors else Admission()


def mutate(request: dict) -> Admission:
    """CertificateRequests carry who asked for them (pkg/webhook/handlers: the requester's user info)."""
    if (request.get("kind") or {}).get("kind") != "CertificateRequest" or request.get("operation") != "CREATE":
        return Admission()
    user = request.get("userInfo") or {}
    patch = [{"op": "add", "path": "/spec/username", "value": user.get("username", "")},
             {"op": "add", "path": "/spec/groups", "value": list(user.get("groups") or [])}]
    if user.get("uid"):
        patch.append({"op": "add", "path": "/spec/uid", "value": user["uid"]})
    return Admission(patch=patch)


class Webhook:
    """The cert-manager webhook: serves with a certificate from its own CA, which it keeps in a Secret."""

    def __init__(self, kube: Kube, args: argparse.Namespace):
        self.kube, self.args = kube, args
        self.server = runtime.WebhookServer(runtime.listen_address(), args.secure_port,
                                            {"/validate": validate, "/mutate": mutate})

    def start(self) -> None:
        ca = self._ca()
        dns = [n for n in (self.args.dynamic_serving_dns_names or "").split(",") if n]
        serving = pki.serving_pair(ca, dns)
        self.server.set_certificate(serving.cert_pem, serving.key_pem)
        self.server.serve_in_background()
        log.info("serving on %s:%d for %s", *self.server.address, ", ".join(dns))

    def _ca(self) -> pki.KeyPair:
        ns, name = self.args.dynamic_serving_ca_secret_namespace, self.args.dynamic_serving_ca_secret_name
        secret = self.kube.get("v1", "Secret", name, ns)
        data = (secret or {}).get("data") or {}
        try:
            return pki.load_pair(pki.unb64(data.get("tls.crt")), pki.unb64(data.get("tls.key")))
        except pki.PKIError:
            pass
        key = pki.new_private_key("ECDSA")
        ca = pki.KeyPair(pki.sign(key.public_key(), pki.Request(
            common_name="cert-manager-webhook-ca", is_ca=True, duration=datetime.timedelta(days=365),
            usages=("digital signature", "key encipherment", "cert sign")), None, key), key)
        body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "namespace": ns, "annotations": {ALLOW_DIRECT: "true"}},
                "data": {"ca.crt": pki.b64(ca.cert_pem), "tls.crt": pki.b64(ca.cert_pem),
                         "tls.key": pki.b64(ca.key_pem)}}
        if secret is None:
            self.kube.create(body)
        else:
            self.kube.patch("v1", "Secret", name, ns, body)
        return ca


def _webhook_args(argv: list[str]) -> argparse.Namespace:
    """The flags of the Helm chart's webhook Deployment; defaults from the profile where the chart is synthesised."""
    ns = runtime.pod_env("POD_NAMESPACE")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--secure-port", type=int, default=runtime.ports().get("https", 10250))
    parser.add_argument("--dynamic-serving-ca-secret-namespace", default=ns)
    parser.add_argument("--dynamic-serving-ca-secret-name", default="cert-manager-webhook-ca")
    parser.add_argument("--dynamic-serving-dns-names",
                        default=f"cert-manager-webhook,cert-manager-webhook.{ns},cert-manager-webhook.{ns}.svc")
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    role = argv.pop(0) if argv else ""
    if role not in ("controller", "cainjector", "webhook"):
        print("usage: python -m twin.standins.certmanager controller|cainjector|webhook [flags]", file=sys.stderr)
        return 2

    def start(stop: threading.Event) -> None:
        kube = Kube()
        if role == "controller":
            Controller(kube).start()
        elif role == "cainjector":
            CAInjector(kube).start()
        else:
            Webhook(kube, _webhook_args(argv)).start()

    return runtime.run(start, f"cert-manager-{role}")


if __name__ == "__main__":
    sys.exit(main())
