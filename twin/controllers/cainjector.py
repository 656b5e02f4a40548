"""cert-manager cainjector stand-in: fills caBundle from `cert-manager.io/inject-ca-from[-secret]` sources.

Webhook configurations get every webhook's clientConfig.caBundle, CRDs their conversion webhook's; the bundle is the
base64 of the source Secret's ca.crt and follows the Secret when it changes. Runs while the cainjector Deployment is
Ready (when the profile has one). Configurations named by a cabundle-invalid fault are left alone.
"""
from __future__ import annotations

import logging

from twin import pki
from twin.api_store import ApiError
from twin.controllers.base import Controller

log = logging.getLogger("twin.controllers.cainjector")

INJECT_CA_FROM = "cert-manager.io/inject-ca-from"
INJECT_CA_FROM_SECRET = "cert-manager.io/inject-ca-from-secret"
ALLOW_DIRECT = "cert-manager.io/allow-direct-injection"
TARGETS = (("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
           ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
           ("apiextensions.k8s.io/v1", "CustomResourceDefinition"))


class CAInjectorController(Controller):
    name = "cainjector"

    def __init__(self, ctx):
        super().__init__(ctx)
        comp = ctx.profile.components["cert-manager"]
        gate = next((d for d in comp.inventory.get("deployments") or [] if "cainjector" in d["name"]), None)
        self.gate = (gate["namespace"], gate["name"]) if gate else None
        self._gate_open = gate is None

    def _open(self) -> bool:
        if not self._gate_open and self.gate:
            self._gate_open = self.ctx.deployment_ready(*self.gate)
        return self._gate_open

    def on_event(self, event_type: str, obj: dict) -> None:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        meta = obj.get("metadata") or {}
        if kind == "Deployment" and self.gate and (meta.get("namespace"), meta.get("name")) == self.gate:
            was = self._gate_open
            self._gate_open = self.ctx.deployment_ready(*self.gate)
            if self._gate_open and not was:
                self.inject_all()
            return
        if event_type == "DELETED" or not self._open():
            return
        if (api, kind) in TARGETS:
            self.inject(obj)
        elif kind == "Secret" and api == "v1":
            self._source_changed(meta.get("namespace"), meta.get("name"))
        elif kind == "Certificate" and api == "cert-manager.io/v1":
            self._source_changed(meta.get("namespace"), (obj.get("spec") or {}).get("secretName"))

    def inject_all(self) -> None:
        for api, kind in TARGETS:
            for obj in self.ctx.list(api, kind):
                self.inject(obj)

    def _source_changed(self, namespace: str, secret_name: str | None) -> None:
        if not secret_name:
            return
        for api, kind in TARGETS:
            for obj in self.ctx.list(api, kind):
                src = self._source(obj)
                if src and src == (namespace, secret_name):
                    self.inject(obj)

    def _source(self, obj: dict) -> tuple[str, str] | None:
        """(namespace, secret) the object's CA comes from, or None."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if annotations.get(INJECT_CA_FROM_SECRET):
            ns, _, name = annotations[INJECT_CA_FROM_SECRET].partition("/")
            return (ns, name) if name else None
        if annotations.get(INJECT_CA_FROM):
            ns, _, cert_name = annotations[INJECT_CA_FROM].partition("/")
            cert = self.ctx.get("cert-manager.io/v1", "Certificate", cert_name, ns) \
                if self.ctx.served("cert-manager.io/v1", "Certificate") else None
            secret = ((cert or {}).get("spec") or {}).get("secretName")
            return (ns, secret) if secret else None
        return None

    def _bundle(self, obj: dict) -> str | None:
        src = self._source(obj)
        if src is None:
            return None
        secret = self.ctx.get("v1", "Secret", src[1], src[0])
        if secret is None:
            return None
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if annotations.get(INJECT_CA_FROM_SECRET) and \
                ((secret["metadata"].get("annotations") or {}).get(ALLOW_DIRECT) != "true"):
            return None  # cainjector refuses secrets not marked for direct injection
        ca = pki.unb64((secret.get("data") or {}).get("ca.crt"))
        return pki.b64(ca) if ca else None

    def inject(self, obj: dict) -> None:
        kind = obj["kind"]
        name = obj["metadata"]["name"]
        if kind != "CustomResourceDefinition" and name in self.ctx.faults.targets("cabundle-invalid"):
            return
        bundle = self._bundle(obj)
        if bundle is None:
            return
        for _ in range(3):
            live = self.ctx.get(obj["apiVersion"], kind, name)
            if live is None or self._source(live) is None:
                return
            changed = False
            if kind == "CustomResourceDefinition":
                webhook = ((live.get("spec") or {}).get("conversion") or {}).get("webhook")
                if isinstance(webhook, dict) and (live["spec"]["conversion"].get("strategy") == "Webhook"):
                    client = webhook.setdefault("clientConfig", {})
                    if client.get("caBundle") != bundle:
                        client["caBundle"] = bundle
                        changed = True
            else:
                for webhook in live.get("webhooks") or []:
                    client = webhook.setdefault("clientConfig", {})
                    if client.get("caBundle") != bundle:
                        client["caBundle"] = bundle
                        changed = True
            if not changed:
                return
            try:
                self.store.update(live)  # carries resourceVersion: a concurrent writer makes us retry
                return
            except ApiError as exc:
                if exc.code != 409:
                    log.warning("caBundle of %s %s not injected: %s", kind, name, exc.message)
                    return
