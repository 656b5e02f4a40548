"""Model Pods: the Pods of InferenceServices, whose containers the twin really runs and whose status it reports.

KWOK leaves these Pods alone (its Stages skip the serving.kserve.io/inferenceservice label); this module plays
kubelet for them, one thread per Pod, from what its processes do:
- init containers: the storage-initializer runs twin/storage.py with the container's args (the model lands in
  the Pod's /mnt/models); a failure is `terminated` Error with its exit code, then restarted with kubelet's
  back-off (10 s doubling, up to 5 min) and reported `waiting` CrashLoopBackOff in between;
- containers: kserve-container runs the KServe model server (twin/modelserver.py) on the Pod IP, queue-proxy a
  forwarder to it (twin/forwarder.py), any other container runs nothing and counts as running; a container that
  exits is restarted with the same back-off;
- readiness: the model server container is Ready when GET /v1/models/<name> answers 200 (what KServe's and
  Knative's readiness checks ask), the Pod when all its containers are;
- a Pod the sidecar injector gave an istio-proxy container: that container runs the sidecar stand-in
  (twin/standins/sidecar.py) on the Pod IP, the other servers listen on 127.0.0.1 behind it, the readiness probe
  goes through its :15020 (as istio-agent answers a rewritten probe), and the twin's mesh snapshot lists the Pod
  IP as having a sidecar (auto mTLS for the gateway and activator).
Pod IPs come from the upper half of the node's pod CIDR (KWOK hands out the lower half).

Fault isvc-stuck: the storage initializer never finishes (the Pod stays Init:0/1).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from twin.mesh import SIDECAR
from twin import faults, mesh
from twin.kubelet import container_env, expand
from twin.objectstore import ObjectStore
from twin.processes import stop_processes
from twin.standins.runtime import now_iso
from twin.zygote import ZygoteError

log = logging.getLogger("twin.modelpods")

BACKOFF = (10, 20, 40, 80, 160, 300)
MODEL_PORT = 8080
READY_TIMEOUT = 120.0
REPO_ROOT = Path(__file__).resolve().parent.parent


class IPPool:
    def __init__(self, pod_cidr: str):
        net = ipaddress.ip_network(pod_cidr)
        upper = list(net.subnets(prefixlen_diff=1))[1]
        self.free = [str(ip) for ip in upper.hosts()]
        self.lock = threading.Lock()

    def take(self) -> str:
        with self.lock:
            return self.free.pop(0)

    def give(self, ip: str) -> None:
        with self.lock:
            self.free.append(ip)


class ModelPods:
    def __init__(self, twin):
        self.twin = twin
        self.pool = IPPool(twin.netns.addresses.pod_cidr)
        self.store = ObjectStore(twin.workdir / "objectstore")
        self.store.ensure_iris()
        self.runners: dict[str, PodRunner] = {}
        self.lock = threading.Lock()
        self._zygote = None                # forks the model servers (twin/zygote.py), launched with the first Pod
        self._zygote_ready = False
        self._zygote_lock = threading.Lock()

    def zygote(self):
        """The fork server of this twin's model servers, connected; None where it cannot serve (each server is then
        a Python of its own, as before: slower, the same)."""
        from twin.zygote import ZygoteError
        with self._zygote_lock:
            if self._zygote is None:
                self._launch_zygote()
            if self._zygote and not self._zygote_ready:
                try:
                    self._zygote.start()
                    self._zygote_ready = True
                except ZygoteError as e:
                    self._no_zygote(e)
            return self._zygote or None

    def _launch_zygote(self) -> None:
        """Launched from the kubelet's sync thread, which lives as long as the twin (the zygote dies with the
        thread that started it); its imports run while the first model Pod's storage initializer does."""
        from twin.zygote import Zygote, ZygoteError
        try:
            self._zygote = Zygote(self.twin.netns, self.twin.workdir / "zygote").launch()
        except (OSError, ZygoteError) as e:
            self._no_zygote(e)

    def _no_zygote(self, error: Exception) -> None:
        log.warning("model pods: no model server zygote (%s): each server starts a Python of its own", error)
        if self._zygote:
            self._zygote.stop()
        self._zygote = False

    def sync(self, event_type: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        gone = event_type == "DELETED" or pod["metadata"].get("deletionTimestamp")
        with self.lock:
            runner = self.runners.get(uid)
            if gone:
                if runner:
                    self.runners.pop(uid).stop()
                return
            if runner is None and (pod.get("spec") or {}).get("nodeName"):
                with self._zygote_lock:
                    if self._zygote is None:
                        self._launch_zygote()
                runner = self.runners[uid] = PodRunner(self, pod)
                runner.start()

    def stop(self) -> None:
        with self.lock:
            runners, self.runners = list(self.runners.values()), {}
        for runner in runners:         # every Pod's processes are signalled together, then waited for together
            runner.stopped.set()
        stop_processes([proc for runner in runners for proc in list(runner.procs.values())])
        for runner in runners:
            runner.join(timeout=15)
        if self._zygote:
            self._zygote.stop()


class PodRunner(threading.Thread):
    def __init__(self, owner: ModelPods, pod: dict):
        super().__init__(daemon=True, name=f"model-pod-{pod['metadata']['name']}")
        self.owner, self.pod = owner, pod
        self.twin = owner.twin
        self.meta = pod["metadata"]
        self.dir = self.twin.workdir / "pods" / self.meta["uid"]
        self.stopped = threading.Event()
        self.ip: str | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.network = None
        self.init_status: dict[str, dict] = {}
        self.status: dict[str, dict] = {}
        self.started = now_iso()
        self.in_mesh = mesh.injected(pod) and any(c["name"] == SIDECAR for c in pod["spec"]["containers"])
        # behind a sidecar the Pod's servers listen on loopback, where it forwards what it lets in
        self.bind = "127.0.0.1" if self.in_mesh else None

    # -- status ------------------------------------------------------------------------------------------------------

    def _write(self, phase: str) -> None:
        spec = self.pod["spec"]
        inits = [self.init_status.get(c["name"]) or _waiting(c, "PodInitializing")
                 for c in spec.get("initContainers") or []]
        mains = [self.status.get(c["name"]) or _waiting(c, "PodInitializing") for c in spec["containers"]]
        initialized = all("terminated" in s["state"] and s["state"]["terminated"].get("exitCode") == 0
                          for s in inits)
        unready = [s["name"] for s in mains if not s.get("ready")]
        pending_init = [s["name"] for s in inits if not ("terminated" in s["state"] and
                                                         s["state"]["terminated"].get("exitCode") == 0)]

        def cond(ctype, ok, reason=None, message=None):
            out = {"type": ctype, "status": "True" if ok else "False", "lastTransitionTime": now_iso(),
                   "lastProbeTime": None}
            if not ok and reason:
                out.update(reason=reason, message=message)
            return out

        status = {"phase": phase, "hostIP": self.twin.node_ip, "hostIPs": [{"ip": self.twin.node_ip}],
                  "podIP": self.ip, "podIPs": [{"ip": self.ip}], "startTime": self.started,
                  "qosClass": "Burstable", "initContainerStatuses": inits or None, "containerStatuses": mains,
                  "conditions": [
                      cond("PodReadyToStartContainers", True),
                      cond("Initialized", initialized, "ContainersNotInitialized",
                           f"containers with incomplete status: [{' '.join(pending_init)}]"),
                      cond("Ready", initialized and not unready, "ContainersNotReady",
                           f"containers with unready status: [{' '.join(unready)}]"),
                      cond("ContainersReady", initialized and not unready, "ContainersNotReady",
                           f"containers with unready status: [{' '.join(unready)}]"),
                      cond("PodScheduled", True)]}
        try:
            self.twin.admin.patch("v1", "Pod", self.meta["name"], self.meta["namespace"], {"status": status},
                                  subresource="status")
        except Exception as e:  # noqa: BLE001 - the Pod may be gone; the next change retries
            log.debug("status of %s not written: %s", self.meta["name"], e)

    # -- the Pod's life ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.ip = self.owner.pool.take()
            self.dir.mkdir(parents=True, exist_ok=True)
            from twin.netns import PodNetwork
            self.network = PodNetwork(self.twin.netns, self.ip).create()
            self.bind = self.bind or self.ip
            self._write("Pending")
            for container in self.pod["spec"].get("initContainers") or []:
                if not self._run_init(container):
                    return
            self._run_containers()
        except Exception:  # noqa: BLE001
            log.exception("model pod %s failed", self.meta["name"])
        finally:
            stop_processes(list(self.procs.values()))
            if self.in_mesh and self.ip and self.twin.mesh is not None:
                self.twin.mesh.unregister(self.ip)
            if self.network is not None:
                self.network.close()
            if self.ip:
                self.owner.pool.give(self.ip)

    def _argv(self, container: dict, env: dict) -> list[str]:
        """The container's command, with its volumes' mount paths pointing into the Pod's directory."""
        args = [expand(a, env) for a in (container.get("command") or [])[1:] + (container.get("args") or [])]
        for mount in container.get("volumeMounts") or []:
            local = str(self.dir / "volumes" / mount["name"])
            Path(local).mkdir(parents=True, exist_ok=True)
            args = [a.replace(mount["mountPath"], local) for a in args]
        return args

    def _env(self, container: dict) -> dict:
        env = container_env(self.twin.admin, dict(self.pod, status={"podIP": self.ip}), container,
                            self.pod["spec"]["nodeName"])
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir),
                "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "POD_IP": self.ip,
                "TWIN_FAULTS_FILE": str(self.twin.faults_file),
                "TWIN_OBJECT_STORE": str(self.owner.store.root), **env}

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log_path = self.dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = self.twin.netns.spawn(argv, network=self.network, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.dir)
        self.procs[name] = proc
        return proc

    def _run_init(self, container: dict) -> bool:
        name = container["name"]
        restarts = 0
        while not self.stopped.is_set():
            self.init_status[name] = _running(container, restarts, ready=False)
            self._write("Pending")
            if faults.active(self.twin.faults_file, "isvc-stuck"):
                self.stopped.wait()            # the download never finishes
                return False
            env = self._env(container)
            argv = [sys.executable, "-m", "twin.storage", *self._argv(container, env)] \
                if name == "storage-initializer" else None
            code = self._spawn(name, argv, env).wait() if argv else 0
            if code == 0:
                self.init_status[name] = _terminated(container, restarts, 0, "Completed")
                self._write("Pending")
                return True
            if self.stopped.is_set():
                return False
            self.init_status[name] = _terminated(container, restarts, code, "Error", self._termination_message(container))
            self._write("Pending")
            wait = BACKOFF[min(restarts, len(BACKOFF) - 1)]
            restarts += 1
            self.init_status[name] = _backoff(container, restarts, wait, self.meta, code, self._termination_message(container))
            self._write("Pending")
            if self.stopped.wait(wait):
                return False
        return False

    def _run_containers(self) -> None:
        containers = self.pod["spec"]["containers"]
        restarts = {c["name"]: 0 for c in containers}
        model_port = MODEL_PORT
        for c in containers:
            self._start_container(c, restarts[c["name"]])
        self._write("Running")
        ready_at = None
        due: dict[str, float] = {}
        while not self.stopped.is_set():
            changed = False
            for c in containers:
                proc = self.procs.get(c["name"])
                if proc is not None and proc.poll() is not None and "running" in self.status[c["name"]]["state"]:
                    code = proc.returncode
                    restarts[c["name"]] += 1
                    wait = BACKOFF[min(restarts[c["name"]] - 1, len(BACKOFF) - 1)]
                    self.status[c["name"]] = _backoff(c, restarts[c["name"]], wait, self.meta, code,
                                                      self._termination_message(c))
                    self._write("Running")
                    due[c["name"]] = time.monotonic() + wait     # kubelet restarts it after its back-off
                    changed = True
                if c["name"] in due and time.monotonic() >= due[c["name"]]:
                    due.pop(c["name"])
                    self._start_container(c, restarts[c["name"]])
                    changed = True
                if c["name"] == "kserve-container" and "running" in self.status[c["name"]]["state"] and \
                        not self.status[c["name"]]["ready"] and self._probe(c, model_port):
                    self.status[c["name"]]["ready"] = True
                    self.status[c["name"]]["started"] = True
                    ready_at = time.monotonic()
                    for other in containers:            # the sidecars are ready once the server is
                        if other["name"] != c["name"] and "running" in self.status[other["name"]]["state"]:
                            self.status[other["name"]]["ready"] = True
                    changed = True
            if changed:
                self._write("Running")
            self.stopped.wait(0.2 if ready_at is None else 1.0)

    def _start_container(self, container: dict, restarts: int) -> None:
        name = container["name"]
        env = self._env(container)
        if name == "kserve-container":
            args = [*self._argv(container, env), f"--bind={self.bind}"]
            zygote = self.owner.zygote()
            try:
                if zygote is None:
                    raise ZygoteError("no zygote")
                log_path = self.dir / "logs" / f"{name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                self.procs[name] = zygote.spawn(args, env, self.dir, log_path, self.network.path)
            except ZygoteError:
                self._spawn(name, [sys.executable, "-m", "twin.modelserver", *args], env)
        elif name == "queue-proxy":
            self._spawn(name, [sys.executable, "-m", "twin.forwarder", f"{self.bind}:8012", f"{self.bind}:8080"], env)
        elif name == SIDECAR and self.in_mesh:
            self._spawn(name, [sys.executable, "-m", "twin.standins.sidecar"], {**env, **self._sidecar_env()})
            if self.twin.mesh is not None:
                self.twin.mesh.register(self.ip, self.pod)
        self.status[name] = _running(container, restarts, ready=name not in ("kserve-container", "queue-proxy"))

    def _probe_path(self, container: dict) -> str:
        model = next((a.split("=", 1)[1] for a in container.get("args") or [] if a.startswith("--model_name=")),
                     None)
        return f"/v1/models/{model}" if model else "/v2/health/ready"

    def _probe(self, container: dict, port: int) -> bool:
        if self.in_mesh:        # istio-agent answers the probe for the container, as for a probe Istio rewrote
            return self.twin.netns.http_status(self.ip, 15020, f"/app-health/{container['name']}/readyz",
                                               timeout=2) == 200
        return self.twin.netns.http_status(self.ip, port, self._probe_path(container), timeout=2) == 200

    def _sidecar_env(self) -> dict:
        """What the sidecar stand-in needs: its Pod, its identity and mesh snapshot, the ports to intercept, and
        the probe it answers on :15020 for the model server (ISTIO_KUBE_APP_PROBERS, as the injector writes it)."""
        meta, spec = self.pod["metadata"], self.pod["spec"]
        ports = sorted({p["containerPort"] for c in spec["containers"] if c["name"] != SIDECAR
                        for p in c.get("ports") or []} | {MODEL_PORT})
        probers = {f"/app-health/{c['name']}/readyz": {"httpGet": {"path": self._probe_path(c), "port": MODEL_PORT}}
                   for c in spec["containers"] if c["name"] == "kserve-container"}
        return {"POD_NAME": meta["name"], "POD_NAMESPACE": meta["namespace"], "POD_IP": self.ip,
                "TWIN_POD_LABELS": json.dumps(meta.get("labels") or {}),
                "TWIN_INBOUND_PORTS": ",".join(str(p) for p in ports), "ISTIO_KUBE_APP_PROBERS": json.dumps(probers),
                **mesh.proxy_env(self.twin.admin, self.pod, self.dir, self.twin.workdir)}

    def _termination_message(self, container: dict) -> str:
        """What kubelet puts in a failed container's terminated.message: with terminationMessagePolicy
        FallbackToLogsOnError (KServe sets it on the storage initializer) the end of its log, at most 80 lines and
        2048 bytes; else the termination message file, which nothing here writes."""
        if container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        try:
            lines = (self.dir / "logs" / f"{container['name']}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-80:])[-2048:]

    def stop(self) -> None:
        self.stopped.set()
        stop_processes(list(self.procs.values()))


def _waiting(container: dict, reason: str, message: str | None = None, restarts: int = 0) -> dict:
    state = {"reason": reason}
    if message:
        state["message"] = message
    return {"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": False,
            "started": False, "restartCount": restarts, "state": {"waiting": state}, "lastState": {}}


def _running(container: dict, restarts: int, ready: bool) -> dict:
    return {"name": container["name"], "image": container.get("image", ""),
            "imageID": f"twin://{container.get('image', '')}", "ready": ready, "started": True,
            "restartCount": restarts, "state": {"running": {"startedAt": now_iso()}}, "lastState": {}}


def _terminated(container: dict, restarts: int, code: int, reason: str, message: str = "") -> dict:
    term = {"exitCode": code, "reason": reason, "startedAt": now_iso(), "finishedAt": now_iso()}
    if message:
        term["message"] = message
    return {"name": container["name"], "image": container.get("image", ""),
            "imageID": f"twin://{container.get('image', '')}", "ready": code == 0, "started": False,
            "restartCount": restarts, "state": {"terminated": term}, "lastState": {}}


def _backoff(container: dict, restarts: int, wait: int, meta: dict, code: int, message: str) -> dict:
    out = _waiting(container, "CrashLoopBackOff",
                   f"back-off {wait}s restarting failed container={container['name']} "
                   f"pod={meta['name']}_{meta['namespace']}({meta['uid']})", restarts)
    last = {"exitCode": code, "reason": "Error", "startedAt": now_iso(), "finishedAt": now_iso()}
    if message:
        last["message"] = message
    out["lastState"] = {"terminated": last}
    return out
