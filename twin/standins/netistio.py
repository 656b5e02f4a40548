"""net-istio controller stand-in: `python -m twin.standins.netistio`, for net-istio-controller's container.

Why not the real one: knative.dev/net-istio is not served by the module proxy here, and its readiness depends on
probing Envoy gateways, which the twin does not have.

What it does, as net-istio's ingress reconciler does (pkg/reconciler/ingress/resources/virtual_service.go): an
Ingress of class istio gets a VirtualService `<ingress>-ingress` with its external hosts on
knative-serving/knative-ingress-gateway and its cluster-local hosts on knative-serving/knative-local-gateway, each
path's splits as weighted routes to `<service>.<namespace>.svc.cluster.local` with the split's headers appended;
then the Ingress reports NetworkConfigured, LoadBalancerReady and Ready, with the gateways' Services as its
load balancers. (The real one also probes every gateway Pod before LoadBalancerReady; the twin's gateway serves
as soon as its VirtualService exists.)
"""
from __future__ import annotations

import logging
import sys
import threading

from twin.standins import runtime
from twin.standins.runtime import Informer, Kube, WorkQueue, owner_ref, set_condition

log = logging.getLogger("twin.standin.net-istio")

NETWORKING = "networking.internal.knative.dev/v1alpha1"
ISTIO = "networking.istio.io/v1beta1"
CLASS = "istio.ingress.networking.knative.dev"
MANAGER = "net-istio-controller"
INGRESS_GATEWAY = "knative-serving/knative-ingress-gateway"
LOCAL_GATEWAY = "knative-serving/knative-local-gateway"


class Controller:
    def __init__(self, kube: Kube, gateway_service: str, local_gateway_service: str):
        self.kube = kube
        self.gateway_service, self.local_gateway_service = gateway_service, local_gateway_service
        self.queue = WorkQueue(self.reconcile)
        self.ingresses = Informer(kube, NETWORKING, "Ingress", self._event)
        self.virtualservices = Informer(kube, ISTIO, "VirtualService",
                                        label_selector="networking.internal.knative.dev/ingress")

    def start(self) -> None:
        self.virtualservices.start()
        self.ingresses.start()

    def _event(self, event_type: str, ing: dict) -> None:
        annotations = ing["metadata"].get("annotations") or {}
        if event_type != "DELETED" and annotations.get("networking.knative.dev/ingress.class", CLASS) == CLASS:
            self.queue.add((ing["metadata"]["namespace"], ing["metadata"]["name"]))

    def reconcile(self, key) -> None:
        ns, name = key
        ing = self.ingresses.get(name, ns)      # the lister's copy
        if ing is None or ing["metadata"].get("deletionTimestamp"):
            return
        hosts, gateways, routes = [], [], []
        for rule in ing["spec"].get("rules") or []:
            gateway = LOCAL_GATEWAY if rule.get("visibility") == "ClusterLocal" else INGRESS_GATEWAY
            if gateway not in gateways:
                gateways.append(gateway)
            hosts += [h for h in rule.get("hosts") or [] if h not in hosts]
            for path in (rule.get("http") or {}).get("paths") or []:
                match = {"gateways": [gateway], "authority": {"prefix": rule["hosts"][0]}}
                if path.get("path"):
                    match["uri"] = {"prefix": path["path"]}
                route = []
                for split in path.get("splits") or []:
                    route.append({"destination": {"host": f"{split['serviceName']}.{split['serviceNamespace']}"
                                                          ".svc.cluster.local",
                                                  "port": {"number": int(split.get("servicePort", 80))}},
                                  "weight": int(split.get("percent", 100)),
                                  "headers": {"request": {"set": dict(split.get("appendHeaders") or {})}}})
                routes.append({"match": [dict(match, authority={"prefix": h}) for h in rule["hosts"]],
                               "route": route, "retries": {}, "timeout": "48h"})
        vs = {"apiVersion": ISTIO, "kind": "VirtualService",
              "metadata": {"name": f"{name}-ingress", "namespace": ns,
                           "labels": {"networking.internal.knative.dev/ingress": name,
                                      **{k: v for k, v in (ing["metadata"].get("labels") or {}).items()
                                         if k.startswith("serving.knative.dev/")}},
                           "ownerReferences": [owner_ref(ing)]},
              "spec": {"hosts": hosts, "gateways": gateways, "http": routes}}
        self.kube.ensure(vs, MANAGER, self.virtualservices.get(f"{name}-ingress", ns))
        conds = (ing.get("status") or {}).get("conditions")
        for ctype in ("NetworkConfigured", "LoadBalancerReady", "Ready"):
            conds = set_condition(conds, ctype, "True")
        status = {"observedGeneration": ing["metadata"].get("generation", 1), "conditions": conds,
                  "publicLoadBalancer": {"ingress": [{"domainInternal": self.gateway_service}]},
                  "privateLoadBalancer": {"ingress": [{"domainInternal": self.local_gateway_service}]}}
        if {k: (ing.get("status") or {}).get(k) for k in status} != status:
            self.kube.patch(NETWORKING, "Ingress", name, ns, {"status": status}, subresource="status")


def start(stop: threading.Event) -> None:
    kube = Kube()
    cfg = kube.get("v1", "ConfigMap", "config-istio", runtime.pod_env("POD_NAMESPACE")) or {}
    data = cfg.get("data") or {}
    gateway = data.get("gateway.knative-serving.knative-ingress-gateway",
                       "istio-ingressgateway.istio-system.svc.cluster.local")
    local = data.get("local-gateway.knative-serving.knative-local-gateway",
                     "knative-local-gateway.istio-system.svc.cluster.local")
    Controller(kube, gateway, local).start()


if __name__ == "__main__":
    sys.exit(runtime.run(start, "net-istio-controller"))
