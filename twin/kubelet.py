"""The twin's process kubelet: runs the processes behind the Pods on the twin's node.

KWOK reports Pod status; it runs nothing. This kubelet does what a kubelet does for the containers the twin can
really run:
- **component Pods** (the KServe controller, the stand-ins of twin/standins/): when KWOK reports a container
  running, its process is started inside the twin's network namespace, bound to the Pod IP, with the Pod's
  ServiceAccount token, its env (fieldRefs, Secret and ConfigMap refs resolved) and its Secret/ConfigMap volumes
  written to disk (and rewritten when they change). When the container stops running (a crash-loop fault, the Pod
  deleted), the process is stopped. What runs for which container is twin/catalog.py's answer.
- **model Pods** (label serving.kserve.io/inferenceservice; KWOK leaves their status alone): this kubelet owns
  their status as a kubelet would, from what really happens: the storage initializer downloads the model (or
  fails, with its error), then the KServe model server starts and the Pod turns Ready when it answers its
  readiness check (twin/modelpods.py).

Every process is started from this kubelet's one sync thread, so PR_SET_PDEATHSIG ties it to the twin's life.
"""
from __future__ import annotations

import base64
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from twin import mesh
from twin.kwok import KUBELET_ANNOTATION
from twin.processes import stop_process, stop_processes
from twin.standins.runtime import Informer, Kube

log = logging.getLogger("twin.kubelet")

MODEL_POD_LABEL = "serving.kserve.io/inferenceservice"
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class ProcessSpec:
    """What to run for one container of a Pod (see twin/catalog.py). The container's args are appended to argv,
    with $(VAR) references expanded from its env, as kubelet does."""
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # A real binary runs as in a Pod: its volumes and its ServiceAccount token mounted at their paths (in a mount
    # namespace of its own), in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT, no kubeconfig).
    in_cluster: bool = False
    ready_file: bool = False      # a stand-in writes $TWIN_READY_FILE once it serves


@dataclass
class Running:
    pod_uid: str
    container: str
    proc: subprocess.Popen
    started: float
    restarts: int = 0
    log_path: Path | None = None
    ready: bool = False
    ready_file: Path | None = None
    exited_at: float | None = None


class ProcessKubelet:
    def __init__(self, *, admin: Kube, node_names: list[str], netns, workdir: Path, catalog, api_url: str,
                 ca_file: Path, faults_file: Path, model_pods=None):
        # Every node of the twin: their Pods' processes all run on this host, in the twin's network namespace.
        self.admin, self.node_names, self.netns = admin, frozenset(node_names), netns
        self.workdir = Path(workdir) / "pods"
        self.catalog, self.api_url, self.ca_file = catalog, api_url, ca_file
        self.model_pods = model_pods
        self.faults_file = faults_file
        self.running: dict[tuple[str, str], Running] = {}        # (pod uid, container) -> process
        self.failures: list[str] = []                             # processes that exited on their own
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._pods = Informer(admin, "v1", "Pod", self._on_pod)
        self._secrets = Informer(admin, "v1", "Secret", self._on_volume_source)
        self._configmaps = Informer(admin, "v1", "ConfigMap", self._on_volume_source)
        self._thread = threading.Thread(target=self._sync_loop, daemon=True, name="twin-kubelet")
        self._pod_of: dict[str, dict] = {}                        # pod uid -> the Pod a process was started for
        self._awaiting_volumes: dict[str, dict] = {}              # pod uid -> a Pod whose Secret/ConfigMap is absent
        self._networks: dict[str, object] = {}                    # pod uid -> its PodNetwork

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> "ProcessKubelet":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        for informer in (self._secrets, self._configmaps, self._pods):
            informer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for informer in (self._pods, self._secrets, self._configmaps):
            informer.stop()
        self._queue.put(None)
        self._thread.join(timeout=30)
        # The Pods' processes go before the control plane does, as a node drains before its cluster stops: the
        # controllers do not spend their last seconds retrying against an API server that is going away.
        running, self.running = list(self.running.values()), {}
        stop_processes([r.proc for r in running])
        if self.model_pods is not None:
            self.model_pods.stop()

    # -- events (informer threads) -> work queue ---------------------------------------------------------------------

    def _on_pod(self, event_type: str, pod: dict) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.node_names:     # bound to one of the twin's nodes
            self._queue.put(("pod", event_type, pod))

    def _on_volume_source(self, event_type: str, obj: dict) -> None:
        if self.running or self._awaiting_volumes:
            self._queue.put(("volume", event_type, obj))

    # -- the sync thread -----------------------------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        next_check = time.monotonic() + 1.0
        while True:
            try:
                item = self._queue.get(timeout=max(0.05, next_check - time.monotonic()))
            except queue.Empty:
                item = "check"
            if item is None or self._stop.is_set():
                break
            try:
                if item == "check":
                    self._restart_exited()
                    self._probe_readiness()
                    next_check = time.monotonic() + (0.1 if self._unready() else 1.0)
                elif item[0] == "pod":
                    self._sync_pod(item[1], item[2])
                else:
                    self._sync_volumes(item[2])
                    self._retry_awaiting_volumes(item[2])
            except Exception:  # noqa: BLE001 - one bad Pod must not stop the kubelet
                log.exception("twin kubelet: sync failed")
        for key in list(self.running):
            self._stop_process(key)
        for network in self._networks.values():
            network.close()

    def _sync_pod(self, event_type: str, pod: dict) -> None:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if MODEL_POD_LABEL in labels and self.model_pods is not None:
            self.model_pods.sync(event_type, pod)
            return
        uid = meta["uid"]
        statuses = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        gone = event_type == "DELETED" or meta.get("deletionTimestamp")
        if not gone and KUBELET_ANNOTATION not in (meta.get("annotations") or {}):
            self._admit(pod)      # KWOK waits for this decision (twin/kwok.py)
            return
        ip = (pod.get("status") or {}).get("podIP")
        deferred = False
        for container in pod["spec"].get("containers") or []:
            key = (uid, container["name"])
            status = statuses.get(container["name"]) or {}
            should_run = not gone and ip and "running" in (status.get("state") or {})
            if not should_run:
                if key in self.running:
                    log.info("twin kubelet: %s/%s container %s is not running: stopping its process",
                             meta["namespace"], meta["name"], container["name"])
                    self._stop_process(key)
                continue
            if key in self.running:
                self._pod_of[uid] = pod
                continue
            spec = self.catalog.process_for(pod, container)
            if spec is None:
                continue
            missing = self._missing_volume_sources(pod, container)
            if missing:
                # kubelet does not start a container whose Secret or ConfigMap volume is absent (FailedMount):
                # KServe's controller would crash on a missing serving certificate otherwise.
                if uid not in self._awaiting_volumes:
                    log.info("twin kubelet: %s/%s container %s waits for %s", meta["namespace"], meta["name"],
                             container["name"], ", ".join(missing))
                self._awaiting_volumes[uid] = pod
                deferred = True
                continue
            self._start_process(pod, container, spec)
        if gone or not deferred:
            self._awaiting_volumes.pop(uid, None)
        if gone:
            network = self._networks.pop(uid, None)
            if network is not None:
                network.close()
            shutil.rmtree(self.workdir / uid, ignore_errors=True)

    # -- processes -----------------------------------------------------------------------------------------------------

    def _start_process(self, pod: dict, container: dict, spec: ProcessSpec, restarts: int = 0) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        pod_dir = self.workdir / uid
        volumes = pod_dir / "volumes" / container["name"]
        self._write_volumes(pod, container, volumes)
        kubeconfig = self._pod_kubeconfig(pod, pod_dir)
        (pod_dir / "tmp").mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(pod_dir), "KUBECONFIG": str(kubeconfig),
               "TMPDIR": str(pod_dir / "tmp"),
               "POD_NAME": meta["name"], "POD_NAMESPACE": meta["namespace"], "POD_IP": pod["status"]["podIP"],
               "NODE_NAME": pod["spec"]["nodeName"], "TWIN_VOLUMES": str(volumes),
               "KUBERNETES_SERVICE_HOST": self.api_url.split("//", 1)[1].rsplit(":", 1)[0],
               "KUBERNETES_SERVICE_PORT": self.api_url.rsplit(":", 1)[1],
               "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1",
               "TWIN_FAULTS_FILE": str(self.faults_file),
               "TWIN_PORTS": ",".join(f"{p.get('name', p['containerPort'])}={p['containerPort']}"
                                      for p in container.get("ports") or [])}
        env.update(mesh.proxy_env(self.admin, pod, pod_dir, self.workdir.parent))   # an injected Pod's proxy
        container_env = self._container_env(pod, container)
        env.update(container_env)
        env.update(spec.env)
        argv = spec.argv + [expand(arg, container_env) for arg in container.get("args") or []]
        ready_file = pod_dir / "ready" / container["name"] if spec.ready_file else None
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.unlink(missing_ok=True)
            env["TWIN_READY_FILE"] = str(ready_file)
        mounts: list[tuple[str, str]] = []
        if spec.in_cluster:
            env.pop("KUBECONFIG")
            env.pop("TMPDIR")
            mounts = [(str(volumes / m["mountPath"].lstrip("/")), m["mountPath"])
                      for m in container.get("volumeMounts") or []]
        log_path = pod_dir / "logs" / f"{container['name']}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = self.netns.spawn(argv, mounts=mounts, network=self._network(pod), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=pod_dir,
                                    hostname=meta["name"] if spec.in_cluster else None)
        self.running[(uid, container["name"])] = Running(uid, container["name"], proc, time.monotonic(),
                                                         restarts, log_path, ready_file=ready_file)
        self._pod_of[uid] = pod
        if spec.ready_file or container.get("readinessProbe"):
            self._write_readiness(pod)      # a container that just started is not ready (stale after a restore)
        log.info("twin kubelet: started %s for %s/%s container %s (pid %d)", os.path.basename(spec.argv[0])
                 if spec.argv[0].startswith("/") else " ".join(spec.argv[:3]), meta["namespace"], meta["name"],
                 container["name"], proc.pid)

    def _stop_process(self, key: tuple[str, str]) -> None:
        running = self.running.pop(key, None)
        if running is not None:
            stop_process(running.proc, grace=10)

    def _admit(self, pod: dict) -> None:
        """Say whether a process runs for this Pod: KWOK then makes it Ready itself, or leaves readiness to us."""
        runs = any(self.catalog.process_for(pod, c) for c in pod["spec"].get("containers") or [])
        meta = pod["metadata"]
        try:
            self.admin.patch("v1", "Pod", meta["name"], meta["namespace"],
                             {"metadata": {"annotations": {KUBELET_ANNOTATION: "process" if runs else "simulated"}}})
        except Exception as e:  # noqa: BLE001 - a Pod deleted meanwhile
            log.debug("pod %s/%s not annotated: %s", meta["namespace"], meta["name"], e)

    def _unready(self) -> list[tuple[str, str]]:
        return [k for k, r in self.running.items() if not r.ready and r.proc.poll() is None]

    def _probe_readiness(self) -> None:
        """A container with a process is ready once it accepts connections on its ports (a TCP readiness probe);
        the Pod once all its containers are. What KWOK reported stays as it is otherwise."""
        changed: set[str] = set()
        for running in list(self.running.values()):
            if running.ready or running.proc.poll() is not None:
                continue
            pod = self._pod_of.get(running.pod_uid)
            if pod is None:
                continue
            container = next((c for c in pod["spec"]["containers"] if c["name"] == running.container), {})
            running.ready = self._ready(pod, container, running)
            if running.ready:
                changed.add(running.pod_uid)
        for uid in changed:
            self._write_readiness(self._pod_of[uid])

    def _ready(self, pod: dict, container: dict, running: "Running") -> bool:
        """A stand-in says so (it writes $TWIN_READY_FILE once it serves); a real binary passes its TCP or HTTP
        readiness probe; a container without a probe is ready once started, as kubelet has it."""
        if running.ready_file is not None:
            return running.ready_file.exists()
        probe = container.get("readinessProbe") or {}
        handler = probe.get("httpGet") or probe.get("tcpSocket")
        if not handler:
            return True
        port = handler.get("port")
        if isinstance(port, str):
            port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), None)
        if not port:
            return True
        ip = pod["status"]["podIP"]
        if "httpGet" in probe:
            status = self.netns.http_status(ip, port, handler.get("path", "/"),
                                            https=(handler.get("scheme") or "HTTP").upper() == "HTTPS")
            return status is not None and 200 <= status < 400
        return self.netns.accepts(ip, port)

    def _write_readiness(self, pod: dict) -> None:
        meta = pod["metadata"]
        live = self.admin.get("v1", "Pod", meta["name"], meta["namespace"])
        if live is None or (live["metadata"].get("annotations") or {}).get(KUBELET_ANNOTATION) != "process":
            return
        status = live.get("status") or {}
        containers = status.get("containerStatuses") or []
        waiting = False
        for cs in containers:
            run = self.running.get((meta["uid"], cs["name"]))
            if run is not None and run.proc.poll() is None and "running" not in (cs.get("state") or {}):
                # restarted after a crash: running again (restartCount and lastState stay what they were)
                cs["state"] = {"running": {"startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            if "running" not in (cs.get("state") or {}):
                waiting = True
                continue
            cs["ready"] = bool(run.ready) if run is not None else True
            cs["started"] = True
        ready = not waiting and all(cs.get("ready") for cs in containers)
        conditions = [dict(c) for c in status.get("conditions") or []]
        for cond in conditions:
            if cond.get("type") in ("Ready", "ContainersReady") and cond.get("status") != ("True" if ready else "False"):
                cond["status"] = "True" if ready else "False"
                cond["lastTransitionTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                if ready:       # kubelet's Ready condition carries no reason
                    cond.pop("reason", None)
                    cond.pop("message", None)
        self.admin.patch("v1", "Pod", meta["name"], meta["namespace"],
                         {"status": {"containerStatuses": containers, "conditions": conditions}},
                         subresource="status")

    def _network(self, pod: dict):
        """The Pod's own network namespace (none for a hostNetwork Pod: it runs in the node's)."""
        if pod["spec"].get("hostNetwork"):
            return None
        from twin.netns import PodNetwork
        uid = pod["metadata"]["uid"]
        if uid not in self._networks:
            self._networks[uid] = PodNetwork(self.netns, pod["status"]["podIP"]).create()
        return self._networks[uid]

    def _restart_exited(self) -> None:
        """A process that exits while its container should run: the container is reported as kubelet reports a
        crashed one (waiting CrashLoopBackOff, lastState terminated with the exit code, restartCount up), then
        restarted after kubelet's back-off."""
        for key, running in list(self.running.items()):
            code = running.proc.poll()
            if code is None:
                continue
            pod = self._pods.cache.get(self._pod_key(running.pod_uid))
            if pod is None:
                self.running.pop(key, None)
                continue
            wait = RESTART_BACKOFF[min(running.restarts, len(RESTART_BACKOFF) - 1)]
            if running.exited_at is None:
                running.exited_at = time.monotonic()
                running.ready = False
                message = (f"{pod['metadata']['namespace']}/{pod['metadata']['name']} container {running.container} "
                           f"exited with code {code}; restarting it in {wait:.0f}s (log {running.log_path})")
                log.warning("twin kubelet: %s", message)
                self.failures.append(message)
                self._write_crash(pod, running, code, wait)
            if time.monotonic() - running.exited_at < wait:
                continue
            container = next(c for c in pod["spec"]["containers"] if c["name"] == running.container)
            spec = self.catalog.process_for(pod, container)
            self.running.pop(key)
            if spec is not None:
                self._start_process(pod, container, spec, restarts=running.restarts + 1)

    def _write_crash(self, pod: dict, running: "Running", code: int, wait: float) -> None:
        meta = pod["metadata"]
        live = self.admin.get("v1", "Pod", meta["name"], meta["namespace"])
        if live is None:
            return
        status = live.get("status") or {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tail = ""
        try:
            lines = running.log_path.read_text(errors="replace").strip().splitlines()
            tail = lines[-1][-300:] if lines else ""
        except OSError:
            pass
        for cs in status.get("containerStatuses") or []:
            if cs["name"] == running.container:
                cs.update(ready=False, started=False, restartCount=running.restarts + 1,
                          state={"waiting": {"reason": "CrashLoopBackOff",
                                             "message": f"back-off {wait:.0f}s restarting failed container="
                                                        f"{running.container} pod={meta['name']}_{meta['namespace']}"
                                                        f"({meta['uid']})"}},
                          lastState={"terminated": {"exitCode": code, "reason": "Error", "message": tail,
                                                    "finishedAt": now}})
        conditions = [dict(c) for c in status.get("conditions") or []]
        for cond in conditions:
            if cond.get("type") in ("Ready", "ContainersReady") and cond.get("status") != "False":
                cond.update(status="False", lastTransitionTime=now, reason="ContainersNotReady",
                            message=f"containers with unready status: [{running.container}]")
        self.admin.patch("v1", "Pod", meta["name"], meta["namespace"],
                         {"status": {"containerStatuses": status.get("containerStatuses"), "conditions": conditions}},
                         subresource="status")

    def _pod_key(self, uid: str) -> tuple[str, str]:
        pod = self._pod_of.get(uid)
        meta = (pod or {}).get("metadata") or {}
        return meta.get("namespace", ""), meta.get("name", "")

    # -- what a kubelet gives a container -------------------------------------------------------------------------------

    def _container_env(self, pod: dict, container: dict) -> dict[str, str]:
        return container_env(self.admin, pod, container, pod["spec"]["nodeName"])

    def _missing_volume_sources(self, pod: dict, container: dict) -> list[str]:
        """The Secrets and ConfigMaps the container mounts that do not exist (and are not optional), from the
        informers' caches (one not listed yet is retried when its informer adds it: _retry_awaiting_volumes)."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        ns, missing = pod["metadata"]["namespace"], []
        for mount in container.get("volumeMounts") or []:
            vol = volumes.get(mount["name"]) or {}
            for kind, key, name_field, cache in (("Secret", "secret", "secretName", self._secrets),
                                                 ("ConfigMap", "configMap", "name", self._configmaps)):
                source = vol.get(key)
                if source and not source.get("optional") and cache.get(source[name_field], ns) is None:
                    missing.append(f"{kind} {ns}/{source[name_field]}")
        return missing

    def _retry_awaiting_volumes(self, obj: dict) -> None:
        """A Secret or ConfigMap appeared: the Pods of its namespace that waited for one try again."""
        for pod in list(self._awaiting_volumes.values()):
            if pod["metadata"]["namespace"] == obj["metadata"].get("namespace"):
                current = self._pods.get(pod["metadata"]["name"], pod["metadata"]["namespace"]) or pod
                self._sync_pod("MODIFIED", current)

    def _write_volumes(self, pod: dict, container: dict, root: Path) -> None:
        """Secret and ConfigMap volumes the container mounts, as files under root/<mountPath>."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        ns = pod["metadata"]["namespace"]
        for mount in container.get("volumeMounts") or []:
            vol = volumes.get(mount["name"]) or {}
            target = root / mount["mountPath"].lstrip("/")
            if "secret" in vol:
                obj = self.admin.get("v1", "Secret", vol["secret"]["secretName"], ns)
                files = {k: base64.b64decode(v) for k, v in ((obj or {}).get("data") or {}).items()}
            elif "configMap" in vol:
                obj = self.admin.get("v1", "ConfigMap", vol["configMap"]["name"], ns)
                files = {k: v.encode() for k, v in ((obj or {}).get("data") or {}).items()}
            elif "projected" in vol:
                files = self._projected(pod, vol["projected"])
            else:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                path = target / name
                if not path.exists() or path.read_bytes() != data:
                    tmp = path.with_name(f".{name}.tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, path)

    def _projected(self, pod: dict, projected: dict) -> dict[str, bytes]:
        """A projected volume (the kube-api-access volume the ServiceAccount admission adds to every Pod)."""
        meta, files = pod["metadata"], {}
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                sa = pod["spec"].get("serviceAccountName") or "default"
                files[source["serviceAccountToken"].get("path", "token")] = \
                    self._token(meta["namespace"], sa, meta["name"], meta["uid"]).encode()
            elif "configMap" in source:
                cm = self.admin.get("v1", "ConfigMap", source["configMap"]["name"], meta["namespace"]) or {}
                data = cm.get("data") or {}
                for item in source["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                    if item["key"] in data:
                        files[item["path"]] = data[item["key"]].encode()
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    field_path = (item.get("fieldRef") or {}).get("fieldPath")
                    value = {"metadata.namespace": meta["namespace"], "metadata.name": meta["name"],
                             "metadata.uid": meta["uid"]}.get(field_path)
                    if value is not None:
                        files[item["path"]] = value.encode()
        return files

    def _sync_volumes(self, obj: dict) -> None:
        """A Secret or ConfigMap changed: rewrite it wherever a running process mounts it (kubelet's volume sync)."""
        for uid, cname in list(self.running):
            pod = self._pod_of.get(uid)
            if pod is None or pod["metadata"]["namespace"] != obj["metadata"].get("namespace"):
                continue
            container = next((c for c in pod["spec"]["containers"] if c["name"] == cname), None)
            if container is not None:
                self._write_volumes(pod, container, self.workdir / uid / "volumes" / cname)

    def _pod_kubeconfig(self, pod: dict, pod_dir: Path) -> Path:
        """A kubeconfig with a bound ServiceAccount token for the Pod (what a projected token volume holds)."""
        from twin.controlplane import write_kubeconfig
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        token = self._token(meta["namespace"], sa, meta["name"], meta["uid"])
        return write_kubeconfig(pod_dir / "kubeconfig", self.api_url, self.ca_file, context="in-cluster",
                                user=f"system:serviceaccount:{meta['namespace']}:{sa}", token=token,
                                namespace=meta["namespace"])

    def _token(self, namespace: str, sa: str, pod_name: str, pod_uid: str) -> str:
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 86400,
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}}}
        res = self.admin.resource("v1", "ServiceAccount").subresources["token"]
        result = res.create(body=request, name=sa, namespace=namespace).to_dict()
        return result["status"]["token"]


def mark_not_ready(kube: Kube, pod: dict) -> None:
    """Every container of `pod` not ready (its state kept), and the Pod's Ready and ContainersReady False, worded as
    kubelet words them: what a kubelet reports for containers whose readiness probes have not passed yet."""
    meta, status = pod["metadata"], pod.get("status") or {}
    containers = [dict(cs, ready=False) for cs in status.get("containerStatuses") or []]
    names = " ".join(cs["name"] for cs in containers)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [dict(c) for c in status.get("conditions") or []]
    for cond in conditions:
        if cond.get("type") in ("Ready", "ContainersReady"):
            if cond.get("status") != "False":
                cond["lastTransitionTime"] = now
            cond.update(status="False", reason="ContainersNotReady", message=f"containers with unready status: [{names}]")
    kube.patch("v1", "Pod", meta["name"], meta["namespace"],
               {"status": {"containerStatuses": containers, "conditions": conditions}}, subresource="status")


def container_env(kube: Kube, pod: dict, container: dict, node_name: str) -> dict[str, str]:
    """The container's env as kubelet resolves it: values, fieldRefs, Secret and ConfigMap key refs."""
    out: dict[str, str] = {}
    meta = pod["metadata"]
    fields = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
              "metadata.uid": meta["uid"], "spec.nodeName": node_name,
              "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
              "status.podIP": (pod.get("status") or {}).get("podIP", ""),
              "status.hostIP": (pod.get("status") or {}).get("hostIP", "")}
    for item in container.get("env") or []:
        if "value" in item:
            out[item["name"]] = expand(str(item["value"]), out)
            continue
        ref = item.get("valueFrom") or {}
        if "fieldRef" in ref:
            out[item["name"]] = fields.get(ref["fieldRef"].get("fieldPath", ""), "")
        elif "secretKeyRef" in ref or "configMapKeyRef" in ref:
            kind, sel = ("Secret", ref["secretKeyRef"]) if "secretKeyRef" in ref else ("ConfigMap",
                                                                                        ref["configMapKeyRef"])
            obj = kube.get("v1", kind, sel["name"], meta["namespace"]) or {}
            value = (obj.get("data") or {}).get(sel["key"])
            if value is not None:
                out[item["name"]] = base64.b64decode(value).decode() if kind == "Secret" else value
    return out


def expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) -> its value where the container env defines it; $$(VAR) -> $(VAR) (the Kubernetes expansion rules)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
