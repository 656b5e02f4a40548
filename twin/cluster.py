"""Twin: the simulated cluster. API server + in-process controllers + ingress gateway (+ model servers per ISVC).

    twin = Twin(Profile.load("seed"), faults=["crashloop:kserve/kserve-controller-manager"])
    twin.start()              # < 5 s
    twin.kubeconfig_path      # context "twin"
    twin.gateway_url          # Host-routed like istio-ingressgateway
    twin.stop()               # idempotent; also a context manager and an atexit safety net
"""
from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable

from stack.profile import Profile
from twin.faults import Fault, FaultSet, parse_faults
from twin.seed import cluster_objects, kubernetes_version, apply_objects, seed

log = logging.getLogger("twin")

SETTLE_IDLE = 0.15      # seconds without controller work that count as "converged"
SETTLE_TIMEOUT = 3.5


def server_version(profile: Profile) -> dict:
    version = kubernetes_version(profile)
    major, minor, _ = version[1:].split(".")
    return {"major": major, "minor": minor, "gitVersion": version,
            "gitCommit": "25b4e43193bcda6c7328a6d147b1fb73a33f1598", "gitTreeState": "clean",
            "buildDate": "2023-06-14T09:47:40Z", "goVersion": "go1.20.5", "compiler": "gc",
            "platform": "linux/amd64"}


class Twin:
    def __init__(self, profile: Profile | str, faults: Iterable[str | Fault] = (), preinstalled: bool = True,
                 workdir: Path | str | None = None):
        self.profile = Profile.load(str(profile)) if isinstance(profile, (str, Path)) else profile
        self.faults: list[Fault] = parse_faults(list(faults or ()), self.profile)
        self.preinstalled = preinstalled
        self.context = "twin"
        self._workdir_arg = Path(workdir) if workdir else None
        self.workdir: Path | None = None
        self._own_workdir = False
        self.api = None
        self.gateway = None
        self.ctx = None
        self.controllers: list = []
        self.start_seconds: float | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._busy = 0
        self._last_event = 0.0
        self._started = False
        self._stopped = False

    # -- properties -------------------------------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("twin not started")
        return self.workdir / "kubeconfig"

    @property
    def gateway_url(self) -> str:
        if self.gateway is None:
            raise RuntimeError("twin not started")
        return self.gateway.url

    @property
    def url(self) -> str:
        return self.api.url if self.api else ""

    @property
    def store(self):
        return self.api.store if self.api else None

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> "Twin":
        from twin.apiserver import ApiServer
        from twin.controllers.base import Context
        from twin.controllers.webhooks import (AdmissionEmulator, CABundleFaultController, CRDMissingFaultController,
                                               SelfServingController)
        from twin.controllers.workloads import WorkloadController
        from twin.gateway import Gateway

        with self._lock:
            if self._started:
                raise RuntimeError("a Twin starts once; create a new one")
            self._started = True
        began = time.monotonic()
        try:
            if self._workdir_arg is not None:
                self.workdir = self._workdir_arg
                self.workdir.mkdir(parents=True, exist_ok=True)
            else:
                self.workdir = Path(tempfile.mkdtemp(prefix="twin-"))
                self._own_workdir = True
            _live.add(self)
            fault_set = FaultSet(self.faults, dormant=self.preinstalled)
            self.api = ApiServer()
            self.api.server_version = server_version(self.profile)
            self.gateway = Gateway()
            ctx = self.ctx = Context(self.api.store, self.profile, fault_set, api=self.api, gateway=self.gateway)
            workloads = WorkloadController(ctx)
            self.controllers = [workloads, SelfServingController(ctx)]
            if fault_set.targets("cabundle-invalid"):
                self.controllers.append(CABundleFaultController(ctx))
            if fault_set.targets("crd-missing"):
                self.controllers.append(CRDMissingFaultController(ctx))
            if self.profile.has("cert-manager"):
                from twin.controllers.cainjector import CAInjectorController
                from twin.controllers.certmanager import CertManagerController
                self.controllers += [CertManagerController(ctx), CAInjectorController(ctx)]
            self.kserve = None
            if self.profile.has("kserve"):
                from twin.controllers.kserve import KServeController
                self.kserve = KServeController(ctx, workloads)
                self.controllers.append(self.kserve)
            ctx.controllers = {c.name: c for c in self.controllers}
            self.workloads = workloads
            self.api.store.subscribe(self._dispatch)
            self.api.add_admission(AdmissionEmulator(ctx))
            self.api.set_service_proxy(self._proxy)
            self.api.set_pod_log_source(workloads.pod_logs)
            self.gateway.start()
            self.api.start()
            self.api.write_kubeconfig(self.kubeconfig_path, context=self.context)
            apply_objects(self.api.store, cluster_objects(self.profile), "kubeadm")
            if self.preinstalled:
                seed(self.api.store, self.profile, fault_set, preinstalled=True)
            self.settle()
            self._strike(fault_set.activate())
            self.api.faults.flaky_rate = fault_set.rate()
            self.api.faults.watch_drop = fault_set.has("watch-drop")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info("twin %s started in %.2fs: api %s, gateway %s", self.profile.name, self.start_seconds,
                 self.api.url, self.gateway.url)
        return self

    def _strike(self, woken) -> None:
        """Runtime faults hit the running stack: re-reconcile the workloads they target."""
        for fault in woken:
            if fault.kind in ("crashloop", "imagepull"):
                ns, name = fault.target.split("/", 1)
                dep = self.api.store.get("apps/v1", "Deployment", name, ns)
                if dep:   # its pods are replaced, as after a restart: the new ones meet the fault
                    selector = dep["spec"]["selector"].get("matchLabels") or {}
                    for pod in self.api.store.list("v1", "Pod", ns, label_selector=selector):
                        self.api.store.delete("v1", "Pod", pod["metadata"]["name"], ns)
                    self.workloads.resync(ns, name)   # under the controllers' lock: no duplicate pod
        if woken:
            self.settle()

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Wait until the controllers have had nothing to do for a moment (True), or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        queue = getattr(self.store, "_dispatch_q", None)  # events committed but not yet dispatched
        with self._cond:
            self._last_event = max(self._last_event, time.monotonic())
            while True:
                now = time.monotonic()
                pending = queue is not None and not queue.empty()
                if not self._busy and not pending and now - self._last_event >= SETTLE_IDLE:
                    return True
                if now >= deadline:
                    return False
                self._cond.wait(min(SETTLE_IDLE, deadline - now))

    def _dispatch(self, event_type: str, obj: dict) -> None:
        ctx = self.ctx
        if ctx is None or ctx.stopped.is_set():
            return
        with self._cond:
            self._busy += 1
        try:
            with ctx.lock:
                for controller in self.controllers:
                    if ctx.stopped.is_set():
                        return
                    try:
                        controller.on_event(event_type, obj)
                    except Exception:  # noqa: BLE001 - one controller's bug must not starve the others
                        log.exception("twin controller %s failed on %s %s %s", controller.name, event_type,
                                      obj.get("kind"), (obj.get("metadata") or {}).get("name"))
        finally:
            with self._cond:
                self._busy -= 1
                self._last_event = time.monotonic()
                self._cond.notify_all()

    def _proxy(self, namespace, service, port, method, path, headers, body):
        if self.kserve is None:
            return None
        return self.kserve.proxy(namespace, service, port, method, path, headers, body)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        ctx = self.ctx
        if ctx is not None:
            ctx.stopped.set()
        if self.api is not None:
            try:
                self.api.store.unsubscribe(self._dispatch)
            except Exception:  # noqa: BLE001
                pass
        for controller in self.controllers:
            try:
                controller.stop()
            except Exception:  # noqa: BLE001
                log.exception("twin controller %s did not stop cleanly", controller.name)
        if self.gateway is not None:
            self.gateway.stop()
        if self.api is not None:
            self.api.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _live.discard(self)

    def model_servers(self) -> list:
        """The running ModelServerProcess objects (for tests and diagnostics)."""
        return list(self.kserve.servers.values()) if getattr(self, "kserve", None) else []

    def __enter__(self) -> "Twin":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Twin({self.profile.name!r}, faults={[str(f) for f in self.faults]}, api={self.url or None})"


# atexit safety net: twins left running are stopped at interpreter exit
_live: "weakref.WeakSet[Twin]" = weakref.WeakSet()


def _stop_all() -> None:
    for twin in list(_live):
        try:
            twin.stop()
        except Exception:  # noqa: BLE001
            pass


atexit.register(_stop_all)
