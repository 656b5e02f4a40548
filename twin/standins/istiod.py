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
  the chart writes `image: auto`; every other Pod the webhook's selectors send here gets the sidecar template's
  istio-proxy container and the `security.istio.io/tlsMode: istio` label. Whatever runs for that container is the
  twin's: the sidecar stand-in for a model Pod (twin/standins/sidecar.py), the Pod's own process originating
  mTLS for a stand-in (twin/standins/meshnet.py), both from twin/mesh.py's snapshot and certificates.
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
    """What istiod's injector renders: the gateway template fills in the proxy image where the chart writes
    `image: auto`; the sidecar template (every other Pod the webhook's selectors send here) adds the istio-proxy
    container, the tlsMode label auto mTLS reads, and the status annotation."""
    if (request.get("kind") or {}).get("kind") != "Pod" or request.get("operation") != "CREATE":
        return Admission()
    pod = request.get("object") or {}
    meta = pod.get("metadata") or {}
    templates = (meta.get("annotations") or {}).get("inject.istio.io/templates", "sidecar")
    containers = (pod.get("spec") or {}).get("containers") or []
    if any(c.get("name") == "istio-proxy" and c.get("image") != "auto" for c in containers):
        return Admission()                                 # injected already
    image = proxy_image()
    patch = [] if meta.get("annotations") else [{"op": "add", "path": "/metadata/annotations", "value": {}}]
    if templates == "gateway":
        replaced = [{"op": "replace", "path": f"/spec/containers/{n}/image", "value": image}
                    for n, c in enumerate(containers) if c.get("image") == "auto" and image]
        if not replaced:
            return Admission()
        patch += replaced
    elif image:
        patch += sidecar_patch(meta, image, request.get("namespace") or meta.get("namespace", ""))
    else:
        return Admission()
    patch.append({"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status",
                  "value": json.dumps({"templates": [templates], "containers": ["istio-proxy"]})})
    log.info("injected the %s template into %s/%s", templates, request.get("namespace"),
             meta.get("name") or meta.get("generateName"))
    return Admission(patch=patch)


def sidecar_patch(meta: dict, image: str, namespace: str) -> list[dict]:
    """The sidecar template's additions (istio's manifests/charts/istio-control/istio-discovery/files/
    injection-template.yaml, trimmed to what the twin uses: no istio-init, as with Istio's CNI plugin, and no readiness probe,
    since a stand-in Pod's proxy container runs no process of its own)."""
    labels = meta.get("labels") or {}
    proxy = {"name": "istio-proxy", "image": image,
             "args": ["proxy", "sidecar", "--domain", f"{namespace}.svc.cluster.local"],
             "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
             "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True,
                                 "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                 "capabilities": {"drop": ["ALL"]}}}
    out = [{"op": "add", "path": "/spec/containers/-", "value": proxy}]
    if not labels:
        out.append({"op": "add", "path": "/metadata/labels", "value": {}})
    out.append({"op": "add", "path": "/metadata/labels/security.istio.io~1tlsMode", "value": "istio"})
    return out


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
