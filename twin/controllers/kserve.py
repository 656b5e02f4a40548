"""KServe controller stand-in: sklearn InferenceServices served by a REAL kserve model server process.

Serverless (Knative) mode: predictor Deployment `<isvc>-predictor-00001-deployment`, Knative Service and an
ExternalName Service `<isvc>-predictor`, the gateway routes `<isvc>.<ns>.<domain>`; status.url from Knative's
config-domain (cluster-local when it has no domain, as real Knative does). Standard (RawDeployment) mode:
Deployment + ClusterIP Service `<isvc>-predictor`, status.url from inferenceservice-config's domainTemplate, the
API server's service proxy forwards to the model server.
"""
from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from urllib.parse import urlsplit

from twin.controllers.base import Controller, now_iso, owner_ref, set_condition
from twin.controllers.workloads import PodPlan

log = logging.getLogger("twin.controllers.kserve")

API = "serving.kserve.io/v1beta1"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length", "authorization"}
MODEL_SERVER_TIMEOUT = 90.0
QUEUE_PROXY = "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:"


def normalise_mode(mode: str | None) -> str:
    return "Standard" if (mode or "").lower() in ("rawdeployment", "standard", "raw") else "Serverless"


class KServeController(Controller):
    name = "kserve"

    def __init__(self, ctx, workloads):
        super().__init__(ctx)
        self.comp = ctx.profile.components["kserve"]
        probe = self.comp.version_probe
        self.gate = (probe["namespace"], probe["deployment"])
        self.config_ns = probe["namespace"]
        self._gate_open = False
        self.workloads = workloads
        self.servers: dict[tuple, object] = {}   # (ns, isvc) -> ModelServerProcess
        self.state: dict[tuple, dict] = {}       # (ns, isvc) -> {"phase": starting|ready|failed, ...}
        self.proxies: dict[tuple, str] = {}      # (ns, service) -> model server URL
        self.routes: dict[tuple, list] = {}      # (ns, isvc) -> gateway hosts
        workloads.plan_providers.append(self.pod_plan)
        workloads.log_providers.append(self.pod_logs)

    # -- events ---------------------------------------------------------------------------------------------------

    def on_event(self, event_type: str, obj: dict) -> None:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if kind == "Deployment" and key == self.gate:
            was, self._gate_open = self._gate_open, self.ctx.deployment_ready(*self.gate)
            if self._gate_open and not was:
                self.resync_all()
            return
        if kind == "ConfigMap" and key in ((self.config_ns, "inferenceservice-config"),
                                           ("knative-serving", "config-domain")):
            if self._gate_open:
                self.resync_all()
            return
        if kind != "InferenceService" or api != API:
            return
        if event_type == "DELETED":
            self.cleanup(key)
            return
        if not self._gate_open:
            self._gate_open = self.ctx.deployment_ready(*self.gate)
        if self._gate_open:
            self.reconcile(obj)

    def resync_all(self) -> None:
        if not self.ctx.served(API, "InferenceService"):
            return
        for isvc in self.ctx.list(API, "InferenceService"):
            self.reconcile(isvc)

    def stop(self) -> None:
        with self.ctx.lock:
            procs = list(self.servers.values())
            self.servers.clear()
            self.state.clear()
            self.proxies.clear()
        for proc in procs:
            try:
                proc.stop()
            except Exception:  # noqa: BLE001
                pass

    # -- spec -----------------------------------------------------------------------------------------------------

    def _config(self, key: str) -> dict:
        cm = self.ctx.get("v1", "ConfigMap", "inferenceservice-config", self.config_ns) or {}
        try:
            return json.loads((cm.get("data") or {}).get(key) or "{}")
        except ValueError:
            return {}

    def mode_of(self, isvc: dict) -> str:
        annotations = isvc["metadata"].get("annotations") or {}
        return normalise_mode(annotations.get(MODE_ANNOTATION) or self._config("deploy").get("defaultDeploymentMode"))

    @staticmethod
    def predictor(isvc: dict) -> tuple[str | None, dict]:
        """(model format, implementation spec) of the predictor; format None when unsupported."""
        pred = (isvc.get("spec") or {}).get("predictor") or {}
        if isinstance(pred.get("sklearn"), dict):
            return "sklearn", pred["sklearn"]
        if isinstance(pred.get("model"), dict):
            fmt = ((pred["model"].get("modelFormat") or {}).get("name") or "").lower()
            return fmt, pred["model"]
        for k, v in pred.items():
            if isinstance(v, dict) and k not in ("serviceAccountName",):
                return k, v
        return None, {}

    def _domain(self) -> str:
        cm = self.ctx.get("v1", "ConfigMap", "config-domain", "knative-serving") or {}
        for k, v in (cm.get("data") or {}).items():
            if not k.startswith("_") and not (v or "").strip():
                return k
        return "svc.cluster.local"

    def names(self, isvc: dict, mode: str) -> dict:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        if mode == "Serverless":
            domain = self._domain()
            host = f"{name}.{ns}.{domain}"
            return {"deployment": f"{name}-predictor-00001-deployment", "service": f"{name}-predictor",
                    "revision": f"{name}-predictor-00001", "host": host, "domain": domain,
                    "predictor_host": f"{name}-predictor.{ns}.{domain}",
                    "routed": domain != "svc.cluster.local"}
        ingress = self._config("ingress")
        template = ingress.get("domainTemplate") or "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
        host = (template.replace("{{ .Name }}", name).replace("{{ .Namespace }}", ns)
                .replace("{{ .IngressDomain }}", ingress.get("ingressDomain") or "example.com"))
        return {"deployment": f"{name}-predictor", "service": f"{name}-predictor", "revision": None, "host": host,
                "predictor_host": host, "routed": True, "scheme": ingress.get("urlScheme") or "http"}

    def _storage_error(self, isvc: dict, impl: dict) -> str | None:
        uri = impl.get("storageUri") or ""
        if not uri.startswith("s3://"):
            return None
        ns = isvc["metadata"]["namespace"]
        secrets = []
        annotated = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/storageSecretName")
        if annotated:
            secrets = [annotated]
        else:
            sa_name = ((isvc.get("spec") or {}).get("predictor") or {}).get("serviceAccountName") or "default"
            sa = self.ctx.get("v1", "ServiceAccount", sa_name, ns) or {}
            secrets = [s.get("name") for s in sa.get("secrets") or []]
        for secret_name in secrets:
            secret = self.ctx.get("v1", "Secret", secret_name, ns) or {}
            if "AWS_ACCESS_KEY_ID" in (secret.get("data") or {}):
                return None
        return "botocore.exceptions.NoCredentialsError: Unable to locate credentials"

    # -- reconcile ------------------------------------------------------------------------------------------------

    def reconcile(self, isvc: dict) -> None:
        meta = isvc["metadata"]
        if meta.get("deletionTimestamp"):
            return
        ns, name = meta["namespace"], meta["name"]
        key = (ns, name)
        fmt, impl = self.predictor(isvc)
        mode = self.mode_of(isvc)
        names = self.names(isvc, mode)
        if fmt != "sklearn":
            self._write_failed(isvc, "NoSupportingRuntime",
                               f"No runtime found to support predictor with model type: {{{fmt} <nil>}}")
            return
        storage_error = self._storage_error(isvc, impl)
        state = self.state.setdefault(key, {"phase": "starting", "mode": mode})
        if state.get("mode") != mode:
            self.cleanup(key, keep_state=False)
            state = self.state.setdefault(key, {"phase": "starting", "mode": mode})
        state["names"] = names
        state["storage_error"] = storage_error
        self._apply_objects(isvc, mode, names, impl)
        if storage_error or self.ctx.faults.has("isvc-stuck"):
            pass
        elif key not in self.servers:
            self._start_server(key, name)
        self.write_status(isvc)

    def _apply_objects(self, isvc: dict, mode: str, names: dict, impl: dict) -> None:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        version = self.comp.version
        pred = (isvc.get("spec") or {}).get("predictor") or {}
        labels = {ISVC_LABEL: name, "component": "predictor", "serving.kserve.io/inferenceservice": name}
        if mode == "Serverless":
            labels.update({"app": names["revision"], "serving.knative.dev/configuration": f"{name}-predictor",
                           "serving.knative.dev/configurationGeneration": "1",
                           "serving.knative.dev/revision": names["revision"],
                           "serving.knative.dev/service": f"{name}-predictor"})
        else:
            labels["app"] = f"isvc.{name}-predictor"
        container = {"name": "kserve-container", "image": f"kserve/sklearnserver:{version}",
                     "args": [f"--model_name={name}", "--model_dir=/mnt/models", "--http_port=8080"],
                     "ports": [{"containerPort": 8080, "name": "user-port" if mode == "Serverless" else "http",
                                "protocol": "TCP"}],
                     "resources": impl.get("resources") or {},
                     "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models",
                                       "readOnly": True}]}
        containers = [container]
        if mode == "Serverless":
            containers.append({"name": "queue-proxy",
                               "image": QUEUE_PROXY + __import__("hashlib").sha256(b"queue-proxy").hexdigest(),
                               "ports": [{"containerPort": 8012, "name": "http1", "protocol": "TCP"}]})
        pod_spec = {"initContainers": [{"name": "storage-initializer",
                                        "image": f"kserve/storage-initializer:{version}",
                                        "args": [impl.get("storageUri") or "", "/mnt/models"],
                                        "volumeMounts": [{"name": "kserve-provision-location",
                                                          "mountPath": "/mnt/models"}]}],
                    "containers": containers,
                    "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}]}
        if pred.get("serviceAccountName"):
            pod_spec["serviceAccountName"] = pred["serviceAccountName"]
        selector = {"app": labels["app"]}
        dep = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": names["deployment"], "namespace": ns, "labels": dict(labels),
                            "ownerReferences": [owner_ref(isvc)]},
               "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                        "template": {"metadata": {"labels": dict(labels),
                                                  "annotations": {"serving.kserve.io/deploymentMode":
                                                                  "Serverless" if mode == "Serverless"
                                                                  else "RawDeployment"}},
                                     "spec": pod_spec}}}
        self.ctx.apply(dep, "manager")
        if mode == "Serverless":
            svc = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": names["service"], "namespace": ns,
                                "labels": {"serving.knative.dev/route": names["service"],
                                           "serving.knative.dev/service": names["service"]},
                                "ownerReferences": [owner_ref(isvc)]},
                   "spec": {"type": "ExternalName",
                            "externalName": "knative-local-gateway.istio-system.svc.cluster.local",
                            "ports": [{"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 80}]}}
            private = {"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": f"{names['revision']}-private", "namespace": ns,
                                    "labels": {"serving.knative.dev/revision": names["revision"]},
                                    "ownerReferences": [owner_ref(isvc)]},
                       "spec": {"selector": selector,
                                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8012}]}}
            self.ctx.apply(private, "controller")
            if self.ctx.served("serving.knative.dev/v1", "Service"):
                ksvc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                        "metadata": {"name": names["service"], "namespace": ns,
                                     "labels": {ISVC_LABEL: name, "component": "predictor"},
                                     "ownerReferences": [owner_ref(isvc)]},
                        "spec": {"template": {"metadata": {"labels": {ISVC_LABEL: name, "component": "predictor"}},
                                              "spec": {"containers": [container]}}}}
                self.ctx.apply(ksvc, "manager")
        else:
            svc = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": names["service"], "namespace": ns, "labels": dict(labels),
                                "ownerReferences": [owner_ref(isvc)]},
                   "spec": {"selector": selector,
                            "ports": [{"name": f"{name}-predictor", "port": 80, "protocol": "TCP",
                                       "targetPort": 8080}]}}
        self.ctx.apply(svc, "manager")

    # -- the model server -----------------------------------------------------------------------------------------

    def _start_server(self, key: tuple, name: str) -> None:
        from twin.modelserver import ModelServerProcess  # light: no kserve import in this process

        proc = ModelServerProcess(model_name=name, wrong=self.ctx.faults.has("predict-wrong"))
        self.servers[key] = proc
        self.state[key]["phase"] = "starting"
        thread = threading.Thread(target=self._run_server, args=(key, proc), name=f"twin-isvc-{key[0]}-{key[1]}",
                                  daemon=True)
        thread.start()

    def _run_server(self, key: tuple, proc) -> None:
        ok, message = False, ""
        with self.ctx.lock:  # never spawn after stop() or cleanup() took this server out
            if self.ctx.stopped.is_set() or self.servers.get(key) is not proc:
                return
            try:
                proc.start()
            except Exception as exc:  # noqa: BLE001
                message = str(exc)
        if not message:
            deadline = time.monotonic() + MODEL_SERVER_TIMEOUT
            while not self.ctx.stopped.is_set() and self.servers.get(key) is proc:
                if proc.wait_ready(0.5):
                    ok = True
                    break
                if proc.returncode is not None or time.monotonic() > deadline:
                    message = proc.output()[-2000:] or "model server did not become ready"
                    break
        abandoned = False
        try:
            with self.ctx.lock:
                abandoned = self.ctx.stopped.is_set() or self.servers.get(key) is not proc
                if not abandoned:
                    self._server_done(key, proc, ok, message)
        finally:
            if abandoned:
                proc.stop()

    def _server_done(self, key: tuple, proc, ok: bool, message: str) -> None:
        """Under ctx.lock: the model server is up (or failed): expose it, roll the pod status, write status."""
        state = self.state.get(key)
        if state is None:
            return
        state["phase"] = "ready" if ok else "failed"
        state["message"] = message
        state["url"] = proc.url if ok else None
        state["ready_at"] = now_iso()
        if ok:
            self._expose(key, state, proc.url)
        names = state.get("names") or {}
        if names.get("deployment"):
            self.workloads.resync(key[0], names["deployment"])
        isvc = self.ctx.get(API, "InferenceService", key[1], key[0])
        if isvc is not None:
            self.write_status(isvc)

    def _expose(self, key: tuple, state: dict, url: str) -> None:
        names = state["names"]
        hosts = []
        if state["mode"] == "Serverless":
            if names.get("routed"):
                hosts = [names["host"], names["predictor_host"]]
        else:
            self.proxies[(key[0], names["service"])] = url
            if self.ctx.profile.has("istio"):
                hosts = [names["host"]]
        for host in hosts:
            if self.ctx.gateway is not None:
                self.ctx.gateway.set_route(host, url)
        self.routes[key] = hosts

    def cleanup(self, key: tuple, keep_state: bool = False) -> None:
        proc = self.servers.pop(key, None)
        if proc is not None:
            threading.Thread(target=proc.stop, name="twin-isvc-stop", daemon=True).start()
        for host in self.routes.pop(key, []):
            if self.ctx.gateway is not None:
                self.ctx.gateway.remove_route(host)
        state = self.state.get(key) if keep_state else self.state.pop(key, None)
        names = (state or {}).get("names") or {}
        if names.get("service"):
            self.proxies.pop((key[0], names["service"]), None)

    # -- status ---------------------------------------------------------------------------------------------------

    def write_status(self, isvc: dict) -> None:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        state = self.state.get((ns, name))
        if state is None:
            return
        names, mode = state["names"], state["mode"]
        old = isvc.get("status") or {}
        conds = old.get("conditions")
        gen = isvc["metadata"].get("generation", 1)
        status = {k: v for k, v in old.items() if k not in ("conditions",)}
        status["observedGeneration"] = gen
        scheme = names.get("scheme", "http")
        revision = names.get("revision")
        ready = state["phase"] == "ready" and not state.get("storage_error") and \
            not self.ctx.faults.has("isvc-stuck")
        if mode == "Serverless":
            config_msg = f'Configuration "{name}-predictor" is waiting for a Revision to become ready.'
            if ready:
                conds = set_condition(conds, "PredictorConfigurationReady", "True")
                conds = set_condition(conds, "PredictorRouteReady", "True")
                conds = set_condition(conds, "PredictorReady", "True")
            elif state.get("storage_error") or state["phase"] == "failed":
                msg = f'Revision "{revision}" failed with message: ' + \
                      (state.get("storage_error") or state.get("message") or "Container failed")
                conds = set_condition(conds, "PredictorConfigurationReady", "False", "RevisionFailed", msg)
                conds = set_condition(conds, "PredictorRouteReady", "False", "RevisionMissing", config_msg)
                conds = set_condition(conds, "PredictorReady", "False", "RevisionFailed", msg)
            else:
                conds = set_condition(conds, "PredictorConfigurationReady", "Unknown")
                conds = set_condition(conds, "PredictorRouteReady", "Unknown", "RevisionMissing", config_msg)
                conds = set_condition(conds, "PredictorReady", "Unknown", "RevisionMissing", config_msg)
        else:
            if ready:
                conds = set_condition(conds, "PredictorReady", "True")
            elif state.get("storage_error") or state["phase"] == "failed":
                conds = set_condition(conds, "PredictorReady", "False", "ModelLoadFailed",
                                      state.get("storage_error") or state.get("message") or "model load failed")
            else:
                conds = set_condition(conds, "PredictorReady", "False", "MinimumReplicasUnavailable",
                                      "Deployment does not have minimum availability.")
        if ready:
            conds = set_condition(conds, "IngressReady", "True")
            conds = set_condition(conds, "Ready", "True")
        else:
            conds = set_condition(conds, "IngressReady", "False", "Predictor ingress not created")
            predictor = next((c for c in conds if c["type"] == "PredictorReady"), {})
            conds = set_condition(conds, "Ready", "False", predictor.get("reason") or "Predictor ingress not created",
                                  predictor.get("message"))
        order = ["IngressReady", "PredictorConfigurationReady", "PredictorReady", "PredictorRouteReady", "Ready"]
        status["conditions"] = sorted(conds, key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
        cluster_local = f"http://{name}.{ns}.svc.cluster.local" if mode == "Serverless" else \
            f"http://{names['service']}.{ns}.svc.cluster.local"
        if ready:
            status["url"] = f"{scheme}://{names['host']}" if (mode != "Serverless" or names.get("routed")) \
                else cluster_local
            status["address"] = {"url": cluster_local}
            predictor_status = {"url": f"{scheme}://{names['predictor_host']}",
                                "address": {"url": f"http://{names['service']}.{ns}.svc.cluster.local"}}
            if mode == "Serverless":
                predictor_status.update({"latestCreatedRevision": revision, "latestReadyRevision": revision,
                                         "latestRolledoutRevision": revision,
                                         "traffic": [{"latestRevision": True, "percent": 100,
                                                      "revisionName": revision}]})
            status["components"] = {"predictor": predictor_status}
            status["modelStatus"] = {"copies": {"failedCopies": 0, "totalCopies": 1},
                                     "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                                     "transitionStatus": "UpToDate"}
        else:
            status.pop("url", None)
            status.pop("address", None)
            status["components"] = {"predictor": {"latestCreatedRevision": revision}} if revision else \
                {"predictor": {}}
            failed = state.get("storage_error") or state["phase"] == "failed"
            status["modelStatus"] = {"states": {"activeModelState": "", "targetModelState":
                                                "FailedToLoad" if failed else "Pending"},
                                     "transitionStatus": "BlockedByFailedLoad" if failed else "InProgress"}
            if failed:
                status["modelStatus"]["lastFailureInfo"] = {
                    "reason": "ModelLoadFailed",
                    "message": state.get("storage_error") or state.get("message") or "model load failed"}
        self.ctx.write_status(isvc, status)
        self._ksvc_status(isvc, ready, names, mode)

    def _ksvc_status(self, isvc: dict, ready: bool, names: dict, mode: str) -> None:
        if mode != "Serverless" or not self.ctx.served("serving.knative.dev/v1", "Service"):
            return
        ns = isvc["metadata"]["namespace"]
        ksvc = self.ctx.get("serving.knative.dev/v1", "Service", names["service"], ns)
        if ksvc is None:
            return
        old = ksvc.get("status") or {}
        conds = old.get("conditions")
        for ctype in ("ConfigurationsReady", "Ready", "RoutesReady"):
            conds = set_condition(conds, ctype, "True") if ready else \
                set_condition(conds, ctype, "Unknown", "RevisionMissing",
                              f'Configuration "{names["service"]}" is waiting for a Revision to become ready.')
        status = {"observedGeneration": ksvc["metadata"].get("generation", 1), "conditions": conds,
                  "latestCreatedRevisionName": names["revision"]}
        if ready:
            status.update({"latestReadyRevisionName": names["revision"],
                           "url": f"http://{names['predictor_host']}",
                           "address": {"url": f"http://{names['service']}.{ns}.svc.cluster.local"},
                           "traffic": [{"latestRevision": True, "percent": 100,
                                        "revisionName": names["revision"]}]})
        self.ctx.write_status(ksvc, status)

    # -- pods: plans and logs -------------------------------------------------------------------------------------

    def _key_of_workload(self, obj: dict) -> tuple | None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if ISVC_LABEL not in labels:
            return None
        return obj["metadata"]["namespace"], labels[ISVC_LABEL]

    def pod_plan(self, workload: dict) -> PodPlan | None:
        key = self._key_of_workload(workload)
        if key is None or key not in self.state:
            return None
        state = self.state[key]
        if state.get("storage_error"):
            return PodPlan(init={"storage-initializer": "error"}, default="init")
        if self.ctx.faults.has("isvc-stuck"):
            return PodPlan(init={"storage-initializer": "waiting"}, default="init")
        if state["phase"] == "ready":
            return PodPlan()
        if state["phase"] == "failed":
            return PodPlan(containers={"kserve-container": "crashloop"}, default="running")
        return PodPlan(default="running")

    def pod_logs(self, namespace: str, pod: dict, container: str, previous: bool) -> str | None:
        key = self._key_of_workload(pod)
        if key is None or key not in self.state:
            return None
        state = self.state[key]
        spec = pod.get("spec") or {}
        if container == "storage-initializer":
            uri = next((c.get("args", [""])[0] for c in spec.get("initContainers") or []
                        if c.get("name") == container), "")
            if state.get("storage_error"):
                return (f"INFO:root:Initializing, args: src_uri [{uri}] dest_path[ [/mnt/models]\n"
                        f"INFO:root:Copying contents of {uri} to local\n"
                        f"Traceback (most recent call last):\n{state['storage_error']}\n")
            if self.ctx.faults.has("isvc-stuck"):
                return None
            return (f"INFO:root:Initializing, args: src_uri [{uri}] dest_path[ [/mnt/models]\n"
                    f"INFO:root:Copying contents of {uri} to local\n"
                    f"INFO:root:Downloaded object model.joblib to /mnt/models/model.joblib\n"
                    f"INFO:root:Successfully copied {uri} to /mnt/models\n")
        if previous:
            return None
        if container == "kserve-container":
            proc = self.servers.get(key)
            return proc.output() if proc is not None else None
        return None

    # -- the API server's service proxy ---------------------------------------------------------------------------

    def proxy(self, namespace, service, port, method, path, headers, body):
        url = self.proxies.get((namespace, service))
        if url is None:
            return None
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        forward = {k: v for k, v in (headers or {}).items() if k.lower() not in HOP_BY_HOP}
        try:
            conn.request(method, path or "/", body=body or None, headers=forward)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
            return resp.status, out_headers, data
        except OSError as exc:
            return 503, {"Content-Type": "text/plain"}, f"error trying to reach service: {exc}".encode()
        finally:
            conn.close()

    def _write_failed(self, isvc: dict, reason: str, message: str) -> None:
        old = isvc.get("status") or {}
        conds = set_condition(old.get("conditions"), "PredictorReady", "False", reason, message)
        conds = set_condition(conds, "IngressReady", "False", "Predictor ingress not created")
        conds = set_condition(conds, "Ready", "False", reason, message)
        self.ctx.write_status(isvc, dict(old, conditions=conds,
                                         observedGeneration=isvc["metadata"].get("generation", 1)))
