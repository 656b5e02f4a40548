"""kube-controller-manager + kubelet stand-in: Deployments -> ReplicaSets -> Pods, DaemonSets -> Pods, Endpoints.

Pod states come from a PodPlan: by default every container is Ready; faults (crashloop, imagepull) and other
controllers (KServe's predictor pods) supply plans of their own. Statuses are written the way the real controllers
write them (observedGeneration, replicas, readyReplicas, Available/Progressing conditions...).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Callable

from twin.controllers.base import Controller, now_iso, owner_ref, random_suffix, short_hash
from twin.seed import NODE_LABELS, NODE_NAME, image_id, resolve_image

log = logging.getLogger("twin.controllers.workloads")

HOST_IP = "172.18.0.2"
# crashloop restarts: the kubelet backs off 10s, 20s, 40s ... 5m; the twin uses a faster clock
CRASH_BACKOFF = (1.0, 2.0, 4.0, 8.0, 10.0)


@dataclass
class PodPlan:
    """How a workload's pods look. Container states: ready | running | crashloop | imagepull | creating | init;
    init container states: completed | running | error | waiting."""
    containers: dict = field(default_factory=dict)   # name -> state; absent -> `default`
    init: dict = field(default_factory=dict)         # name -> state; absent -> completed
    default: str = "ready"
    logs: dict = field(default_factory=dict)         # container -> log text (current)

    def container_state(self, name: str) -> str:
        return self.containers.get(name, self.default)

    def init_state(self, name: str) -> str:
        return self.init.get(name, "completed")


def _cid(*parts: str) -> str:
    return "containerd://" + hashlib.sha256("/".join(parts).encode()).hexdigest()


def template_hash(template: dict) -> str:
    return short_hash(json.dumps(template, sort_keys=True), 10)


class WorkloadController(Controller):
    name = "workloads"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.plan_providers: list[Callable] = []   # fn(workload_obj) -> PodPlan | None
        self.log_providers: list[Callable] = []    # fn(namespace, pod_obj, container, previous) -> str | None
        self.restarts: dict[tuple, int] = {}        # (ns, pod, container) -> restartCount
        self.crash_at: dict[tuple, str] = {}        # (ns, pod, container) -> last crash time
        self.started: dict[tuple, str] = {}         # (ns, pod) -> startTime
        self.ips: dict[tuple, str] = {}             # (ns, pod) -> podIP
        self._ip_next = 2
        self._timers: dict[tuple, threading.Timer] = {}
        self._node_info: tuple[dict, str] | None = None

    # -- events ---------------------------------------------------------------------------------------------------

    def on_event(self, event_type: str, obj: dict) -> None:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        if kind in ("Deployment", "DaemonSet") and obj.get("apiVersion") == "apps/v1":
            if event_type == "DELETED":
                self._forget_workload(obj)
            else:
                self.reconcile(obj)
        elif kind == "Pod" and obj.get("apiVersion") == "v1":
            if event_type == "DELETED":
                self._forget_pod(ns, meta.get("name"))
                owner = self._workload_of_pod(obj)
                if owner is not None:
                    self.reconcile(owner)  # replace a pod deleted by hand
            self.sync_endpoints(ns)
        elif kind == "Service" and obj.get("apiVersion") == "v1":
            if event_type == "DELETED":
                self.ctx.delete("v1", "Endpoints", meta.get("name"), ns)
            else:
                self.sync_endpoints(ns, only=meta.get("name"))

    def stop(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
        self._timers.clear()

    # -- plans ----------------------------------------------------------------------------------------------------

    def plan_for(self, workload: dict) -> PodPlan:
        for provider in self.plan_providers:
            try:
                plan = provider(workload)
            except Exception:  # noqa: BLE001 - a provider bug must not stop the workload controller
                log.exception("pod plan provider failed")
                plan = None
            if plan is not None:
                return plan
        meta = workload["metadata"]
        faults = self.ctx.faults
        containers = [c["name"] for c in workload["spec"]["template"]["spec"].get("containers") or []]
        if workload["kind"] == "Deployment" and containers:
            if faults.targets_deployment("crashloop", meta["namespace"], meta["name"]):
                return PodPlan(containers={containers[0]: "crashloop"})
            if faults.targets_deployment("imagepull", meta["namespace"], meta["name"]):
                return PodPlan(containers={containers[0]: "imagepull"}, default="creating")
        return PodPlan()

    # -- reconcile ------------------------------------------------------------------------------------------------

    def resync(self, namespace: str, name: str, kind: str = "Deployment") -> None:
        with self.ctx.lock:
            obj = self.ctx.get("apps/v1", kind, name, namespace)
            if obj is not None:
                self.reconcile(obj)

    def _node(self) -> tuple[dict, str]:
        """(labels, InternalIP) of the twin's one node."""
        if self._node_info is None:
            node = self.ctx.get("v1", "Node", NODE_NAME) or {}
            labels = (node.get("metadata") or {}).get("labels") or NODE_LABELS
            ip = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                       if a.get("type") == "InternalIP"), HOST_IP)
            self._node_info = (dict(labels), ip)
        return self._node_info

    def _desired(self, workload: dict) -> int:
        if workload["kind"] == "DaemonSet":
            selector = workload["spec"]["template"]["spec"].get("nodeSelector") or {}
            labels = self._node()[0]
            return 1 if all(labels.get(k) == v for k, v in selector.items()) else 0
        replicas = workload["spec"].get("replicas")
        return 1 if replicas is None else int(replicas)

    def _owned(self, namespace: str, uid: str) -> list[dict]:
        return [p for p in self.ctx.list("v1", "Pod", namespace)
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]

    def reconcile(self, workload: dict) -> None:
        if workload["metadata"].get("deletionTimestamp"):
            return
        if workload["kind"] == "Deployment":
            self._reconcile_deployment(workload)
        else:
            self._reconcile_daemonset(workload)

    def _reconcile_deployment(self, dep: dict) -> None:
        meta = dep["metadata"]
        ns, name = meta["namespace"], meta["name"]
        template = dep["spec"]["template"]
        phash = template_hash(template)
        rs_name = f"{name}-{phash}"
        desired = self._desired(dep)
        use_rs = self.ctx.served("apps/v1", "ReplicaSet")
        all_rs = [rs for rs in self.ctx.list("apps/v1", "ReplicaSet", ns)
                  if any(r.get("uid") == meta["uid"] for r in rs["metadata"].get("ownerReferences") or [])] \
            if use_rs else []
        revisions = [int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
                     for rs in all_rs]
        current = next((rs for rs in all_rs if rs["metadata"]["name"] == rs_name), None)
        owner = dep
        if use_rs:
            revision = (current["metadata"].get("annotations") or {}).get(
                "deployment.kubernetes.io/revision") if current else str(max(revisions, default=0) + 1)
            labels = dict((template.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": phash})
            rs_obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                      "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                                   "annotations": {"deployment.kubernetes.io/desired-replicas": str(desired),
                                                   "deployment.kubernetes.io/max-replicas": str(desired + 1),
                                                   "deployment.kubernetes.io/revision": revision},
                                   "ownerReferences": [owner_ref(dep)]},
                      "spec": {"replicas": desired,
                               "selector": {"matchLabels": dict(dep["spec"]["selector"].get("matchLabels") or {},
                                                                **{"pod-template-hash": phash})},
                               "template": {"metadata": dict(template.get("metadata") or {}, labels=labels),
                                            "spec": template.get("spec") or {}}}}
            current = self._upsert(rs_obj, current) or current
            if current is None:
                return
            owner = current
            for old in all_rs:
                if old["metadata"]["name"] != rs_name:
                    for pod in self._owned(ns, old["metadata"]["uid"]):
                        self.ctx.delete("v1", "Pod", pod["metadata"]["name"], ns)
                    if old["spec"].get("replicas") != 0:
                        old_obj = {k: v for k, v in old.items() if k != "status"}
                        old_obj["spec"] = dict(old["spec"], replicas=0)
                        self._upsert(old_obj, old)
                    self.ctx.write_status(old, {"replicas": 0, "observedGeneration":
                                                old["metadata"].get("generation", 1)})
            if (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision") != revision:
                try:
                    self.store.patch("apps/v1", "Deployment", name, ns,
                                     {"metadata": {"annotations": {"deployment.kubernetes.io/revision": revision}}})
                except Exception:  # noqa: BLE001 - deleted meanwhile
                    return
        plan = self.plan_for(dep)
        pods = self._sync_pods(owner, template, desired, plan, {"pod-template-hash": phash}, f"{rs_name}-")
        ready = sum(1 for p in pods if _pod_ready(p))
        if use_rs and current is not None:
            self.ctx.write_status(current, _drop_zero({"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                                                       "readyReplicas": ready, "availableReplicas": ready,
                                                       "observedGeneration": current["metadata"].get("generation",
                                                                                                     1)}))
        dep = self.ctx.get("apps/v1", "Deployment", name, ns) or dep
        self.ctx.write_status(dep, self._deployment_status(dep, rs_name, desired, len(pods), ready))

    def _deployment_status(self, dep: dict, rs_name: str, desired: int, total: int, ready: int) -> dict:
        old = dep.get("status") or {}
        max_unavailable = _max_unavailable(dep, desired)
        available = ready >= desired - max_unavailable
        conds = {c.get("type"): c for c in old.get("conditions") or []}
        now = now_iso()

        def cond(ctype, status, reason, message):
            prev = conds.get(ctype) or {}
            same = prev.get("status") == status and prev.get("reason") == reason and prev.get("message") == message
            return {"type": ctype, "status": status,
                    "lastUpdateTime": prev.get("lastUpdateTime", now) if same else now,
                    "lastTransitionTime": prev.get("lastTransitionTime", now) if prev.get("status") == status
                    else now, "reason": reason, "message": message}

        if available:
            c_avail = cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            c_avail = cond("Available", "False", "MinimumReplicasUnavailable",
                           "Deployment does not have minimum availability.")
        if ready >= desired:
            c_prog = cond("Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{rs_name}" has successfully progressed.')
        else:
            c_prog = cond("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        status = _drop_zero({"observedGeneration": dep["metadata"].get("generation", 1), "replicas": total,
                             "updatedReplicas": total, "readyReplicas": ready, "availableReplicas": ready,
                             "unavailableReplicas": max(desired - ready, 0)})
        status["conditions"] = [c_avail, c_prog]
        return status

    def _reconcile_daemonset(self, ds: dict) -> None:
        meta = ds["metadata"]
        template = ds["spec"]["template"]
        phash = template_hash(template)
        desired = self._desired(ds)
        pods = self._sync_pods(ds, template, desired, self.plan_for(ds),
                               {"controller-revision-hash": phash, "pod-template-generation":
                                str(meta.get("generation", 1))}, f"{meta['name']}-")
        ready = sum(1 for p in pods if _pod_ready(p))
        status = _drop_zero({"currentNumberScheduled": len(pods), "desiredNumberScheduled": desired,
                             "numberAvailable": ready, "numberReady": ready, "updatedNumberScheduled": len(pods),
                             "numberUnavailable": max(desired - ready, 0)})
        status["numberMisscheduled"] = 0
        status["observedGeneration"] = meta.get("generation", 1)
        status.setdefault("currentNumberScheduled", 0)
        status.setdefault("desiredNumberScheduled", 0)
        status.setdefault("numberReady", 0)
        self.ctx.write_status(ds, status)

    def _sync_pods(self, owner: dict, template: dict, desired: int, plan: PodPlan, extra_labels: dict,
                   prefix: str) -> list[dict]:
        ns = owner["metadata"]["namespace"]
        pods = [p for p in self._owned(ns, owner["metadata"]["uid"]) if not p["metadata"].get("deletionTimestamp")]
        labels = dict((template.get("metadata") or {}).get("labels") or {}, **extra_labels)
        # a DaemonSet whose template changed: its pods carry the old hash
        keep = []
        for pod in pods:
            plabels = pod["metadata"].get("labels") or {}
            if any(plabels.get(k) != v for k, v in extra_labels.items() if k != "pod-template-generation"):
                self.ctx.delete("v1", "Pod", pod["metadata"]["name"], ns)
            else:
                keep.append(pod)
        pods = keep
        while len(pods) > desired:
            victim = pods.pop()
            self.ctx.delete("v1", "Pod", victim["metadata"]["name"], ns)
        while len(pods) < desired:
            pod = self._new_pod(owner, template, labels, prefix, plan)
            if pod is None:
                break
            pods.append(pod)
        out = []
        for pod in pods:
            status = self._pod_status(pod, plan)
            written = self.ctx.write_status(pod, status) if pod.get("status") != status else pod
            out.append(written or pod)
        return out

    def _new_pod(self, owner: dict, template: dict, labels: dict, prefix: str, plan: PodPlan) -> dict | None:
        ns = owner["metadata"]["namespace"]
        spec = json.loads(json.dumps(template.get("spec") or {}))
        spec["nodeName"] = NODE_NAME
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("tolerations", [
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "tolerationSeconds": 300}])
        for container in spec.get("containers") or []:
            container["image"] = resolve_image(container.get("image", ""))
        tmeta = template.get("metadata") or {}
        for _ in range(5):
            name = prefix + random_suffix()
            if self.ctx.get("v1", "Pod", name, ns) is None:
                break
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels,
                            "ownerReferences": [owner_ref(owner)]},
               "spec": spec}
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = dict(tmeta["annotations"])
        key = (ns, name)
        self.started[key] = now_iso()
        self.ips[key] = self._next_ip()
        for c in spec.get("containers") or []:
            if plan.container_state(c["name"]) == "crashloop":
                self._crash(ns, name, c["name"])
        pod["status"] = self._pod_status(pod, plan)
        try:
            return self.store.create(pod)
        except Exception as exc:  # noqa: BLE001
            log.warning("pod %s/%s not created: %s", ns, name, exc)
            return None

    def _next_ip(self) -> str:
        n = self._ip_next - 2
        self._ip_next += 1
        return f"10.244.{n // 253}.{n % 253 + 2}"

    # -- crashloop ------------------------------------------------------------------------------------------------

    def _crash(self, ns: str, pod: str, container: str) -> None:
        key = (ns, pod, container)
        self.restarts[key] = self.restarts.get(key, 0) + 1
        self.crash_at[key] = now_iso()
        if self.ctx.stopped.is_set():
            return
        delay = CRASH_BACKOFF[min(self.restarts[key] - 1, len(CRASH_BACKOFF) - 1)]
        timer = threading.Timer(delay, self._crash_again, args=(ns, pod, container))
        timer.daemon = True
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = timer
        timer.start()

    def _crash_again(self, ns: str, pod: str, container: str) -> None:
        with self.ctx.lock:
            self._timers.pop((ns, pod, container), None)
            if self.ctx.stopped.is_set():
                return
            obj = self.ctx.get("v1", "Pod", pod, ns)
            if obj is None:
                return
            owner = self._workload_of_pod(obj)
            if owner is None or self.plan_for(owner).container_state(container) != "crashloop":
                return
            self._crash(ns, pod, container)
            self.reconcile(owner)

    # -- pod status -----------------------------------------------------------------------------------------------

    def _pod_status(self, pod: dict, plan: PodPlan) -> dict:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = (ns, name)
        started = self.started.setdefault(key, (pod.get("status") or {}).get("startTime") or now_iso())
        ip = self.ips.get(key) or (pod.get("status") or {}).get("podIP")
        if not ip:
            ip = self.ips[key] = self._next_ip()
        spec = pod.get("spec") or {}
        inits, init_done, init_pending = [], True, []
        for c in spec.get("initContainers") or []:
            state = plan.init_state(c["name"])
            inits.append(self._init_status(ns, name, c, state, started))
            if state != "completed":
                init_done = False
                init_pending.append(c["name"])
        statuses, unready, waiting = [], [], False
        for c in spec.get("containers") or []:
            state = plan.container_state(c["name"]) if init_done else "init"
            st = self._container_status(ns, name, c, state, started)
            statuses.append(st)
            if not st["ready"]:
                unready.append(c["name"])
            waiting = waiting or state in ("imagepull", "creating", "init")
        phase = "Running" if init_done and not waiting else "Pending"
        prev = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}

        def cond(ctype, ok, reason=None, message=None):
            status = "True" if ok else "False"
            old = prev.get(ctype) or {}
            out = {"type": ctype, "status": status, "lastProbeTime": None,
                   "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == status
                   else now_iso()}
            if not ok and reason:
                out["reason"], out["message"] = reason, message
            return out

        ready = init_done and not unready
        conditions = [
            cond("Initialized", init_done, "ContainersNotInitialized",
                 f"containers with incomplete status: [{' '.join(init_pending)}]"),
            cond("Ready", ready, "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"),
            cond("ContainersReady", ready, "ContainersNotReady",
                 f"containers with unready status: [{' '.join(unready)}]"),
            cond("PodScheduled", True),
        ]
        qos = "BestEffort"
        if any((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits")
               for c in spec.get("containers") or []):
            qos = "Burstable"
        host_ip = self._node()[1]
        status = {"phase": phase, "conditions": conditions, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                  "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started, "qosClass": qos,
                  "containerStatuses": statuses}
        if inits:
            status["initContainerStatuses"] = inits
        return status

    def _container_status(self, ns: str, pod: str, c: dict, state: str, started: str) -> dict:
        image = c.get("image", "")
        key = (ns, pod, c["name"])
        restarts = self.restarts.get(key, 0)
        st = {"name": c["name"], "image": image, "imageID": image_id(image),
              "containerID": _cid(ns, pod, c["name"], str(restarts)), "ready": False, "started": False,
              "restartCount": restarts, "lastState": {}, "state": {}}
        if state in ("ready", "running"):
            st["ready"] = state == "ready"
            st["started"] = True
            st["state"] = {"running": {"startedAt": started}}
        elif state == "crashloop":
            st["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": f"back-off {min(10 * 2 ** max(restarts - 1, 0), 300)}s restarting "
                                                  f"failed container={c['name']} pod={pod}_{ns}"}}
            crashed = self.crash_at.get(key, started)
            st["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": crashed,
                                              "finishedAt": crashed,
                                              "containerID": _cid(ns, pod, c["name"], str(restarts - 1))}}
        elif state == "imagepull":
            st["imageID"] = ""
            st.pop("containerID")
            st["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
        elif state == "init":
            st["imageID"] = ""
            st.pop("containerID")
            st["state"] = {"waiting": {"reason": "PodInitializing"}}
        else:  # creating
            st["imageID"] = ""
            st.pop("containerID")
            st["state"] = {"waiting": {"reason": "ContainerCreating"}}
        return st

    def _init_status(self, ns: str, pod: str, c: dict, state: str, started: str) -> dict:
        image = c.get("image", "")
        st = {"name": c["name"], "image": image, "imageID": image_id(image),
              "containerID": _cid(ns, pod, c["name"], "0"), "ready": False, "restartCount": 0, "lastState": {},
              "started": False}
        if state == "completed":
            st["ready"] = True
            st["state"] = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                          "finishedAt": started, "containerID": st["containerID"]}}
        elif state == "error":
            st["state"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started,
                                          "finishedAt": started, "containerID": st["containerID"]}}
        elif state == "running":
            st["started"] = True
            st["state"] = {"running": {"startedAt": started}}
        else:
            st["imageID"] = ""
            st.pop("containerID")
            st["state"] = {"waiting": {"reason": "PodInitializing"}}
        return st

    # -- endpoints ------------------------------------------------------------------------------------------------

    def sync_endpoints(self, namespace: str, only: str | None = None) -> None:
        if not namespace:
            return
        services = self.ctx.list("v1", "Service", namespace)
        if only:
            services = [s for s in services if s["metadata"]["name"] == only]
        if not services:
            return
        pods = [p for p in self.ctx.list("v1", "Pod", namespace) if not p["metadata"].get("deletionTimestamp")]
        for svc in services:
            selector = (svc.get("spec") or {}).get("selector")
            if not selector or (svc.get("spec") or {}).get("type") == "ExternalName":
                continue
            ready, not_ready = [], []
            chosen = []
            for pod in pods:
                labels = pod["metadata"].get("labels") or {}
                if any(labels.get(k) != v for k, v in selector.items()):
                    continue
                ip = (pod.get("status") or {}).get("podIP")
                if not ip:
                    continue
                address = {"ip": ip, "nodeName": NODE_NAME,
                           "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": namespace,
                                         "uid": pod["metadata"]["uid"]}}
                (ready if _pod_ready(pod) else not_ready).append(address)
                chosen.append(pod)
            ports = []
            for port in (svc.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    target = _named_port(chosen, target) or port.get("port")
                out = {"port": target, "protocol": port.get("protocol", "TCP")}
                if port.get("name"):
                    out["name"] = port["name"]
                ports.append(out)
            subsets = []
            if ready or not_ready:
                subset: dict = {}
                if ready:
                    subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
                if not_ready:
                    subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
                subset["ports"] = ports
                subsets = [subset]
            name = svc["metadata"]["name"]
            eps = {"apiVersion": "v1", "kind": "Endpoints",
                   "metadata": {"name": name, "namespace": namespace,
                                "labels": dict(svc["metadata"].get("labels") or {})},
                   "subsets": subsets}
            if not eps["metadata"]["labels"]:
                del eps["metadata"]["labels"]
            self._upsert(eps, self.ctx.get("v1", "Endpoints", name, namespace))

    # -- helpers --------------------------------------------------------------------------------------------------

    def _upsert(self, obj: dict, live: dict | None) -> dict | None:
        """Create, or replace the object's content (metadata labels/annotations/owners and body) when it differs."""
        try:
            if live is None:
                return self.store.create(obj)
            merged = dict(live)
            merged_meta = dict(live["metadata"])
            for k in ("labels", "annotations", "ownerReferences"):
                if k in obj["metadata"]:
                    merged_meta[k] = obj["metadata"][k]
                else:
                    merged_meta.pop(k, None)
            merged["metadata"] = merged_meta
            for k, v in obj.items():
                if k not in ("metadata", "status", "apiVersion", "kind"):
                    merged[k] = v
            for k in list(merged):
                if k not in obj and k not in ("metadata", "status", "apiVersion", "kind"):
                    merged.pop(k)
            if merged == live:
                return live
            merged["metadata"].pop("resourceVersion", None)
            return self.store.update(merged)
        except Exception as exc:  # noqa: BLE001
            log.debug("upsert of %s %s failed: %s", obj.get("kind"), obj["metadata"].get("name"), exc)
            return None

    def _workload_of_pod(self, pod: dict) -> dict | None:
        ns = pod["metadata"].get("namespace")
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "DaemonSet":
                return self.ctx.get("apps/v1", "DaemonSet", ref["name"], ns)
            if ref.get("kind") == "Deployment":
                return self.ctx.get("apps/v1", "Deployment", ref["name"], ns)
            if ref.get("kind") == "ReplicaSet":
                rs = self.ctx.get("apps/v1", "ReplicaSet", ref["name"], ns)
                for rref in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    if rref.get("kind") == "Deployment":
                        dep = self.ctx.get("apps/v1", "Deployment", rref["name"], ns)
                        if dep and template_hash(dep["spec"]["template"]) == \
                                (pod["metadata"].get("labels") or {}).get("pod-template-hash"):
                            return dep
        return None

    def _forget_pod(self, ns: str, name: str) -> None:
        self.started.pop((ns, name), None)
        self.ips.pop((ns, name), None)
        for key in [k for k in self.restarts if k[:2] == (ns, name)]:
            self.restarts.pop(key, None)
            self.crash_at.pop(key, None)
            timer = self._timers.pop(key, None)
            if timer:
                timer.cancel()

    def _forget_workload(self, obj: dict) -> None:
        pass  # the store's garbage collector removes ReplicaSets and Pods through their ownerReferences

    # -- logs -----------------------------------------------------------------------------------------------------

    def pod_logs(self, namespace: str, pod: str, container: str | None, previous: bool) -> str | None:
        obj = self.ctx.get("v1", "Pod", pod, namespace)
        if obj is None:
            return None
        spec = obj.get("spec") or {}
        all_containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        if container is None:
            if len(spec.get("containers") or []) != 1:
                return None
            container = spec["containers"][0]["name"]
        c = next((c for c in all_containers if c.get("name") == container), None)
        if c is None:
            return None
        for provider in self.log_providers:
            text = provider(namespace, obj, container, previous)
            if text is not None:
                return text
        statuses = {s["name"]: s for s in ((obj.get("status") or {}).get("containerStatuses") or []) +
                    ((obj.get("status") or {}).get("initContainerStatuses") or [])}
        st = statuses.get(container) or {}
        waiting = (st.get("state") or {}).get("waiting") or {}
        crashed = self.restarts.get((namespace, pod, container), 0) > 0
        if previous:
            return _crash_log(c, obj) if crashed else None
        if waiting.get("reason") in ("ImagePullBackOff", "ErrImagePull", "ContainerCreating", "PodInitializing"):
            return None
        if crashed:
            return _crash_log(c, obj)
        return _startup_log(c, obj)


def _klog(level: str, when: str, source: str, text: str) -> str:
    t = datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ")
    return f"{level}{t:%m%d %H:%M:%S}.000000       1 {source}] {text}"


def _startup_log(c: dict, pod: dict) -> str:
    when = (pod.get("status") or {}).get("startTime") or now_iso()
    image = c.get("image", "")
    version = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] and "@" not in image else "unknown"
    lines = [_klog("I", when, "main.go:46", f'"starting {c["name"]}" version="{version}" image="{image}"'),
             _klog("I", when, "leaderelection.go:250", f'attempting to acquire leader lease '
                                                       f'{pod["metadata"]["namespace"]}/{c["name"]}...'),
             _klog("I", when, "leaderelection.go:260", f'successfully acquired lease '
                                                       f'{pod["metadata"]["namespace"]}/{c["name"]}'),
             _klog("I", when, "controller.go:220", '"Starting workers" worker count=1')]
    return "\n".join(lines) + "\n"


def _crash_log(c: dict, pod: dict) -> str:
    when = now_iso()
    lines = [_klog("I", when, "main.go:46", f'"starting {c["name"]}" image="{c.get("image", "")}"'),
             _klog("E", when, "main.go:61", '"error running controller" err="failed to start: exit status 1"'),
             _klog("F", when, "main.go:62", f'{c["name"]}: fatal error, exiting with status 1')]
    return "\n".join(lines) + "\n"


def _pod_ready(pod: dict) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _named_port(pods: list[dict], name: str) -> int | None:
    for pod in pods:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == name:
                    return p.get("containerPort")
    return None


def _drop_zero(status: dict) -> dict:
    return {k: v for k, v in status.items() if v not in (0, None)}


def _max_unavailable(dep: dict, desired: int) -> int:
    rolling = ((dep.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    value = rolling.get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
