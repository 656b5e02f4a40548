"""Knative Serving controller stand-in: `python -m twin.standins.knative`, for the controller container.

Why not the real one: knative.dev/serving v0.38.0 (Knative 1.11) builds here, but its Revisions do not become
Ready without what the twin lacks: the controller resolves image tags to digests at a registry, the autoscaler
scrapes queue-proxy metrics from the Pods, the activator proxies requests, and net-istio probes the Envoy
gateways; none of these exist without containers and a network to registries.

What it does against the real API, following Knative's object model (pkg/reconciler/{service,configuration,
revision,route}):
- a Service gets a Configuration and a Route of its name; each new template generation a Revision
  `<service>-0000N`;
- a Revision gets a Deployment `<revision>-deployment` (its containers, plus a queue-proxy sidecar) with
  replicas from autoscaling.knative.dev/min-scale (at least initial-scale 1), and Services `<revision>` and
  `<revision>-private` (http 80 -> queue-proxy 8012); it is Ready when its Deployment has a ready replica, and
  reports the Pods' failure (ContainerMissing / ProgressDeadline-like reasons from their container states) if not;
- a Revision also gets its PodAutoscaler (annotations and labels of the Revision, as MakePA), which the autoscaler
  stand-in acts on; its public Service's Endpoints are the activator's (the activator stand-in holds requests while
  a revision scales from zero); a revision scaled to zero stays Ready;
- a Route gets a networking.internal.knative.dev Ingress (class istio: net-istio's stand-in programs the
  gateways), its URL from config-domain (cluster-local `svc.cluster.local` when config-domain names no domain), and
  is Ready when the Ingress is;
- the Service reports ConfigurationsReady, RoutesReady, Ready, url, address, traffic, latest revisions.
"""
from __future__ import annotations

import logging
import sys
import threading

import yaml
from kubernetes.client.rest import ApiException

from twin.standins import runtime
from twin.standins.runtime import Informer, Kube, WorkQueue, is_true, owner_ref, set_condition

log = logging.getLogger("twin.standin.knative")

SERVING = "serving.knative.dev/v1"
NETWORKING = "networking.internal.knative.dev/v1alpha1"
MANAGER = "knative-serving-controller"
QUEUE_PORT = 8012
USER_PORT = 8080
CLUSTER_DOMAIN = "cluster.local"


def _copy(d: dict | None) -> dict:
    return yaml.safe_load(yaml.safe_dump(d or {}))


class Controller:
    def __init__(self, kube: Kube, system_namespace: str):
        self.kube, self.system_ns = kube, system_namespace
        self.queue = WorkQueue(self.reconcile)
        self.services = Informer(kube, SERVING, "Service", self._enqueue)
        self.revisions = Informer(kube, SERVING, "Revision", self._owner_event)
        self.deployments = Informer(kube, "apps/v1", "Deployment", self._owner_event,
                                    label_selector="serving.knative.dev/service")
        self.pods = Informer(kube, "v1", "Pod", self._pod_event, label_selector="serving.knative.dev/service")
        self.ingresses = Informer(kube, NETWORKING, "Ingress", self._owner_event)
        self.configurations = Informer(kube, SERVING, "Configuration")
        self.routes = Informer(kube, SERVING, "Route")
        self.config_domain = Informer(kube, "v1", "ConfigMap", self._config_event, namespace=system_namespace,
                                      field_selector="metadata.name=config-domain")
        self.activators = Informer(kube, "v1", "Pod", self._config_event, namespace=system_namespace,
                                   label_selector="app=activator")
        self._endpoints_written: dict[tuple[str, str, str], list[str]] = {}   # revision -> activator addresses

    def start(self) -> None:
        for informer in (self.config_domain, self.activators, self.pods, self.deployments, self.ingresses,
                         self.configurations, self.routes, self.revisions, self.services):
            informer.start()

    def _enqueue(self, event_type: str, svc: dict) -> None:
        if event_type != "DELETED":
            self.queue.add((svc["metadata"]["namespace"], svc["metadata"]["name"]))

    def _owner_event(self, event_type: str, obj: dict) -> None:
        service = (obj["metadata"].get("labels") or {}).get("serving.knative.dev/service")
        if service:
            self.queue.add((obj["metadata"]["namespace"], service))

    def _pod_event(self, event_type: str, pod: dict) -> None:
        self._owner_event(event_type, pod)

    def _config_event(self, event_type: str, obj: dict) -> None:
        for svc in self.services.items():
            self._enqueue("MODIFIED", svc)

    def domain(self) -> str:
        cm = self.config_domain.get("config-domain", self.system_ns)
        for key in ((cm or {}).get("data") or {}):
            if key != "_example":
                return key        # the first domain (selector-less entries apply to every route)
        return f"svc.{CLUSTER_DOMAIN}"

    # -- reconcile a Service --------------------------------------------------------------------------------------

    def reconcile(self, key) -> None:
        ns, name = key
        svc = self.services.get(name, ns)      # the lister's copy, as Knative's reconciler reads it
        if svc is None or svc["metadata"].get("deletionTimestamp"):
            return
        generation = svc["metadata"].get("generation", 1)
        template = svc["spec"].get("template") or {}
        config = self._configuration(svc, template, generation)
        revision = self._revision(svc, config, template)
        self._activator_endpoints(revision)
        ready, reason, message = self._revision_status(revision)
        route, ingress_ready = self._route(svc, revision if ready else self._last_ready(svc, config))
        self._service_status(svc, config, revision, ready, reason, message, route, ingress_ready)

    def _labels(self, svc: dict) -> dict:
        return {"serving.knative.dev/service": svc["metadata"]["name"],
                "serving.knative.dev/serviceUID": svc["metadata"]["uid"]}

    def _configuration(self, svc: dict, template: dict, generation: int) -> dict:
        name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
        body = {"apiVersion": SERVING, "kind": "Configuration",
                "metadata": {"name": name, "namespace": ns, "labels": self._labels(svc),
                             "ownerReferences": [owner_ref(svc)]},
                "spec": {"template": _copy(template)}}
        return self.kube.ensure(body, MANAGER, self.configurations.get(name, ns))

    def _revision_name(self, svc: dict, config: dict) -> str:
        explicit = ((svc["spec"].get("template") or {}).get("metadata") or {}).get("name")
        return explicit or f"{svc['metadata']['name']}-{config['metadata'].get('generation', 1):05d}"

    def _revision(self, svc: dict, config: dict, template: dict) -> dict:
        ns = svc["metadata"]["namespace"]
        name = self._revision_name(svc, config)
        existing = self.revisions.get(name, ns) or self.kube.get(SERVING, "Revision", name, ns)
        if existing is not None:
            return existing
        meta = _copy(template.get("metadata"))
        labels = dict(meta.get("labels") or {}, **self._labels(svc))
        labels.update({"serving.knative.dev/configuration": config["metadata"]["name"],
                       "serving.knative.dev/configurationGeneration": str(config["metadata"].get("generation", 1)),
                       "serving.knative.dev/configurationUID": config["metadata"]["uid"],
                       "serving.knative.dev/routingState": "active"})
        body = {"apiVersion": SERVING, "kind": "Revision",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "annotations": meta.get("annotations") or {},
                             "ownerReferences": [owner_ref(config)]},
                "spec": _copy(template.get("spec"))}
        try:
            revision = self.kube.create(body)
        except ApiException as e:
            if e.status != 409:
                raise
            revision = self.kube.get(SERVING, "Revision", name, ns)
        self._revision_resources(revision)
        return revision

    def _revision_resources(self, revision: dict) -> None:
        meta, spec = revision["metadata"], revision.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        pod_labels = dict(meta.get("labels") or {})
        pod_labels.pop("serving.knative.dev/routingState", None)
        pod_labels.update({"serving.knative.dev/revision": name, "serving.knative.dev/revisionUID": meta["uid"],
                           "app": name})
        annotations = meta.get("annotations") or {}
        replicas = max(int(annotations.get("autoscaling.knative.dev/min-scale", "1") or 1),
                       int(annotations.get("autoscaling.knative.dev/initial-scale", "1") or 1))
        containers = []
        for n, c in enumerate(spec.get("containers") or []):
            c = _copy(c)
            c.setdefault("name", "user-container" if n == 0 else f"user-container-{n}")
            env = c.setdefault("env", [])
            env += [{"name": "PORT", "value": str(USER_PORT)}, {"name": "K_REVISION", "value": name},
                    {"name": "K_CONFIGURATION", "value": pod_labels["serving.knative.dev/configuration"]},
                    {"name": "K_SERVICE", "value": pod_labels["serving.knative.dev/service"]}]
            if n == 0:
                c["ports"] = [{"name": "user-port", "containerPort": USER_PORT, "protocol": "TCP"}]
            # Knative moves the readiness probe to queue-proxy (SERVING_READINESS_PROBE) and points a liveness
            # probe without a port at the user port (pkg/reconciler/revision/resources/deploy.go).
            c.pop("readinessProbe", None)
            for handler in ("httpGet", "tcpSocket"):
                probe = (c.get("livenessProbe") or {}).get(handler)
                if probe is not None and not probe.get("port"):
                    probe["port"] = USER_PORT
            containers.append(c)
        containers.append({"name": "queue-proxy", "image": self._queue_image(),
                           "ports": [{"name": "http-queueadm", "containerPort": 8022},
                                     {"name": "http-autometric", "containerPort": 9090},
                                     {"name": "http-usermetric", "containerPort": 9091},
                                     {"name": "queue-port", "containerPort": QUEUE_PORT}],
                           "env": [{"name": "SERVING_REVISION", "value": name},
                                   {"name": "USER_PORT", "value": str(USER_PORT)}],
                           "resources": {"requests": {"cpu": "25m"}},
                           # queueSecurityContext of pkg/reconciler/revision/resources/queue.go @v0.38.0 (Knative 1.11)
                           "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                               "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}})
        pod_spec = {k: _copy(v) for k, v in spec.items() if k not in ("containers", "containerConcurrency",
                                                                       "timeoutSeconds")}
        pod_spec["containers"] = containers
        pod_spec.setdefault("enableServiceLinks", False)
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": f"{name}-deployment", "namespace": ns, "labels": pod_labels,
                                   "ownerReferences": [owner_ref(revision)]},
                      "spec": {"replicas": replicas, "progressDeadlineSeconds": 600,
                               "selector": {"matchLabels": {"serving.knative.dev/revisionUID": meta["uid"]}},
                               "template": {"metadata": {"labels": pod_labels, "annotations": dict(annotations)},
                                            "spec": pod_spec}}}
        self.kube.apply(deployment, MANAGER)
        if not runtime.has_fault("autoscaler-missing"):
            self.kube.apply(self._pod_autoscaler(revision, pod_labels, annotations), MANAGER)
        # The public Service has no selector: its Endpoints are the activator's (SKS proxy mode, _activator_endpoints);
        # the private one selects the revision's Pods, where the activator sends what it holds.
        for svc_name, selector in ((name, None), (f"{name}-private", {"serving.knative.dev/revisionUID": meta["uid"]})):
            self.kube.apply({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": svc_name, "namespace": ns, "labels": dict(pod_labels),
                                          "ownerReferences": [owner_ref(revision)]},
                             "spec": {**({"selector": selector} if selector else {}),
                                      "ports": [{"name": "http", "port": 80, "targetPort": QUEUE_PORT,
                                                 "protocol": "TCP"}]}}, MANAGER)

    def _activator_endpoints(self, revision: dict) -> None:
        """The public Service's Endpoints: the ready activator Pods (kube-controller-manager mirrors them into
        EndpointSlices, which the gateway routes by). Knative keeps the activator in the path of a small revision
        (target-burst-capacity 211), and in the path of every revision at zero."""
        meta = revision["metadata"]
        addresses = sorted(p["status"]["podIP"] for p in self.activators.items()
                           if (p.get("status") or {}).get("podIP") and is_true(p, "Ready"))
        key = (meta["namespace"], meta["name"], meta["uid"])
        if self._endpoints_written.get(key) == addresses:
            return      # every reconcile comes here: write only what changed
        subsets = [{"addresses": [{"ip": ip} for ip in addresses],
                    "ports": [{"name": "http", "port": QUEUE_PORT, "protocol": "TCP"}]}] if addresses else []
        self.kube.apply({"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                                      "labels": {"serving.knative.dev/revision": meta["name"]},
                                      "ownerReferences": [owner_ref(revision)]},
                         "subsets": subsets}, MANAGER)
        self._endpoints_written[key] = addresses

    @staticmethod
    def _pod_autoscaler(revision: dict, labels: dict, annotations: dict) -> dict:
        """The Revision's PodAutoscaler as MakePA writes it (pkg/reconciler/revision/resources/pa.go): the Revision's
        annotations (the autoscaling.knative.dev/* KServe set among them) and labels, its Deployment as the scale
        target. No autoscaler runs here (it scrapes queue-proxy, which the twin lacks), so no status is written."""
        meta, spec = revision["metadata"], revision.get("spec") or {}
        return {"apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(labels),
                             "annotations": dict(annotations), "ownerReferences": [owner_ref(revision)]},
                "spec": {"containerConcurrency": int(spec.get("containerConcurrency") or 0),
                         "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": f"{meta['name']}-deployment"},
                         "protocolType": "http1", "reachability": "Reachable"}}

    def _queue_image(self) -> str:
        cm = self.kube.get("v1", "ConfigMap", "config-deployment", self.system_ns)
        return ((cm or {}).get("data") or {}).get("queue-sidecar-image") or \
            "gcr.io/knative-releases/knative.dev/serving/cmd/queue"

    def _revision_status(self, revision: dict) -> tuple[bool, str | None, str | None]:
        meta = revision["metadata"]
        ns, name = meta["namespace"], meta["name"]
        dep = self.deployments.get(f"{name}-deployment", ns) or self.kube.get("apps/v1", "Deployment",
                                                                               f"{name}-deployment", ns)
        # Ready with a ready replica, and also at zero: only the autoscaler scales a revision to no replica (its
        # initial scale is at least one), and Knative keeps such a revision Ready (Active False, NoTraffic).
        ready = bool(dep) and (int((dep.get("status") or {}).get("readyReplicas") or 0) > 0
                               or int((dep.get("spec") or {}).get("replicas", 1)) == 0)
        reason = message = None
        if not ready:
            reason, message = self._pod_problem(ns, name)
        conds = (revision.get("status") or {}).get("conditions")
        status = "True" if ready else ("False" if reason else "Unknown")
        for ctype in ("ResourcesAvailable", "ContainerHealthy", "Ready"):
            conds = set_condition(conds, ctype, status, None if ready else (reason or "Deploying"),
                                  None if ready else message)
        body = {"observedGeneration": meta.get("generation", 1), "conditions": conds,
                "serviceName": name, "actualReplicas": int(((dep or {}).get("status") or {}).get("readyReplicas")
                                                            or 0)}
        if conds != (revision.get("status") or {}).get("conditions"):
            self.kube.patch(SERVING, "Revision", name, ns, {"status": body}, subresource="status")
        return ready, reason, message

    def _pod_problem(self, ns: str, revision: str) -> tuple[str | None, str | None]:
        """What kept the revision's Pods from running (Knative surfaces the waiting/terminated container state)."""
        for pod in self.pods.items():
            labels = pod["metadata"].get("labels") or {}
            if pod["metadata"].get("namespace") != ns or labels.get("serving.knative.dev/revision") != revision:
                continue
            status = pod.get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                state = cs.get("state") or {}
                waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
                last = (cs.get("lastState") or {}).get("terminated") or {}
                if waiting.get("reason") in ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff",
                                             "CreateContainerConfigError", "InvalidImageName"):
                    detail = last.get("message") or waiting.get("message") or ""
                    return waiting["reason"], f"Container {cs['name']}: {detail}".strip()
                if terminated and terminated.get("exitCode", 0) != 0:
                    return "ExitCode" + str(terminated.get("exitCode")), \
                        f"Container failed with: {terminated.get('message') or terminated.get('reason')}"
        return None, None

    def _last_ready(self, svc: dict, config: dict) -> dict | None:
        name = ((svc.get("status") or {}).get("latestReadyRevisionName"))
        return self.kube.get(SERVING, "Revision", name, svc["metadata"]["namespace"]) if name else None

    # -- routing ----------------------------------------------------------------------------------------------------

    def _route(self, svc: dict, revision: dict | None) -> tuple[dict, bool]:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        domain = self.domain()
        local = domain == f"svc.{CLUSTER_DOMAIN}" or \
            (svc["metadata"].get("labels") or {}).get("networking.knative.dev/visibility") == "cluster-local"
        url = f"http://{name}.{ns}.{domain}" if not local else f"http://{name}.{ns}.svc.{CLUSTER_DOMAIN}"
        route = self.kube.ensure({"apiVersion": SERVING, "kind": "Route",
                                  "metadata": {"name": name, "namespace": ns, "labels": self._labels(svc),
                                               "ownerReferences": [owner_ref(svc)]},
                                  "spec": {"traffic": [{"configurationName": name, "latestRevision": True,
                                                        "percent": 100}]}}, MANAGER, self.routes.get(name, ns))
        if revision is None:
            return route, False
        rev = revision["metadata"]["name"]
        internal = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"]
        rules = [{"hosts": internal, "visibility": "ClusterLocal",
                  "http": {"paths": [{"splits": [{"serviceName": rev, "serviceNamespace": ns, "servicePort": 80,
                                                  "percent": 100,
                                                  "appendHeaders": {"Knative-Serving-Namespace": ns,
                                                                    "Knative-Serving-Revision": rev}}]}]}}]
        if not local:
            rules.append({"hosts": [f"{name}.{ns}.{domain}"], "visibility": "ExternalIP",
                          "http": rules[0]["http"]})
        self.kube.ensure({"apiVersion": NETWORKING, "kind": "Ingress",
                          "metadata": {"name": name, "namespace": ns, "labels": self._labels(svc),
                                       "annotations": {"networking.knative.dev/ingress.class":
                                                       "istio.ingress.networking.knative.dev"},
                                       "ownerReferences": [owner_ref(route)]},
                          "spec": {"rules": rules, "httpOption": "Enabled"}}, MANAGER, self.ingresses.get(name, ns))
        ingress = self.ingresses.get(name, ns) or self.kube.get(NETWORKING, "Ingress", name, ns)
        ingress_ready = is_true(ingress, "Ready")
        conds = set_condition((route.get("status") or {}).get("conditions"), "AllTrafficAssigned", "True")
        conds = set_condition(conds, "IngressReady", "True" if ingress_ready else "Unknown",
                              None if ingress_ready else "IngressNotConfigured",
                              None if ingress_ready else "Ingress has not yet been reconciled.")
        conds = set_condition(conds, "Ready", "True" if ingress_ready else "Unknown",
                              None if ingress_ready else "IngressNotConfigured")
        status = {"observedGeneration": route["metadata"].get("generation", 1), "conditions": conds, "url": url,
                  "address": {"url": f"http://{name}.{ns}.svc.{CLUSTER_DOMAIN}"},
                  "traffic": [{"revisionName": rev, "latestRevision": True, "percent": 100}]}
        if status != {k: (route.get("status") or {}).get(k) for k in status}:
            self.kube.patch(SERVING, "Route", name, ns, {"status": status}, subresource="status")
        route["status"] = status
        return route, ingress_ready

    def _service_status(self, svc: dict, config: dict, revision: dict, ready: bool, reason, message, route: dict,
                        ingress_ready: bool) -> None:
        meta = svc["metadata"]
        rev = revision["metadata"]["name"]
        old = svc.get("status") or {}
        latest_ready = rev if ready else old.get("latestReadyRevisionName")
        conds = old.get("conditions")
        config_status = "True" if ready else ("False" if reason else "Unknown")
        conds = set_condition(conds, "ConfigurationsReady", config_status,
                              None if ready else (reason or "RevisionMissing"),
                              None if ready else (message or f"Configuration \"{meta['name']}\" is waiting for a "
                                                                         f"Revision to become ready."))
        route_ready = bool(latest_ready) and ingress_ready
        conds = set_condition(conds, "RoutesReady", "True" if route_ready else "Unknown",
                              None if route_ready else "IngressNotConfigured")
        overall = "True" if ready and route_ready else ("False" if config_status == "False" else "Unknown")
        conds = set_condition(conds, "Ready", overall, None if overall == "True" else
                              (reason or "RevisionMissing"), None if overall == "True" else message)
        status = {"observedGeneration": meta.get("generation", 1), "conditions": conds,
                  "latestCreatedRevisionName": rev, "latestReadyRevisionName": latest_ready}
        if latest_ready:
            status.update(url=route["status"]["url"], address=route["status"]["address"],
                          traffic=[{"revisionName": latest_ready, "latestRevision": True, "percent": 100}])
        if {k: old.get(k) for k in status} != status:
            self.kube.patch(SERVING, "Service", meta["name"], meta["namespace"], {"status": status},
                            subresource="status")
            self.kube.patch(SERVING, "Configuration", meta["name"], meta["namespace"],
                            {"status": {"observedGeneration": config["metadata"].get("generation", 1),
                                        "latestCreatedRevisionName": rev, "latestReadyRevisionName": latest_ready,
                                        "conditions": set_condition(None, "Ready", config_status)}},
                            subresource="status")


def start(stop: threading.Event) -> None:
    Controller(Kube(), runtime.pod_env("POD_NAMESPACE")).start()


if __name__ == "__main__":
    sys.exit(runtime.run(start, "knative-controller"))
