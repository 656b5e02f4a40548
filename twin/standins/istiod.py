"""istiod stand-in: `python -m twin.standins.istiod` for the discovery container of istiod's Pod.

Why not the real one: istio.io/istio is served by the module proxy only as untagged pseudo-versions (no 1.19.0
or 1.30.3), and istiod's job beyond its webhooks (xDS for Envoy proxies) has no Envoy to serve here.

What it does, as istiod does:
- its own CA in Secret istio-ca-secret (ca-cert.pem, ca-key.pem), a serving certificate for the istiod Service,
  and the caBundle of the webhook configurations that call istiod (its webhook controller patches them, and turns
  the validator's failurePolicy to Fail once it serves);
- /validate: the configuration validation of networking.istio.io objects (a Gateway needs a server, a
  VirtualService a host: pkg/config/validation), answered as "configuration is invalid: ...";
- /inject: sidecar injection for Pods. The gateway chart's Pods (template "gateway") get the proxy image where
  the chart writes `image: auto`; other Pods are admitted unchanged (there is no proxy to inject without Envoy,
  and the twin says so).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading

import yaml

from twin import pki
from twin.standins import runtime, selfca
from twin.standins.runtime import Admission, Kube

log = logging.getLogger("twin.standin.istiod")

CA_SECRET = "istio-ca-secret"


def validate(request: dict) -> Admission:
    if request.get("operation") == "DELETE":
        return Admission()
    kind = (request.get("kind") or {}).get("kind")
    obj = request.get("object") or {}
    spec = obj.get("spec") or {}
    if kind == "Gateway" and not spec.get("servers"):
        return Admission.deny("configuration is invalid: gateway must have at least one server")
    if kind == "VirtualService" and not spec.get("hosts") and spec.get("gateways") != ["mesh"]:
        return Admission.deny("configuration is invalid: virtual service must have at least one host")
    return Admission()


def proxy_image() -> str | None:
    """The proxy image of the profile's gateway (the chart's injector knows it from its values)."""
    path = os.environ.get("TWIN_PROFILE")
    if not path:
        return None
    with open(path) as f:
        profile = yaml.safe_load(f)
    istio = (profile.get("components") or {}).get("istio") or {}
    for item in (istio.get("inventory") or {}).get("deployments") or []:
        image = (item.get("containers") or {}).get("istio-proxy")
        if image:
            return image
    return None


def inject(request: dict) -> Admission:
    """The gateway template: replace `image: auto` with the proxy image (what istiod's injector renders)."""
    if (request.get("kind") or {}).get("kind") != "Pod" or request.get("operation") != "CREATE":
        return Admission()
    pod = request.get("object") or {}
    templates = ((pod.get("metadata") or {}).get("annotations") or {}).get("inject.istio.io/templates", "")
    image = proxy_image()
    patch = []
    for n, container in enumerate((pod.get("spec") or {}).get("containers") or []):
        if container.get("image") == "auto" and image:
            patch.append({"op": "replace", "path": f"/spec/containers/{n}/image", "value": image})
    if patch:
        log.info("injected the %s template: %s", templates or "gateway", json.dumps(patch))
        patch.append({"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status",
                      "value": json.dumps({"templates": [templates or "gateway"], "containers": ["istio-proxy"]})})
        if not (pod.get("metadata") or {}).get("annotations"):
            patch.insert(0, {"op": "add", "path": "/metadata/annotations", "value": {}})
    return Admission(patch=patch or None)


def start(stop: threading.Event) -> None:
    kube = Kube()
    ns = runtime.pod_env("POD_NAMESPACE")
    ca = selfca.load_or_create_ca(kube, ns, CA_SECRET, "Istio CA")
    serving = pki.serving_pair(ca, selfca.service_names("istiod", ns))
    port = runtime.ports().get("https-webhook", 15017)
    server = runtime.WebhookServer(runtime.listen_address(), port,
                                   {"/validate": validate, "/inject": inject, "/inject/": inject},
                                   health_paths=("/ready", "/healthz", "/readyz"))
    server.set_certificate(serving.cert_pem, serving.key_pem)
    server.serve_in_background()
    selfca.BundleKeeper(kube, ns, "istiod", ca, fail_closed=True).start()
    log.info("serving webhooks on %s:%d", *server.address)


if __name__ == "__main__":
    sys.exit(runtime.run(start, "istiod"))
