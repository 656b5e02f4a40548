"""Webhook TLS the way istiod and knative.dev/pkg manage it themselves: a CA kept in a Secret of the component, a
serving certificate for the webhook Service's names, and the caBundle written into the component's own webhook
configurations (those whose clientConfig names its Service), kept there when something else changes it.

Fault cabundle-invalid:<configuration> makes the component write a different CA into that configuration.
"""
from __future__ import annotations

import datetime
import logging
import threading

from kubernetes.client.rest import ApiException

from twin import pki
from twin.standins import runtime
from twin.standins.runtime import Informer, Kube

log = logging.getLogger("twin.standin.selfca")

ADMISSION = "admissionregistration.k8s.io/v1"


def load_or_create_ca(kube: Kube, namespace: str, secret_name: str, common_name: str,
                      cert_key: str = "ca-cert.pem", key_key: str = "ca-key.pem",
                      lifetime: datetime.timedelta = datetime.timedelta(days=3650),
                      renew_before: datetime.timedelta = datetime.timedelta(0)) -> pki.KeyPair:
    """The CA kept in the Secret, or a new one when it is absent or expires within `renew_before` (as knative.dev/pkg
    renews its one-week webhook certificates a day before they expire)."""
    secret = kube.get("v1", "Secret", secret_name, namespace)
    data = (secret or {}).get("data") or {}
    try:
        pair = pki.load_pair(pki.unb64(data.get(cert_key)), pki.unb64(data.get(key_key)))
        if pair.cert.not_valid_after_utc - renew_before > datetime.datetime.now(datetime.timezone.utc):
            return pair
    except pki.PKIError:
        pass
    ca = new_ca(common_name, lifetime)
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name, "namespace": namespace},
            "data": {cert_key: pki.b64(ca.cert_pem), key_key: pki.b64(ca.key_pem)}}
    try:
        if secret is None:
            kube.create(body)
        else:
            kube.patch("v1", "Secret", secret_name, namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise
        return load_or_create_ca(kube, namespace, secret_name, common_name, cert_key, key_key, lifetime,  # lost a race
                                 renew_before)
    return ca


def new_ca(common_name: str, lifetime: datetime.timedelta) -> pki.KeyPair:
    key = pki.new_private_key("ECDSA")
    return pki.KeyPair(pki.sign(key.public_key(), pki.Request(
        common_name=common_name, is_ca=True, duration=lifetime,
        usages=("digital signature", "key encipherment", "cert sign")), None, key), key)


def service_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


class BundleKeeper:
    """Keeps the caBundle of every webhook that calls `service` in `namespace` equal to `ca` (and, when asked,
    its failurePolicy Fail once the component serves, as istiod does for its validator)."""

    def __init__(self, kube: Kube, namespace: str, service: str, ca: pki.KeyPair, fail_closed: bool = False):
        self.kube, self.namespace, self.service, self.ca, self.fail_closed = kube, namespace, service, ca, fail_closed
        self._lock = threading.Lock()
        self.informers = [Informer(kube, ADMISSION, kind, self._changed)
                          for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")]

    def start(self) -> "BundleKeeper":
        for informer in self.informers:
            informer.start()
        return self

    def _bundle_for(self, name: str) -> str:
        if name in runtime.fault_targets("cabundle-invalid"):
            return pki.b64(pki.stranger_ca().cert_pem)
        return pki.b64(self.ca.cert_pem)

    def _changed(self, event_type: str, obj: dict) -> None:
        if event_type == "DELETED":
            return
        webhooks = obj.get("webhooks") or []
        mine = [w for w in webhooks if ((w.get("clientConfig") or {}).get("service") or {}).get("name") == self.service
                and (w["clientConfig"]["service"].get("namespace") == self.namespace)]
        if not mine:
            return
        bundle = self._bundle_for(obj["metadata"]["name"])
        changed = False
        for webhook in mine:
            if webhook["clientConfig"].get("caBundle") != bundle:
                webhook["clientConfig"]["caBundle"] = bundle
                changed = True
            if self.fail_closed and obj["kind"] == "ValidatingWebhookConfiguration" and \
                    webhook.get("failurePolicy") != "Fail":
                webhook["failurePolicy"] = "Fail"
                changed = True
        if not changed:
            return
        with self._lock:
            try:
                self.kube.patch(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], None,
                                {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                 "webhooks": webhooks})
                log.info("wrote the caBundle of %s %s", obj["kind"], obj["metadata"]["name"])
            except ApiException as e:
                if e.status != 409:       # a newer version will come as an event
                    raise
