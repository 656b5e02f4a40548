"""Admission webhooks, emulated the way kube-apiserver calls them.

For every create/update (dry-run included) the webhook configurations in the store whose rules and selectors match
the request are "called": mutating first, then validating. A call needs the backing Service with ready Endpoints and
a caBundle that verifies the component's serving certificate (real X.509); then the component's validator decides.
Failures carry the real kube-apiserver / webhook texts.

Also here: the cert-manager webhook's self-generated CA Secret (what the real webhook writes for itself) and the
cabundle-invalid fault.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import logging
import re

from twin import pki
from twin.controllers.base import Controller
from twin.seed import INJECT_CA_FROM_SECRET

log = logging.getLogger("twin.controllers.webhooks")

ADMISSION_API = "admissionregistration.k8s.io/v1"
CONFIG_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
ADMIN_USER = "kubernetes-admin"


class Denied(Exception):
    """A webhook's own denial (the reason text; code as the webhook server answers)."""

    def __init__(self, reason: str, code: int = 400):
        super().__init__(reason)
        self.reason, self.code = reason, code


# ---------------------------------------------------------------------------------------------------------------
# label selectors (metav1.LabelSelector)

def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    selector, labels = selector or {}, labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and (not present or labels[key] not in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def rule_matches(rule: dict, req) -> bool:
    def has(values, value):
        return "*" in (values or []) or value in (values or [])
    resources = rule.get("resources") or []
    resource_ok = has(resources, req.resource) or "*/*" in resources
    scope = rule.get("scope") or "*"
    namespaced = bool(req.namespace)
    scope_ok = scope == "*" or (scope == "Namespaced") == namespaced
    return (has(rule.get("operations"), req.operation) and has(rule.get("apiGroups"), req.group)
            and has(rule.get("apiVersions"), req.version) and resource_ok and scope_ok)


# ---------------------------------------------------------------------------------------------------------------
# the components' validators and defaulters: fn(req, obj, ctx) -> mutated obj | None, raise Denied

_ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PREDICTORS = {"sklearn": "SKLearn", "xgboost": "XGBoost", "tensorflow": "Tensorflow", "pytorch": "PyTorch",
               "triton": "Triton", "onnx": "ONNX", "pmml": "PMML", "lightgbm": "LightGBM", "paddle": "Paddle",
               "huggingface": "HuggingFace", "model": "Model", "containers": "Custom"}


def _errors(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"


def certmanager_validate(req, obj, ctx):
    if req.group not in ("cert-manager.io", "acme.cert-manager.io"):
        return None
    spec = obj.get("spec") or {}
    errors = []
    if req.kind == "Certificate":
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
    elif req.kind == "CertificateRequest":
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
    elif req.kind in ("Issuer", "ClusterIssuer"):
        kinds = [k for k in ("acme", "ca", "selfSigned", "vault", "venafi") if k in spec]
        if not kinds:
            errors.append("spec: Required value: at least one issuer must be configured")
        elif len(kinds) > 1:
            errors.append("spec: Forbidden: may not specify more than one issuer type")
        if "ca" in spec and not (spec.get("ca") or {}).get("secretName"):
            errors.append("spec.ca.secretName: Required value")
    if errors:
        raise Denied(_errors(errors))
    return None


def _go_bytes(data: bytes) -> str:
    return "[]byte{" + ", ".join(f"0x{b:x}" for b in data) + "}"


def kserve_default(req, obj, ctx):
    if req.kind != "InferenceService":
        return None
    predictor = (obj.get("spec") or {}).get("predictor") or {}
    changed = False
    for key in _PREDICTORS:
        impl = predictor.get(key)
        if isinstance(impl, dict) and key != "containers":
            resources = impl.setdefault("resources", {})
            for part in ("requests", "limits"):
                values = resources.setdefault(part, {})
                for res, default in (("cpu", "1"), ("memory", "2Gi")):
                    if res not in values:
                        values[res] = default
                        changed = True
    return obj if changed else None


def kserve_validate(req, obj, ctx):
    if req.kind != "InferenceService":
        return None
    name = obj["metadata"].get("name", "")
    if req.operation == "CREATE" and not _ISVC_NAME.match(name):
        raise Denied(f'The InferenceService "{name}" is invalid: a InferenceService name must consist of lower case '
                     f"alphanumeric characters or '-', and must start with alphabetical character. (e.g. \"my-name\" "
                     f"or \"abc-123\", regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')", 403)
    predictor = (obj.get("spec") or {}).get("predictor")
    if not isinstance(predictor, dict):
        raise Denied("spec.predictor: Required value", 403)
    impls = [k for k in _PREDICTORS if predictor.get(k)]
    if len(impls) != 1:
        names = ", ".join(_PREDICTORS[k] for k in _PREDICTORS)
        raise Denied(f"Exactly one of [{names}] must be specified in PredictorSpec", 403)
    impl = predictor[impls[0]]
    if impls[0] == "model" and not ((impl or {}).get("modelFormat") or {}).get("name"):
        raise Denied("spec.predictor.model.modelFormat.name: Required value", 403)
    uri = (impl or {}).get("storageUri") if isinstance(impl, dict) else None
    if uri and not re.match(r"^(gs|s3|pvc|file|https?|hdfs|webhdfs|hf|oci)://|^/|^https://.+\.blob\.core\.", uri):
        raise Denied(f"storageUri, must be one of: [gs://, s3://, pvc://, file://, https://, http://, hdfs://, "
                     f"webhdfs://] or match https://{{}}.blob.core.windows.net/{{}}/{{}} or be an absolute or "
                     f"relative local path. StorageUri [{uri}] is not supported.", 403)
    return None


def knative_validate(req, obj, ctx):
    if req.group != "serving.knative.dev":
        return None
    spec = obj.get("spec") or {}
    if req.kind in ("Service", "Configuration"):
        pod, prefix = ((spec.get("template") or {}).get("spec") or {}), "spec.template.spec"
    elif req.kind == "Revision":
        pod, prefix = spec, "spec"
    else:
        return None
    containers = pod.get("containers") or []
    if not containers:
        raise Denied(f"validation failed: missing field(s): {prefix}.containers")
    missing = [f"{prefix}.containers[{n}].image" for n, c in enumerate(containers) if not (c or {}).get("image")]
    if missing:
        raise Denied(f"validation failed: missing field(s): {', '.join(missing)}")
    if len(containers) > 1 and sum(1 for c in containers if (c or {}).get("ports")) != 1:
        raise Denied(f"validation failed: expected exactly one, got neither: {prefix}.containers[*].ports")
    return None


def knative_default(req, obj, ctx):
    if req.group != "serving.knative.dev" or req.kind not in ("Service", "Configuration", "Route"):
        return None
    annotations = obj["metadata"].setdefault("annotations", {})
    before = dict(annotations)
    if req.operation == "CREATE":
        annotations.setdefault("serving.knative.dev/creator", ADMIN_USER)
    annotations["serving.knative.dev/lastModifier"] = ADMIN_USER
    return obj if annotations != before else None


def istio_validate(req, obj, ctx):
    if req.group != "networking.istio.io":
        return None
    spec = obj.get("spec") or {}
    if req.kind == "Gateway" and not spec.get("servers"):
        raise Denied("configuration is invalid: gateway must have at least one server")
    if req.kind == "VirtualService" and not spec.get("hosts") and not (obj["metadata"].get("namespace") and
                                                                        spec.get("gateways") == ["mesh"]):
        raise Denied("configuration is invalid: virtual service must have at least one host")
    return None


HANDLERS = {
    ("ValidatingWebhookConfiguration", "webhook.cert-manager.io"): certmanager_validate,
    ("MutatingWebhookConfiguration", "inferenceservice.kserve-webhook-server.defaulter"): kserve_default,
    ("ValidatingWebhookConfiguration", "inferenceservice.kserve-webhook-server.validator"): kserve_validate,
    ("ValidatingWebhookConfiguration", "validation.webhook.serving.knative.dev"): knative_validate,
    ("MutatingWebhookConfiguration", "webhook.serving.knative.dev"): knative_default,
    ("ValidatingWebhookConfiguration", "rev.validation.istio.io"): istio_validate,
    ("ValidatingWebhookConfiguration", "validation.istio.io"): istio_validate,
}


# ---------------------------------------------------------------------------------------------------------------
# the apiserver side

class AdmissionEmulator:
    """`api.add_admission(AdmissionEmulator(ctx))`."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.AdmissionDenied = None
        # service "ns/name" -> the profile's webhook inventory entry (ca, inject_ca_from)
        self.services: dict[str, dict] = {}
        for _, entry in ctx.profile.inventory("webhooks"):
            if entry.get("service") and entry.get("ca"):
                self.services.setdefault(entry["service"], entry)

    def _denied(self, message: str, code: int):
        from twin.apiserver import AdmissionDenied
        return AdmissionDenied(message, code)

    def __call__(self, req) -> dict | None:
        if getattr(req, "subresource", "") or req.operation not in ("CREATE", "UPDATE"):
            return None
        obj = req.object
        mutated = None
        ns_labels = None
        for kind in CONFIG_KINDS:
            configs = sorted(self.ctx.list(ADMISSION_API, kind), key=lambda c: c["metadata"]["name"])
            for config in configs:
                for webhook in config.get("webhooks") or []:
                    if not any(rule_matches(r, req) for r in webhook.get("rules") or []):
                        continue
                    if req.namespace:
                        if ns_labels is None:
                            ns = self.ctx.get("v1", "Namespace", req.namespace)
                            ns_labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
                        if not selector_matches(webhook.get("namespaceSelector"), ns_labels):
                            continue
                    elif req.kind == "Namespace" and not selector_matches(webhook.get("namespaceSelector"),
                                                                          obj["metadata"].get("labels")):
                        continue
                    obj_labels = obj["metadata"].get("labels")
                    old_labels = ((req.old_object or {}).get("metadata") or {}).get("labels")
                    if not (selector_matches(webhook.get("objectSelector"), obj_labels) or
                            (req.old_object is not None and
                             selector_matches(webhook.get("objectSelector"), old_labels))):
                        continue
                    result = self._call(kind, config, webhook, req, obj)
                    if kind == "MutatingWebhookConfiguration" and isinstance(result, dict):
                        obj = mutated = result
                        req.object = obj
        return mutated

    def _call(self, kind: str, config: dict, webhook: dict, req, obj: dict):
        name = webhook.get("name", "")
        error = self.transport_error(webhook)
        if error:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return None
            raise self._denied(f'Internal error occurred: failed calling webhook "{name}": {error}', 500)
        handler = HANDLERS.get((kind, name))
        if handler is None:
            return None
        try:
            return handler(req, obj, self.ctx)
        except Denied as denied:
            raise self._denied(f'admission webhook "{name}" denied the request: {denied.reason}', denied.code)

    # -- transport: Service, Endpoints, TLS ------------------------------------------------------------------------

    def transport_error(self, webhook: dict) -> str | None:
        client = webhook.get("clientConfig") or {}
        svc = client.get("service")
        if not svc:
            return None  # url webhooks (outside the cluster) are not emulated
        ns, name = svc.get("namespace", ""), svc.get("name", "")
        port = svc.get("port", 443)
        path = svc.get("path") or ""
        timeout = webhook.get("timeoutSeconds", 10)
        url = f"https://{name}.{ns}.svc:{port}{path}?timeout={timeout}s"
        post = f'failed to call webhook: Post "{url}"'
        service = self.ctx.get("v1", "Service", name, ns)
        if service is None:
            return f'{post}: service "{name}" not found'
        endpoints = self.ctx.get("v1", "Endpoints", name, ns)
        if not any(s.get("addresses") for s in (endpoints or {}).get("subsets") or []):
            return f'{post}: no endpoints available for service "{name}"'
        raw = client.get("caBundle") or ""
        bundle = pki.unb64(raw) if raw else b""
        roots = pki.load_certs(bundle)
        if bundle and not roots:
            return "could not get REST client: unable to load root certificates: unable to parse bytes as PEM block"
        leaf, error = self.serving_certificate(ns, name, service)
        if error:
            return f"{post}: {error}"
        if leaf is None:
            return None  # a component the profile does not describe: TLS not emulated
        if not any(pki.issued_by(leaf, ca) for ca in roots):
            return f"{post}: tls: failed to verify certificate: x509: certificate signed by unknown authority"
        host = f"{name}.{ns}.svc"
        names = pki.dns_names(leaf)
        if host not in names:
            valid = ", ".join(names) if names else "none"
            return f"{post}: tls: failed to verify certificate: x509: certificate is valid for {valid}, not {host}"
        now = datetime.datetime.now(datetime.timezone.utc)
        if now > leaf.not_valid_after_utc or now < leaf.not_valid_before_utc:
            return (f"{post}: tls: failed to verify certificate: x509: certificate has expired or is not yet valid: "
                    f"current time {now:%Y-%m-%dT%H:%M:%SZ} is after {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
        return None

    def serving_certificate(self, ns: str, name: str, service: dict):
        """(leaf certificate the webhook server presents, transport error) for a Service."""
        entry = self.services.get(f"{ns}/{name}")
        if entry is None:
            return None, None
        refused = f"dial tcp {(service.get('spec') or {}).get('clusterIP', '10.96.0.1')}:443: connect: " \
                  f"connection refused"
        if entry.get("ca") == "cert-manager":
            inject = entry.get("inject_ca_from") or ""
            cert_ns, _, cert_name = inject.partition("/")
            cert = self.ctx.get("cert-manager.io/v1", "Certificate", cert_name, cert_ns) \
                if cert_name and self.ctx.served("cert-manager.io/v1", "Certificate") else None
            secret_name = ((cert or {}).get("spec") or {}).get("secretName") or \
                (name[: -len("-service")] if name.endswith("-service") else name) + "-cert"
            secret = self.ctx.get("v1", "Secret", secret_name, cert_ns or ns)
            certs = pki.load_certs(pki.unb64(((secret or {}).get("data") or {}).get("tls.crt")))
            if not certs:
                return None, refused  # the webhook server cannot start without its certificate
            return certs[0], None
        ca = self_ca(self.ctx, entry)
        return pki.serving_pair(ca, [name, f"{name}.{ns}", f"{name}.{ns}.svc"]).cert, None


def self_ca(ctx, entry: dict) -> pki.KeyPair:
    """The CA of a component that serves its own webhook TLS (from its CA Secret when it keeps one)."""
    inject = entry.get("inject_ca_from") or ""
    if inject.startswith("secret:"):
        ns, _, name = inject[len("secret:"):].partition("/")
        secret = ctx.get("v1", "Secret", name, ns)
        data = (secret or {}).get("data") or {}
        try:
            return pki.load_pair(pki.unb64(data.get("tls.crt")), pki.unb64(data.get("tls.key")))
        except pki.PKIError:
            pass
    return pki.component_ca(entry["service"])


# ---------------------------------------------------------------------------------------------------------------
# controllers

class SelfServingController(Controller):
    """Components that generate their own webhook CA into a Secret (the cert-manager webhook): once their Deployment
    is Ready the Secret exists, marked for direct injection, as the real webhook writes it."""

    name = "self-serving"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.entries = []
        for comp_name, entry in ctx.profile.inventory("webhooks"):
            inject = entry.get("inject_ca_from") or ""
            if entry.get("ca") == "self" and inject.startswith("secret:") and entry.get("service"):
                if all(e["inject_ca_from"] != inject for e in self.entries):
                    self.entries.append(entry)

    def on_event(self, event_type: str, obj: dict) -> None:
        if obj.get("kind") not in ("Deployment", "Secret", "Endpoints"):
            return
        for entry in self.entries:
            self._ensure(entry)

    def _ensure(self, entry: dict) -> None:
        svc_ns, _, svc_name = entry["service"].partition("/")
        endpoints = self.ctx.get("v1", "Endpoints", svc_name, svc_ns)
        if not any(s.get("addresses") for s in (endpoints or {}).get("subsets") or []):
            return  # the webhook pod is not running
        ns, _, name = entry["inject_ca_from"][len("secret:"):].partition("/")
        if self.ctx.get("v1", "Secret", name, ns) is not None:
            return
        ca = pki.component_ca(entry["service"])
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": name, "namespace": ns,
                               "annotations": {"cert-manager.io/allow-direct-injection": "true"}},
                  "data": {"ca.crt": pki.b64(ca.cert_pem), "tls.crt": pki.b64(ca.cert_pem),
                           "tls.key": pki.b64(ca.key_pem)}}
        try:
            self.store.create(secret)
        except Exception as exc:  # noqa: BLE001 - namespace gone, already there
            log.debug("webhook CA secret %s/%s not created: %s", ns, name, exc)


class CABundleFaultController(Controller):
    """cabundle-invalid: the configuration's caBundle is a valid PEM of a different CA, whoever writes it."""

    name = "cabundle-invalid"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.targets = ctx.faults.targets("cabundle-invalid")
        self.bundle = pki.b64(pki.component_ca("twin-fault/unrelated-ca").cert_pem)

    def on_event(self, event_type: str, obj: dict) -> None:
        if event_type == "DELETED" or obj.get("kind") not in CONFIG_KINDS:
            return
        if obj["metadata"]["name"] not in self.targets:
            return
        changed = False
        for webhook in obj.get("webhooks") or []:
            client = webhook.setdefault("clientConfig", {})
            if client.get("caBundle") != self.bundle:
                client["caBundle"] = self.bundle
                changed = True
        if changed:
            obj["metadata"].pop("resourceVersion", None)
            try:
                self.store.update(obj)
            except Exception as exc:  # noqa: BLE001
                log.debug("cabundle-invalid not applied to %s: %s", obj["metadata"]["name"], exc)


class CRDMissingFaultController(Controller):
    """crd-missing: the CRD is removed again right after anything creates it."""

    name = "crd-missing"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.targets = ctx.faults.targets("crd-missing")

    def on_event(self, event_type: str, obj: dict) -> None:
        if event_type != "DELETED" and obj.get("kind") == "CustomResourceDefinition" and \
                obj["metadata"]["name"] in self.targets:
            self.ctx.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", obj["metadata"]["name"])


__all__ = ["AdmissionEmulator", "SelfServingController", "CABundleFaultController", "CRDMissingFaultController",
           "selector_matches", "rule_matches", "HANDLERS", "INJECT_CA_FROM_SECRET"]
