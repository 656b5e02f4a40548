"""Knative Serving webhook stand-in: `python -m twin.standins.knative_webhook` (also net-istio's, with `net-istio`).

Why not the real one: knative.dev/serving v0.38.0 (Knative 1.11) builds here, but its webhook only makes sense
with its controller, autoscaler and activator, and those need what the twin lacks (a registry to resolve image
digests, queue-proxy metrics to scrape, Envoy for net-istio's probes): see twin/standins/knative.py.

What it does, as knative.dev/pkg's webhook does: its CA and serving certificate in Secret webhook-certs (or
net-istio-webhook-certs), the caBundle of the configurations that call its Service, and
- /resource-validation: the Service/Configuration/Revision checks the suite's probes meet (containers present,
  images set, one port among several containers: pkg/apis/serving/k8s_validation.go), as
  "validation failed: missing field(s): ...";
- /defaulting: creator and lastModifier annotations from the requesting user (serving.knative.dev/creator);
- /config-validation: the ConfigMaps it owns are admitted (their parsing is the controller's; the twin's
  stand-in controller reads only config-domain).
"""
from __future__ import annotations

import datetime
import json
import logging
import sys
import threading

from twin import pki
from twin.standins import runtime, selfca
from twin.standins.runtime import Admission, Kube

log = logging.getLogger("twin.standin.knative-webhook")


def validate(request: dict) -> Admission:
    if request.get("operation") == "DELETE":
        return Admission()
    kind = (request.get("kind") or {}).get("kind")
    spec = (request.get("object") or {}).get("spec") or {}
    if kind in ("Service", "Configuration"):
        pod, prefix = ((spec.get("template") or {}).get("spec") or {}), "spec.template.spec"
    elif kind == "Revision":
        pod, prefix = spec, "spec"
    else:
        return Admission()
    containers = pod.get("containers") or []
    if not containers:
        return Admission.deny(f"validation failed: missing field(s): {prefix}.containers")
    missing = [f"{prefix}.containers[{n}].image" for n, c in enumerate(containers) if not (c or {}).get("image")]
    if missing:
        return Admission.deny(f"validation failed: missing field(s): {', '.join(missing)}")
    if len(containers) > 1 and sum(1 for c in containers if (c or {}).get("ports")) != 1:
        return Admission.deny(f"validation failed: expected exactly one, got neither: {prefix}.containers[*].ports")
    return Admission()


def default(request: dict) -> Admission:
    kind = (request.get("kind") or {}).get("kind")
    if (request.get("kind") or {}).get("group") != "serving.knative.dev" or \
            kind not in ("Service", "Configuration", "Route") or request.get("operation") not in ("CREATE", "UPDATE"):
        return Admission()
    user = (request.get("userInfo") or {}).get("username", "")
    annotations = dict(((request.get("object") or {}).get("metadata") or {}).get("annotations") or {})
    before = dict(annotations)
    if request.get("operation") == "CREATE":
        annotations.setdefault("serving.knative.dev/creator", user)
    annotations["serving.knative.dev/lastModifier"] = user
    if annotations == before:
        return Admission()
    return Admission(patch=[{"op": "add", "path": "/metadata/annotations", "value": annotations}])


def admit(request: dict) -> Admission:
    return Admission()


def start(stop: threading.Event, net_istio: bool) -> None:
    kube = Kube()
    ns = runtime.pod_env("POD_NAMESPACE")
    service, secret = ("net-istio-webhook", "net-istio-webhook-certs") if net_istio else ("webhook", "webhook-certs")
    # knative.dev/pkg webhook/certificates: CA and serving certificate for one week (resources/secret.go oneWeek),
    # renewed when less than a day is left (certificates.go oneDay)
    ca = selfca.load_or_create_ca(kube, ns, secret, f"{service}.{ns}.svc", cert_key="ca-cert.pem",
                                  key_key="ca-key.pem", lifetime=datetime.timedelta(days=7),
                                  renew_before=datetime.timedelta(0 if runtime.has_fault("cert-expiring") else 1))
    serving = pki.serving_pair(ca, selfca.service_names(service, ns))
    handlers = {"/defaulting": admit, "/config-validation": admit} if net_istio else \
        {"/resource-validation": validate, "/defaulting": default, "/config-validation": admit}
    port = runtime.ports().get("https-webhook", 8443)
    server = runtime.WebhookServer(runtime.listen_address(), port, handlers)
    server.set_certificate(serving.cert_pem, serving.key_pem)
    server.serve_in_background()
    selfca.BundleKeeper(kube, ns, service, ca).start()
    log.info("serving %s on %s:%d: %s", service, *server.address, json.dumps(sorted(handlers)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    net_istio = bool(argv) and argv[0] == "net-istio"
    return runtime.run(lambda stop: start(stop, net_istio), "net-istio-webhook" if net_istio else "knative-webhook")


if __name__ == "__main__":
    sys.exit(main())
