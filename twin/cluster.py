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
from stack.readiness import condition_true
from twin import bootstrap, kwok, toolchain
from twin.faults import Fault, FaultSet, parse_faults, write_fault_file

log = logging.getLogger("twin")

NODE_NAME = "twin-control-plane"
CONTROL_PLANE_SECONDS = 90.0      # start of etcd, kube-apiserver, controller-manager, scheduler and KWOK
READY_SECONDS = 60.0              # then the node Ready and the default ServiceAccount
RESTORE_SECONDS = 120.0           # a restored stack's workloads Ready again
SNAPSHOT_FORMAT = "twin-snapshot/1"
SNAPSHOTS_KEPT = 3                # per profile: each change of the twin's code keys a new one (~80 MB each)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _upstream_dir():
    from twin.upstream import upstream_dir
    return upstream_dir()


def _prune_snapshots(current: Path, keep: int) -> None:
    """Only the newest `keep` snapshots of a profile stay (the current one always): older code's are never read
    again by this checkout."""
    profile = current.name.rsplit("-", 1)[0]
    others = sorted((p for p in current.parent.glob(f"{profile}-*")
                     if p.is_dir() and p != current and p.name.rsplit("-", 1)[0] == profile),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[keep - 1:]:
        shutil.rmtree(old, ignore_errors=True)


class TwinError(Exception):
    """The twin cannot start: which part, why, and the remedy."""


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
                 workdir: Path | str | None = None):
        self.profile = Profile.load(str(profile)) if isinstance(profile, (str, Path)) else profile
        self.faults: list[Fault] = parse_faults(list(faults or ()), self.profile)
        self.fault_set = FaultSet(self.faults, dormant=True)
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
        self.s3_settings = None           # what the twin hands over about it (an s3-* fault makes it wrong)
        self._crd_reaper = None           # crd-missing: an informer deleting the CRD whenever it appears
        self.mesh = None                  # the mesh snapshot the twin's proxies read (twin/mesh.py), with Istio
        self.admin = None
        self.install_env: dict[str, str] = {}
        self.install_report = None
        self.restored = False             # started from a snapshot of the same installed stack
        self.start_seconds: float | None = None
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
        try:
            _require_twin_extras()
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
            snapshot = self._snapshot_dir(binaries)
            self.restored = snapshot is not None and (snapshot / "etcd").is_dir()
            if self.restored:        # the same stack, installed before by the same code: start from its state
                shutil.copytree(snapshot / "etcd", self.workdir / "etcd")
                shutil.copytree(snapshot / "pki", self.workdir / "pki")
            self.controlplane = ControlPlane(self.workdir, self.netns, binaries, kwok.config(self.workdir / "kwok.yaml"),
                                             NODE_NAME)
            try:
                self.controlplane.start(time.monotonic() + CONTROL_PLANE_SECONDS)
            except ControlPlaneError as e:
                raise TwinError(f"the twin's control plane did not start: {e}") from None
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
            catalog = Catalog(self.profile, binaries, self.profile.path)
            self.kubelet = ProcessKubelet(admin=self.admin, node_name=NODE_NAME, netns=self.netns,
                                          workdir=self.workdir, catalog=catalog, api_url=cp.url,
                                          ca_file=cp.ca_file, faults_file=self.faults_file,
                                          model_pods=ModelPods(self))
            self.kubelet.start()
            if self.profile.has("kserve"):
                self._start_s3_store(self.kubelet.model_pods.store)
            port = self._gateway_node_port()
            if port:
                from twin.forwarder import Forwarder
                self._gateway = Forwarder((cp.node_ip, port), connect=self.netns.create_connection).start()
            self._wait_cluster_ready(time.monotonic() + READY_SECONDS)
            self.install_env = self._install_env()
            if self.preinstalled:
                if self.restored:
                    self._wait_restored(restarting, time.monotonic() + RESTORE_SECONDS)
                else:
                    self._install_stack()
                    self._secure_the_mesh()
                    if snapshot is not None:
                        self._save_snapshot(snapshot)
                if self.profile.has("istio"):
                    from twin.mesh import MeshConfig
                    self.mesh = MeshConfig(self.admin, self.workdir).start()
                self.strike()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info("twin %s started in %.1fs: api %s, gateway %s", self.profile.name, self.start_seconds, self.url,
                 self.gateway_url)
        return self

    def _start_s3_store(self, objects) -> None:
        """The S3 store (twin/s3store.py) with the Iris model (the wrong one under predict-wrong), and the settings
        handed over: as the store gave them, or as an s3-* fault makes a user get them wrong."""
        from twin.objectstore import IRIS_URI
        from twin.s3store import S3Store, S3StoreError, wrong
        predict_wrong = any(f.kind == "predict-wrong" for f in self.faults)
        model = objects.path_for(IRIS_URI, wrong=predict_wrong) / "model.joblib"
        self._s3_store = S3Store(self.netns, self.controlplane.node_ip, model, self.workdir / "s3")
        try:
            settings = self._s3_store.start()
        except S3StoreError as e:
            raise TwinError(str(e)) from None
        for fault in self.faults:
            settings = wrong(settings, fault.kind)
        self.s3_settings = settings

    # -- snapshots --------------------------------------------------------------------------------------------------

    def _snapshot_dir(self, binaries: dict) -> Path | None:
        """Where a snapshot of this profile's installed stack lives, keyed by everything that shapes it: the
        profile, the twin's and the installers' code, the binaries. None when no snapshot applies: a bare twin,
        or KSTACK_TWIN_SNAPSHOTS=0 (faults strike after the install, so a faulty twin starts from the same one)."""
        if not self.preinstalled or os.environ.get("KSTACK_TWIN_SNAPSHOTS", "1") == "0":
            return None
        import hashlib
        root = Path(__file__).resolve().parent.parent
        digest = hashlib.sha256(SNAPSHOT_FORMAT.encode())
        digest.update(self.profile.path.read_bytes())
        for path in sorted([*root.glob("twin/**/*.py"), *root.glob("twin/*.yaml"), *root.glob("installers/*.py"),
                            *root.glob("stack/*.py")]):
            digest.update(path.read_bytes())
        for name, path in sorted(binaries.items()):
            digest.update(f"{name}={path}".encode())
        upstream = _upstream_dir()
        digest.update(str(upstream).encode())
        return toolchain.cache_root().parent / "twin-snapshots" / f"{self.profile.name}-{digest.hexdigest()[:16]}"

    def _save_snapshot(self, target: Path) -> None:
        """Keep the installed state for later twins of the same profile (written once, renamed into place)."""
        if target.exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=_ensure_dir(target.parent)))
        try:
            self.controlplane.snapshot(tmp)
            self._wait_cluster_ready(time.monotonic() + READY_SECONDS)   # etcd is back
            try:
                tmp.rename(target)
                log.info("twin: saved a snapshot of the installed %s stack in %s", self.profile.name, target)
            except OSError:          # another twin saved the same snapshot meanwhile
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune_snapshots(target, keep=SNAPSHOTS_KEPT)

    def _mark_restored_processes_not_ready(self) -> list[tuple[str, str]]:
        """A snapshot's Pods say what they said when it was taken (Ready), but no process runs for them yet: as
        after a node reboot, each container the kubelet runs a process for is not ready until that process serves
        again. Written before the kubelet starts, so any Ready seen afterwards is the kubelet's (else the first
        checks of a run pass on readiness that nothing backs, then fail against the webhooks still starting)."""
        from twin.kubelet import mark_not_ready
        pods, _ = self.admin.list("v1", "Pod", field_selector=f"spec.nodeName={NODE_NAME}")
        marked = []
        for pod in pods:
            if (pod["metadata"].get("annotations") or {}).get(kwok.KUBELET_ANNOTATION) == "process":
                mark_not_ready(self.admin, pod)
                marked.append((pod["metadata"]["namespace"], pod["metadata"]["name"]))
        log.info("twin: restored from a snapshot; %d Pods wait for their processes", len(marked))
        return marked

    def _wait_restored(self, restarting: list[tuple[str, str]], deadline: float) -> None:
        """Every restarted process serving again (its Pod Ready, written by the kubelet), then every workload of
        the stack Ready."""
        from twin.waits import wait_object
        for namespace, name in restarting:
            wait_object(self.admin, "v1", "Pod", name, namespace,
                        lambda o: o is None or condition_true(o, "Ready"),
                        deadline - time.monotonic(), f"pod {namespace}/{name} Ready after the restore")
        for _, item in self.profile.inventory("deployments"):
            wait_object(self.admin, "apps/v1", "Deployment", item["name"], item["namespace"],
                        lambda o: bool(o) and int((o.get("status") or {}).get("readyReplicas") or 0) >=
                        int((o.get("spec") or {}).get("replicas", 1)),
                        deadline - time.monotonic(), f"deployment {item['namespace']}/{item['name']} Ready")

    def _bootstrap(self, binaries: dict) -> None:
        """KWOK's Stage CRD and lifecycle Stages, the node, and what kind puts in kube-system."""
        from twin.kubelet import MODEL_POD_LABEL
        crd = kwok.stage_crd(binaries["kwok/crds"])
        self.admin.create(crd)
        self._wait_established(crd["metadata"]["name"])
        for stage in kwok.lifecycle_stages(binaries["kwok/stages"], MODEL_POD_LABEL):
            self.admin.create(stage)
        version = self.controlplane.version.get("gitVersion", "")
        self.admin.create(bootstrap.node(NODE_NAME, version))
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
        wait_object(self.admin, "v1", "Node", NODE_NAME, None,
                    lambda o: any(c.get("type") == "Ready" and c.get("status") == "True"
                                  for c in (o or {}).get("status", {}).get("conditions") or []),
                    deadline - time.monotonic(), f"node {NODE_NAME} Ready")
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
        from installers.base import InstallContext
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

    def _write_faults(self) -> None:
        write_fault_file(self.faults_file, self.fault_set)

    def strike(self) -> None:
        """Runtime faults hit the running stack, as they would a verified one; then the API faults turn on."""
        woken = self.fault_set.activate()
        self._write_faults()
        for fault in woken:
            if fault.kind in ("crashloop", "imagepull"):
                self._strike_pods(fault)
            elif fault.kind == "cabundle-invalid":
                self._corrupt_ca_bundle(fault.target)
            elif fault.kind == "default-sa-reads-secrets":
                self._let_every_service_account_read_secrets()
            elif fault.kind == "cert-expiring":
                self._expire_knative_webhook_ca()
            elif fault.kind == "mtls-permissive":
                self._relax_mtls()
        if self.fault_set.targets("crd-missing") and self._crd_reaper is None:
            from twin.standins.runtime import Informer
            self._crd_reaper = Informer(self.admin, "apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                        self._reap_crd).start()
        self.api.faults.flaky_rate = self.fault_set.rate()
        self.api.faults.watch_drop = self.fault_set.has("watch-drop")

    def _reap_crd(self, event_type: str, crd: dict) -> None:
        """crd-missing: the CRD is deleted now and whenever an install creates it again, as on a cluster where
        someone removed it by hand and something keeps removing it (an install of the suite fails on it)."""
        name = crd["metadata"]["name"]
        if event_type != "DELETED" and name in self.fault_set.targets("crd-missing") \
                and not crd["metadata"].get("deletionTimestamp"):
            log.info("twin fault crd-missing: deleting CRD %s", name)
            self.admin.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)

    def _corrupt_ca_bundle(self, name: str) -> None:
        """Another CA in the configuration's caBundle (its keeper, cainjector or the component, leaves it there
        while the fault is on: twin/standins/selfca.py, certmanager.py)."""
        from twin import pki
        wrong = pki.b64(pki.stranger_ca().cert_pem)
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            obj = self.admin.get("admissionregistration.k8s.io/v1", kind, name)
            if obj is None:
                continue
            for webhook in obj.get("webhooks") or []:
                webhook.setdefault("clientConfig", {})["caBundle"] = wrong
            self.admin.patch(obj["apiVersion"], kind, name, None, {"webhooks": obj["webhooks"]})

    def _let_every_service_account_read_secrets(self) -> None:
        """The leak AC-RBAC-DEFAULT-SA looks for: a cluster-wide binding of a Secret reader to every ServiceAccount
        (the real RBAC authorizer then answers the suite's SubjectAccessReviews with it)."""
        rbac = "rbac.authorization.k8s.io/v1"
        name = "twin-fault-every-serviceaccount-reads-secrets"
        self.admin.create({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name},
                           "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]})
        self.admin.create({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": name},
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                           "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                         "name": "system:serviceaccounts"}]})

    def _relax_mtls(self) -> None:
        """mtls-permissive: the mesh-wide PeerAuthentication turned to PERMISSIVE, as someone relaxing it for a
        migration and forgetting it leaves it: the sidecars then take plaintext from outside the mesh."""
        self._set_mesh_mtls("PERMISSIVE", "twin-fault")

    def _set_mesh_mtls(self, mode: str, manager: str) -> None:
        """The mesh-wide PeerAuthentication (istio-system/default) with `mode`."""
        from stack.mesh import PA_KIND, ROOT_NAMESPACE, SECURITY_API
        self.admin.apply({"apiVersion": SECURITY_API, "kind": PA_KIND,
                          "metadata": {"name": "default", "namespace": ROOT_NAMESPACE},
                          "spec": {"mtls": {"mode": mode}}}, manager)

    def _secure_the_mesh(self) -> None:
        """For a profile that requires the mesh's security (AC-MESH-MTLS, or an authorization policy to prove),
        the twin sets the cluster up as Istio's and Knative's docs say for it: the knative-serving namespace
        labelled for sidecar injection and the activator restarted into the mesh (it proxies to the models'
        sidecars, which under STRICT take mTLS only), and, where AC-MESH-MTLS is required, STRICT for the mesh."""
        wants_mtls = "AC-MESH-MTLS" in self.profile.required_criteria
        if not self.profile.has("istio") or not (wants_mtls or self.profile.authorization_rules):
            return
        if self.profile.has("knative"):
            self.admin.patch("v1", "Namespace", "knative-serving", None,
                             {"metadata": {"labels": {"istio-injection": "enabled"}}})
            self._restart_deployment("knative-serving", "activator")
        if wants_mtls:
            self._set_mesh_mtls("STRICT", "twin")

    def _restart_deployment(self, namespace: str, name: str, timeout: float = 120.0) -> None:
        """`kubectl rollout restart`, then its rollout status: the new Pods Ready, the old ones gone."""
        from twin.waits import wait_object
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        deployment = self.admin.patch("apps/v1", "Deployment", name, namespace, {"spec": {"template": {"metadata": {
            "annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}})
        generation = deployment["metadata"]["generation"]

        def rolled_out(d: dict | None) -> bool:
            st, want = (d or {}).get("status") or {}, ((d or {}).get("spec") or {}).get("replicas", 1)
            return st.get("observedGeneration", 0) >= generation and st.get("updatedReplicas", 0) == want and \
                st.get("readyReplicas", 0) == want and st.get("replicas", 0) == want
        wait_object(self.admin, "apps/v1", "Deployment", name, namespace, rolled_out, timeout,
                    f"Deployment {namespace}/{name} restarted into the mesh")

    def _expire_knative_webhook_ca(self) -> None:
        """cert-expiring: Knative's webhook CA is replaced by one that expires in 6 hours and its webhook restarted;
        with the fault on, the stand-in keeps it instead of renewing it (twin/standins/knative_webhook.py). The
        twin hands over once the webhook serves and its caBundle is the short-lived CA, as a cluster whose rotation
        stopped would be found."""
        import datetime

        from twin import pki
        from twin.standins import selfca
        from twin.waits import wait_object
        ns, service = "knative-serving", "webhook"
        ca = selfca.new_ca(f"{service}.{ns}.svc", datetime.timedelta(hours=6))
        self.admin.patch("v1", "Secret", "webhook-certs", ns,
                         {"data": {"ca-cert.pem": pki.b64(ca.cert_pem), "ca-key.pem": pki.b64(ca.key_pem)}})
        for pod in self.admin.list("v1", "Pod", ns, label_selector="app=webhook")[0]:
            self.admin.delete("v1", "Pod", pod["metadata"]["name"], ns)
        bundle = pki.b64(ca.cert_pem)
        wait_object(self.admin, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                    "validation.webhook.serving.knative.dev", None,
                    lambda o: o is not None and all((w.get("clientConfig") or {}).get("caBundle") == bundle
                                                    for w in o.get("webhooks") or []),
                    60.0, "Knative's webhook serving the 6-hour CA")
        wait_object(self.admin, "apps/v1", "Deployment", service, ns,
                    lambda o: o is not None and int((o.get("status") or {}).get("readyReplicas") or 0) >=
                    int((o.get("spec") or {}).get("replicas", 1)), 60.0, f"deployment {ns}/{service} Ready again")

    def _strike_pods(self, fault: Fault) -> None:
        ns, name = fault.namespace, fault.name
        dep = self.admin.get("apps/v1", "Deployment", name, ns)
        if dep is None:
            return
        labels = dep["spec"]["selector"].get("matchLabels") or {}
        containers = [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]]
        stage_name = f"twin-fault-{fault.kind}-{ns}-{name}"
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        if fault.kind == "crashloop":
            self.admin.create(kwok.crashloop_stage(stage_name, labels, containers[0]))
            # KWOK plays its Stages on a Pod's changes: mark the running Pods so the new Stage meets them now.
            for pod in self.admin.list("v1", "Pod", ns, label_selector=selector)[0]:
                self.admin.patch("v1", "Pod", pod["metadata"]["name"], ns,
                                 {"metadata": {"annotations": {kwok.FAULT_LABEL: fault.kind}}})
        else:
            for stage in kwok.imagepull_stages(stage_name, labels, containers[0]):
                self.admin.create(stage)
            # Its Pods are replaced, as after a restart or a reschedule: the new ones cannot pull.
            for pod in self.admin.list("v1", "Pod", ns, label_selector=selector)[0]:
                self.admin.delete("v1", "Pod", pod["metadata"]["name"], ns)
        # The stack is handed over broken, as a verified cluster would be found: the Deployment's status says so
        # before the twin is (a check looking at once must not see the Ready status of the replaced Pods).
        from twin.waits import wait_object
        wait_object(self.admin, "apps/v1", "Deployment", name, ns,
                    lambda o: o is not None and int((o.get("status") or {}).get("readyReplicas") or 0) <
                    int((o.get("spec") or {}).get("replicas", 1)), 60.0,
                    f"deployment {ns}/{name} not Ready after the {fault.kind} fault")

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
