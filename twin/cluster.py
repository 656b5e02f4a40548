"""Twin: a kind-like cluster on a real Kubernetes control plane, with the stack installed as the suite installs it.

    twin = Twin(Profile.load("seed"), faults=["crashloop:kserve/kserve-controller-manager"])
    twin.start()              # control plane, KWOK node, process kubelet, then the stack through installers/
    twin.kubeconfig_path      # context "twin", through the fault proxy (twin.api)
    twin.gateway_url          # the ingress gateway's NodePort on the node address
    twin.stop()               # idempotent; also a context manager and an atexit safety net

What is real and what is simulated is listed by `twin.report.simulation(twin)` (twin/report.py), and said in every sign-off
of a twin run.
"""
from __future__ import annotations

import atexit
import calendar
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable

from stack.profile import Profile
from twin import bootstrap, kwok, snapshots, toolchain
from twin.faults import Fault, FaultSet, parse_faults, write_fault_file

log = logging.getLogger("twin")

NODE_NAME = "twin-control-plane"
CONTROL_PLANE_SECONDS = 90.0      # start of etcd, kube-apiserver, controller-manager, scheduler and KWOK
READY_SECONDS = 60.0              # then the node Ready and the default ServiceAccount
RESTORE_SECONDS = 120.0           # a restored stack's workloads Ready again
NAMESPACE_STUCK_SECONDS = 300.0   # a run's deleted namespace still there after this: a finalizer that never ends
# Each twin holds about 12 inotify instances (kube-apiserver 6 and kube-controller-manager 5 watch their certificate
# files, KServe's controller 1), and the kernel's default allows 128 per user: a few twins at once (the self-tests run
# up to ten) leave a new one's controller failing with "too many open files". kind documents the same limit for its
# nodes and the same remedy (kind docs, known issues: "Pod errors due to too many open files": 512).
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_WANTED = 1024


def _upstream_dir():
    from twin.upstream import upstream_dir
    return upstream_dir()


class TwinError(Exception):
    """The twin cannot start: which part, why, and the remedy."""


def ensure_inotify_instances(path: Path = INOTIFY_INSTANCES, wanted: int = INOTIFY_WANTED) -> str | None:
    """Raise the per-user inotify instance limit to `wanted` where it is lower (the twin runs as root: it creates
    network namespaces). Returns what was done, or why it could not be (then a twin may meet the limit)."""
    try:
        current = int(path.read_text().strip())
    except (OSError, ValueError):
        return None            # not Linux procfs: nothing to say
    if current >= wanted:
        return None
    try:
        path.write_text(f"{wanted}\n")
    except OSError as e:
        return (f"fs.inotify.max_user_instances is {current} and could not be raised ({e}); several twins at once "
                f"may fail with 'too many open files': sysctl -w fs.inotify.max_user_instances={wanted}")
    return f"raised fs.inotify.max_user_instances from {current} to {wanted} (several twins run at once)"


def _require_twin_extras() -> None:
    """The model server and the stand-ins run with this Python: without the twin's extras the Iris pod would
    never serve, so say it now."""
    import importlib.util
    import sys
    missing = [name for name in ("kserve", "sklearn", "kubernetes") if importlib.util.find_spec(name) is None]
    if missing:
        raise TwinError(f"{sys.executable} lacks {', '.join(missing)} (the twin's model server and controllers run "
                        "with it): run the twin with the project's venv, e.g. `make venv-twin` then "
                        "`.venv/bin/python -m twin ...`, or `pip install -r requirements-twin.txt`")


class Twin:
    def __init__(self, profile: Profile | str, faults: Iterable[str | Fault] = (), preinstalled: bool = True,
                 workdir: Path | str | None = None, scenario: str | None = None):
        from twin.scenarios import scenario as find_scenario
        self.profile = Profile.load(str(profile)) if isinstance(profile, (str, Path)) else profile
        self.faults: list[Fault] = parse_faults(list(faults or ()), self.profile)
        # A cluster as someone left it (twin/scenarios.py), applied once after the handover, never undone.
        self.scenario = find_scenario(scenario, self.profile) if scenario else None
        self.fault_set = FaultSet(self.faults, dormant=True)
        # kind's nodes for the profile: its control plane and `kind.workers` workers (twin/bootstrap.py)
        self.node_names = bootstrap.node_names(self.profile.kind.get("workers", 0), NODE_NAME)
        self.preinstalled = preinstalled
        self.context = "twin"
        self._workdir_arg = Path(workdir) if workdir else None
        self.workdir: Path | None = None
        self._own_workdir = False
        self.netns = None
        self.controlplane = None
        self.api = None                   # the fault proxy: url, request_log, faults, server_version
        self._internal = None             # the twin's own way in (no faults, not logged)
        self._gateway = None              # 127.0.0.1 forwarder to the gateway's NodePort
        self.kubelet = None
        self._s3_store = None             # the S3-compatible store the AC-IRIS-S3 check reads the model from
        self._crd_reaper = None           # crd-missing: an informer deleting the CRD whenever it appears
        self._struck: dict[Fault, object] = {}    # active fault -> what its undo needs (twin/strikes.py)
        self._handover_namespaces: set[str] = set()
        self._snapshot_lock = None        # held while this twin installs a snapshot another twin would wait for
        self._exits_seen = 0              # the kubelet's process exits health() has reported
        self.handed_over_mesh_mtls: str | None = None   # the mesh-wide mTLS mode the stack was handed over with
        self.mesh = None                  # the mesh snapshot the twin's proxies read (twin/mesh.py), with Istio
        self.admin = None
        self.install_env: dict[str, str] = {}
        self.install_report = None
        self.restored = False             # started from a snapshot of the same installed stack
        self.start_seconds: float | None = None
        self.start_phases: dict[str, float] = {}   # what the start spent its time on, in order
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False

    # -- properties -------------------------------------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("twin not started")
        return self.workdir / "kubeconfig"

    @property
    def node_ip(self) -> str:
        return self.netns.addresses.node_ip

    @property
    def gateway_url(self) -> str | None:
        """Where the host reaches the ingress gateway's NodePort (as kind's port mapping does): 127.0.0.1."""
        return f"http://127.0.0.1:{self._gateway.port}" if self._gateway else None

    def publish_report(self) -> None:
        """The twin's account of itself (twin/report.py) on its node, where a run that meets it through a kubeconfig
        (`--cluster existing`) reads it: what is simulated, its limitations, faults and scenario."""
        from stack.record import SIMULATION_ANNOTATION, simulation_annotation
        from twin.report import simulation
        self.admin.patch("v1", "Node", NODE_NAME, None, {"metadata": {"annotations": {
            SIMULATION_ANNOTATION: simulation_annotation(simulation(self))}}})

    def close_gateway(self) -> None:
        """The gateway is gone (a scenario uninstalled it): nothing to forward to, and no address to hand over."""
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None

    def _gateway_node_port(self) -> int | None:
        gateway = self.profile.gateway
        if not gateway:
            return None
        for _, svc in self.profile.inventory("services"):
            if (svc["namespace"], svc["name"]) == (gateway["namespace"], gateway["name"]):
                port = next((p for p in svc.get("ports") or [] if p.get("name") == gateway.get("http_port_name",
                                                                                             "http2")), None)
                return (port or {}).get("nodePort")
        return None

    @property
    def url(self) -> str:
        return self.api.url if self.api else ""

    @property
    def faults_file(self) -> Path:
        return self.workdir / "faults"

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> "Twin":
        from twin.catalog import Catalog
        from twin.controlplane import ControlPlane, ControlPlaneError
        from twin.faultproxy import FaultProxy
        from twin.kubelet import ProcessKubelet
        from twin.modelpods import ModelPods
        from twin.netns import NetNamespace, NetnsError
        from twin.standins.runtime import Kube

        with self._lock:
            if self._started:
                raise RuntimeError("a Twin starts once; create a new one")
            self._started = True
        began = time.monotonic()
        mark = self._phase_marker(began)
        try:
            _require_twin_extras()
            said = ensure_inotify_instances()
            if said:
                log.warning("twin: %s", said)
            try:
                binaries = toolchain.binaries()
            except toolchain.ToolchainError as e:
                raise TwinError(str(e)) from None
            if self._workdir_arg is not None:
                self.workdir = self._workdir_arg
                self.workdir.mkdir(parents=True, exist_ok=True)
            else:
                self.workdir = Path(tempfile.mkdtemp(prefix="twin-"))
                self._own_workdir = True
            _live.add(self)
            self._write_faults()
            try:
                self.netns = NetNamespace().create()
            except NetnsError as e:
                raise TwinError(str(e)) from None
            mark("network namespace")
            snapshot = self._snapshot_dir(binaries)
            if snapshot is not None and not snapshots.exists(snapshot):   # one twin installs it, the others wait
                self._snapshot_lock = snapshots.CreationLock(snapshot)
                if not self._snapshot_lock.acquire(f"the {self.profile.name} stack"):
                    self._snapshot_lock = None
            self.restored = snapshot is not None and snapshots.exists(snapshot)
            if self.restored:        # the same stack, installed before by the same code: start from its state
                self._release_snapshot_lock()
                snapshots.restore(snapshot, self.workdir)
            mark("snapshot restored" if self.restored else "snapshot looked up")
            self.controlplane = ControlPlane(self.workdir, self.netns, binaries, kwok.config(self.workdir / "kwok.yaml"),
                                             NODE_NAME)
            try:
                self.controlplane.start(time.monotonic() + CONTROL_PLANE_SECONDS)
            except ControlPlaneError as e:
                raise TwinError(f"the twin's control plane did not start: {e}") from None
            mark("control plane")
            cp = self.controlplane
            # The host reaches the twin only through listeners on 127.0.0.1 (twin/netns.py): the suite's front door
            # with the API faults, and a clean one for the twin's own clients (its kubelet, its waits).
            from twin.controlplane import ADMIN_USER, write_kubeconfig
            proxy_args = (cp.node_ip, 6443, str(cp.ca_file), str(cp.pki_dir / "apiserver.crt"),
                          str(cp.pki_dir / "apiserver.key"), self.netns.create_connection)
            self.api = FaultProxy(*proxy_args).start()
            self.api.server_version = cp.version
            self._internal = FaultProxy(*proxy_args).start()
            write_kubeconfig(self.kubeconfig_path, self.api.url, cp.ca_file, context=self.context, user=ADMIN_USER,
                             token=cp.admin_token)
            internal = write_kubeconfig(self.workdir / "internal.kubeconfig", self._internal.url, cp.ca_file,
                                        context=self.context, user=ADMIN_USER, token=cp.admin_token)
            self.admin = Kube(str(internal))
            if not self.restored:
                self._bootstrap(binaries)
            restarting = self._mark_restored_processes_not_ready() if self.restored else []
            cp.start_kwok()
            catalog = Catalog(self.profile, binaries, self.profile.path, proxy_node=NODE_NAME)
            self.kubelet = ProcessKubelet(admin=self.admin, node_names=self.node_names, netns=self.netns,
                                          workdir=self.workdir, catalog=catalog, api_url=cp.url,
                                          ca_file=cp.ca_file, faults_file=self.faults_file,
                                          model_pods=ModelPods(self))
            self.kubelet.start()
            mark("KWOK and the kubelet")
            if self.profile.has("kserve"):
                self._start_s3_store(self.kubelet.model_pods.store)
                mark("S3 store")
            port = self._gateway_node_port()
            if port:
                from twin.forwarder import Forwarder
                self._gateway = Forwarder((cp.node_ip, port), connect=self.netns.create_connection).start()
            self._wait_cluster_ready(time.monotonic() + READY_SECONDS)
            self.install_env = self._install_env()
            mark("node Ready")
            if self.preinstalled:
                if self.restored:
                    self._wait_restored(restarting, time.monotonic() + RESTORE_SECONDS)
                    mark("stack Ready again")
                else:
                    self._install_stack()
                    self._secure_the_mesh()
                    mark("stack installed")
                    if snapshot is not None:
                        self._save_snapshot(snapshot)
                        self._release_snapshot_lock()
                        mark("snapshot saved")
                if self.profile.has("istio"):
                    from twin.mesh import MeshConfig
                    self.mesh = MeshConfig(self.admin, self.workdir).start()
                self.handed_over_mesh_mtls = self.mesh_mtls_mode()
                self._exits_seen = len(self.kubelet.failures)
                self._handover_namespaces = {n["metadata"]["name"] for n in self.admin.list("v1", "Namespace")[0]}
                self.strike()
                mark("handed over")
                if self.scenario is not None:
                    self.scenario.apply(self)
                    mark(f"scenario {self.scenario.name}")
            self.publish_report()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info("twin %s started in %.1fs (%s): api %s, gateway %s", self.profile.name, self.start_seconds,
                 ", ".join(f"{k} {v:.1f}s" for k, v in self.start_phases.items()), self.url, self.gateway_url)
        return self

    def _phase_marker(self, began: float):
        """mark(name): the seconds since the previous mark (or `began`) go to start_phases[name]."""
        self.start_phases = {}
        last = [began]

        def mark(name: str) -> None:
            now = time.monotonic()
            self.start_phases[name] = round(now - last[0], 2)
            last[0] = now
        return mark

    def _start_s3_store(self, objects) -> None:
        """The S3 store (twin/s3store.py) with the Iris model, and beside it the wrong one (predict-wrong)."""
        from twin.objectstore import IRIS_URI
        from twin.s3store import S3Store, S3StoreError
        self._s3_store = S3Store(self.netns, self.controlplane.node_ip, objects.path_for(IRIS_URI) / "model.joblib",
                                 objects.path_for(IRIS_URI, wrong=True) / "model.joblib", self.workdir / "s3")
        try:
            self._s3_store.start()
        except S3StoreError as e:
            raise TwinError(str(e)) from None

    @property
    def s3_settings(self):
        """What the twin hands over about its S3 store: the store's settings, as the active faults make a user get
        them wrong (s3-*), or pointing at the wrong model (predict-wrong)."""
        if self._s3_store is None or self._s3_store.settings is None:
            return None
        from twin.s3store import wrong
        settings = self._s3_store.settings
        for fault in self.fault_set:
            settings = wrong(settings, fault.kind)
        return settings

    def handoff(self):
        """The cluster as the suite's twin provider hands it to a run (stack/record.py's ClusterHandoff)."""
        from stack.record import ClusterHandoff
        from twin.report import simulation
        return ClusterHandoff(provider="twin", kubeconfig=str(self.kubeconfig_path), context=self.context,
                              simulated=True, ingress_url=self.gateway_url,
                              server_version=self.api.server_version.get("gitVersion"),
                              node_image="(simulated: KWOK)", install_env=dict(self.install_env),
                              s3=self.s3_settings, simulation=simulation(self))

    # -- snapshots --------------------------------------------------------------------------------------------------

    def _snapshot_dir(self, binaries: dict) -> Path | None:
        """Where a snapshot of this profile's installed stack lives (twin/snapshots.py). None when no snapshot
        applies: a bare twin, or KSTACK_TWIN_SNAPSHOTS=0 (faults strike after the install, so a faulty twin starts
        from the same one)."""
        if not self.preinstalled or os.environ.get("KSTACK_TWIN_SNAPSHOTS", "1") == "0":
            return None
        return snapshots.directory(self.profile, binaries, _upstream_dir(),
                                   toolchain.cache_root().parent / "twin-snapshots")

    def _save_snapshot(self, target: Path) -> None:
        """Keep the installed state for later twins of the same profile (etcd is stopped for the copy)."""
        def write(tmp: Path) -> None:
            self.controlplane.snapshot(tmp)
            self._wait_cluster_ready(time.monotonic() + READY_SECONDS)   # etcd is back
        snapshots.save(target, write)

    def _release_snapshot_lock(self) -> None:
        if self._snapshot_lock is not None:
            self._snapshot_lock.release()
            self._snapshot_lock = None

    def _mark_restored_processes_not_ready(self) -> list[tuple[str, str]]:
        """A snapshot's Pods say what they said when it was taken (Ready), but no process runs for them yet: as
        after a node reboot, each container the kubelet runs a process for is not ready until that process serves
        again. Written before the kubelet starts, so any Ready seen afterwards is the kubelet's (else the first
        checks of a run pass on readiness that nothing backs, then fail against the webhooks still starting)."""
        from twin.kubelet import mark_not_ready
        pods, _ = self.admin.list("v1", "Pod")
        marked = []
        for pod in pods:
            if pod["spec"].get("nodeName") not in self.node_names:
                continue
            if (pod["metadata"].get("annotations") or {}).get(kwok.KUBELET_ANNOTATION) == "process":
                mark_not_ready(self.admin, pod)
                marked.append((pod["metadata"]["namespace"], pod["metadata"]["name"]))
        log.info("twin: restored from a snapshot; %d Pods wait for their processes", len(marked))
        return marked

    def _wait_restored(self, restarting: list[tuple[str, str]], deadline: float) -> None:
        """Every restarted process serving again (its Pod Ready, written by the kubelet), then every workload of
        the stack Ready."""
        from twin.standins.runtime import is_true
        from twin.waits import wait_object
        for namespace, name in restarting:
            wait_object(self.admin, "v1", "Pod", name, namespace,
                        lambda o: o is None or is_true(o, "Ready"),
                        deadline - time.monotonic(), f"pod {namespace}/{name} Ready after the restore")
        for _, item in self.profile.inventory("deployments"):
            self.wait_deployment_ready(item["namespace"], item["name"], deadline - time.monotonic())

    def wait_deployment_ready(self, namespace: str, name: str, timeout: float, generation: int = 0) -> None:
        """Its rollout done (`kubectl rollout status`): the current generation observed (at least `generation`),
        every replica updated and Ready, and no other Pod left of an older one."""
        from twin.waits import wait_object

        def done(d: dict | None) -> bool:
            st, want = (d or {}).get("status") or {}, int(((d or {}).get("spec") or {}).get("replicas", 1))
            current = max(generation, int(((d or {}).get("metadata") or {}).get("generation") or 0))
            return d is not None and int(st.get("observedGeneration") or 0) >= current and \
                int(st.get("updatedReplicas") or 0) == want and int(st.get("readyReplicas") or 0) == want and \
                int(st.get("replicas") or 0) == want
        wait_object(self.admin, "apps/v1", "Deployment", name, namespace, done, timeout,
                    f"deployment {namespace}/{name} Ready")

    def _bootstrap(self, binaries: dict) -> None:
        """KWOK's Stage CRD and lifecycle Stages, the node, and what kind puts in kube-system."""
        from twin.kubelet import MODEL_POD_LABEL
        crd = kwok.stage_crd(binaries["kwok/crds"])
        self.admin.create(crd)
        self._wait_established(crd["metadata"]["name"])
        for stage in kwok.lifecycle_stages(binaries["kwok/stages"], MODEL_POD_LABEL):
            self.admin.create(stage)
        version = self.controlplane.version.get("gitVersion", "")
        workers = len(self.node_names) > 1
        self.admin.create(bootstrap.node(NODE_NAME, version, tainted=workers))
        for name in self.node_names[1:]:
            self.admin.create(bootstrap.node(name, version, role="worker"))
        for obj in bootstrap.kind_objects(version):
            self.admin.apply(obj, "kind")

    def _wait_established(self, name: str, timeout: float = 30.0) -> None:
        from twin.waits import wait_object
        wait_object(self.admin, "apiextensions.k8s.io/v1", "CustomResourceDefinition", name, None,
                    lambda o: any(c.get("type") == "Established" and c.get("status") == "True"
                                  for c in (o or {}).get("status", {}).get("conditions") or []),
                    timeout, f"CRD {name} Established")

    def _wait_cluster_ready(self, deadline: float) -> None:
        from twin.waits import wait_object
        for name in self.node_names:
            wait_object(self.admin, "v1", "Node", name, None,
                        lambda o: any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in (o or {}).get("status", {}).get("conditions") or []),
                        deadline - time.monotonic(), f"node {name} Ready")
        # kube-controller-manager's serviceaccount controller creates it: pods of `default` can be created after.
        wait_object(self.admin, "v1", "ServiceAccount", "default", "default", lambda o: o is not None,
                    deadline - time.monotonic(), "ServiceAccount default/default")

    def _install_env(self) -> dict[str, str]:
        from twin.helm_stub import write_helm_shim
        from twin.manifest_mirror import write_mirror
        shim_dir = write_helm_shim(self.workdir / "bin").parent
        return {"PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "KSTACK_MANIFEST_MIRROR": write_mirror(self.profile, self.workdir / "mirror"),
                "KSTACK_TWIN_PROFILE": str(self.profile.path),
                "KSTACK_TWIN_FAULTS": str(self.faults_file)}

    def _install_stack(self) -> None:
        """The stack, installed by the suite's own installer layer (helm stand-in, manifest mirror)."""
        from installers.context import InstallContext
        from installers.plan import Plan
        from stack.kube import Kube as SuiteKube
        env = dict(os.environ, **self.install_env)
        ctx = InstallContext(kube=SuiteKube(self.kubeconfig_path, self.context), profile=self.profile, mode="auto",
                             env=env, progress=lambda m: log.info("%s", m))
        try:
            self.install_report = Plan(ctx).install()
        except Exception as e:  # noqa: BLE001 - any install failure of the twin's own stack is one TwinError
            raise TwinError(f"the twin could not install the {self.profile.name} stack: {e}") from None

    # -- faults ---------------------------------------------------------------------------------------------------
    # How each kind strikes, is undone and is checked: twin/strikes.py. The faults file is written before a strike
    # and after an undo, so the stand-ins and model Pods that read it follow the active set.

    def _write_faults(self) -> None:
        write_fault_file(self.faults_file, self.fault_set)

    def strike(self) -> None:
        """Runtime faults hit the running stack, as they would a verified one; then the API faults turn on."""
        from twin.strikes import STRIKES
        woken = self.fault_set.activate()
        self._write_faults()
        for fault in woken:
            log.info("twin fault %s: striking", fault)
            self._struck[fault] = STRIKES[fault.kind].strike(self, fault)
        for fault in self.fault_set:
            if fault.kind in FaultSet.INSTALL_TIME:
                STRIKES[fault.kind].strike(self, fault)

    def set_faults(self, specs: Iterable[str | Fault]) -> None:
        """The faults `specs`, and no others, on this running twin: the active ones undone first, then these struck
        (a FaultSpecError for a bad spec, before anything changes)."""
        faults = parse_faults(list(specs or ()), self.profile)
        self.clear_faults()
        self.faults = faults
        self.fault_set = FaultSet(faults, dormant=True)
        self.strike()
        self.publish_report()

    def clear_faults(self) -> None:
        """Every active fault undone, the last struck first, as someone fixing the cluster would; the stack is then
        as the twin handed it over (`leftovers()` says what is not)."""
        from twin.strikes import STRIKES
        active = list(self.fault_set)
        self.faults, self.fault_set = [], FaultSet([])
        self._write_faults()
        for fault in reversed(active):
            log.info("twin fault %s: undoing", fault)
            STRIKES[fault.kind].undo(self, fault, self._struck.pop(fault, None))
        if active:
            self.publish_report()

    def leftovers(self) -> list[str]:
        """What a fault left in the twin: nothing, once `clear_faults()` has undone them all."""
        from twin.strikes import leftovers
        return leftovers(self)

    def health(self, timeout: float = 120.0) -> list[str]:
        """Whether this twin can serve another run as it was handed over: every namespace a run created deleted and
        without a Pod (the namespace controller may still be removing the rest: a new run uses namespaces of its
        own), every workload of the profile Ready, no process of the stack exited, nothing left of a fault. Waits up
        to `timeout` for the first two; returns what is not so (empty: healthy)."""
        from twin.waits import TwinWaitTimeout
        deadline = time.monotonic() + timeout
        left = self._run_namespaces_left()
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self._run_namespaces_left()
        problems = list(left)
        for _, item in self.profile.inventory("deployments"):
            try:
                self.wait_deployment_ready(item["namespace"], item["name"], max(1.0, deadline - time.monotonic()))
            except TwinWaitTimeout as e:
                problems.append(str(e))
        # A process of the stack that exited by itself since the last look (a controller that lost its Lease):
        # the kubelet restarts it, but the next run would find its Pod restarting.
        exited, self._exits_seen = self.kubelet.failures[self._exits_seen:], len(self.kubelet.failures)
        return problems + exited + self.leftovers()

    def _run_namespaces_left(self) -> list[str]:
        """The namespaces created after the handover that are not deleted yet, or still hold Pods."""
        out = []
        for ns in self.admin.list("v1", "Namespace")[0]:
            name = ns["metadata"]["name"]
            if name in self._handover_namespaces:
                continue
            deleted = ns["metadata"].get("deletionTimestamp")
            if not deleted:
                out.append(f"namespace {name} was created after the handover and is not deleted")
            elif self.admin.list("v1", "Pod", name)[0]:
                out.append(f"namespace {name} is terminating with Pods left")
            elif time.time() - calendar.timegm(time.strptime(deleted, "%Y-%m-%dT%H:%M:%SZ")) > NAMESPACE_STUCK_SECONDS:
                out.append(f"namespace {name} has been terminating since {deleted}")
        return out

    def start_crd_reaper(self) -> None:
        """crd-missing: an informer deleting the fault's CRDs now and whenever an install creates them again."""
        if self._crd_reaper is None:
            from twin.standins.runtime import Informer
            self._crd_reaper = Informer(self.admin, "apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                        self._reap_crd).start()

    def stop_crd_reaper(self) -> None:
        if self._crd_reaper is not None:
            self._crd_reaper.stop()
            self._crd_reaper = None

    def crd_reaper_running(self) -> bool:
        return self._crd_reaper is not None

    def _reap_crd(self, event_type: str, crd: dict) -> None:
        """crd-missing: the CRD is deleted now and whenever an install creates it again, as on a cluster where
        someone removed it by hand and something keeps removing it (an install of the suite fails on it)."""
        name = crd["metadata"]["name"]
        if event_type != "DELETED" and name in self.fault_set.targets("crd-missing") \
                and not crd["metadata"].get("deletionTimestamp"):
            log.info("twin fault crd-missing: deleting CRD %s", name)
            self.admin.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)

    def mesh_mtls_mode(self) -> str | None:
        """The mode of the mesh-wide PeerAuthentication (istio-system/default); None where there is none."""
        from twin.mesh import PA_KIND, ROOT_NAMESPACE, SECURITY_API
        if not self.profile.has("istio"):
            return None
        policy = self.admin.get(SECURITY_API, PA_KIND, "default", ROOT_NAMESPACE)
        return ((policy or {}).get("spec") or {}).get("mtls", {}).get("mode") if policy else None

    def set_mesh_mtls(self, mode: str | None, manager: str) -> None:
        """The mesh-wide PeerAuthentication (istio-system/default) with `mode`; None deletes it."""
        from twin.mesh import PA_KIND, ROOT_NAMESPACE, SECURITY_API
        if mode is None:
            self.admin.delete(SECURITY_API, PA_KIND, "default", ROOT_NAMESPACE)
            return
        self.admin.apply({"apiVersion": SECURITY_API, "kind": PA_KIND,
                          "metadata": {"name": "default", "namespace": ROOT_NAMESPACE},
                          "spec": {"mtls": {"mode": mode}}}, manager)

    def _secure_the_mesh(self) -> None:
        """For a profile that requires the mesh's security (STRICT mTLS, or an authorization policy to prove),
        the twin sets the cluster up as Istio's and Knative's docs say for it: the knative-serving namespace
        labelled for sidecar injection and the activator restarted into the mesh (it proxies to the models'
        sidecars, which under STRICT take mTLS only), and, where STRICT mTLS is required, STRICT for the mesh."""
        wants_mtls = self.profile.strict_mtls
        if not self.profile.has("istio") or not (wants_mtls or self.profile.authorization_rules):
            return
        if self.profile.has("knative"):
            self.admin.patch("v1", "Namespace", "knative-serving", None,
                             {"metadata": {"labels": {"istio-injection": "enabled"}}})
            self._restart_deployment("knative-serving", "activator")
        if wants_mtls:
            self.set_mesh_mtls("STRICT", "twin")

    def _restart_deployment(self, namespace: str, name: str, timeout: float = 120.0) -> None:
        """`kubectl rollout restart`, then its rollout status: the new Pods Ready, the old ones gone."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        deployment = self.admin.patch("apps/v1", "Deployment", name, namespace, {"spec": {"template": {"metadata": {
            "annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}})
        self.wait_deployment_ready(namespace, name, timeout, generation=deployment["metadata"]["generation"])

    # -- stop -------------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for part, what in ((self._crd_reaper, "crd-missing reaper"), (self.kubelet, "kubelet"), (self.mesh, "mesh"),
                           (self._s3_store, "S3 store"),
                           (self._gateway, "gateway forwarder"), (self.api, "fault proxy"),
                           (self._internal, "internal proxy"), (self.controlplane, "control plane"),
                           (self.netns, "network namespace")):
            if part is None:
                continue
            try:
                part.stop() if what != "network namespace" else part.close()
            except Exception:  # noqa: BLE001
                log.exception("twin: the %s did not stop cleanly", what)
        self._release_snapshot_lock()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _live.discard(self)

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
