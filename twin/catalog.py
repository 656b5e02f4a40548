"""Which process runs for which container of the twin's stack: the real binary where it builds, else a stand-in.

The answer is keyed by component and container, read from the profile's inventory (the Deployments a component
installs and their containers), so a renamed Deployment in a profile still gets its process.

| component    | container (Deployment)                 | process                                         |
|--------------|----------------------------------------|-------------------------------------------------|
| kserve       | manager (kserve-controller-manager)    | the real KServe controller of the profile's version |
| kserve       | manager (llmisvc-controller-manager)   | the real llmisvc controller, where it is built  |
| cert-manager | cert-manager-controller/-cainjector/-webhook | twin/standins/certmanager.py (controller, cainjector, webhook) |
| istio        | discovery (istiod)                     | twin/standins/istiod.py (validation + sidecar injection webhooks) |
| istio        | istio-proxy (the ingress gateway)      | twin/standins/gateway.py (Envoy's routing of VirtualServices) |
| knative      | controller / webhook                   | twin/standins/knative.py (Services, Revisions, Routes) / knative_webhook.py |
| knative      | activator / autoscaler                 | twin/standins/activator.py (holds, proxies) / autoscaler.py (from and to zero) |
| knative      | net-istio controller / webhook         | twin/standins/netistio.py / knative_webhook.py net-istio |
| kube-system  | kube-proxy (DaemonSet)                 | twin/standins/kubeproxy.py (NodePorts)          |

Containers not listed (kube-rbac-proxy, CoreDNS...) run nothing: KWOK reports them
running and nothing answers at their ports, which no check of the suite depends on.
"""
from __future__ import annotations

import sys
from pathlib import Path

from twin.kubelet import ProcessSpec
from twin.processes import go_env

STANDIN_ROLES = {
    # (component, container name) -> stand-in module and role argument
    ("cert-manager", "cert-manager-controller"): ("certmanager", "controller"),
    ("cert-manager", "cert-manager-cainjector"): ("certmanager", "cainjector"),
    ("cert-manager", "cert-manager-webhook"): ("certmanager", "webhook"),
    ("istio", "discovery"): ("istiod", None),
    ("istio", "istio-proxy"): ("gateway", None),
    ("knative", "controller"): ("knative", None),
    ("knative", "webhook"): ("knative_webhook", None),
    ("knative", "activator"): ("activator", None),
    ("knative", "autoscaler"): ("autoscaler", None),
}
NET_ISTIO = {"controller": ("netistio", None), "webhook": ("knative_webhook", "net-istio")}
KUBE_PROXY = ("kube-system", "kube-proxy")


class Catalog:
    def __init__(self, profile, binaries: dict[str, Path], profile_path: Path, proxy_node: str | None = None):
        self.profile = profile
        # kube-proxy's NodePorts: every twin node shares the host's network namespace and address, so one process
        # (the Pod on this node) serves them for all; the DaemonSet's other Pods are simulated (KWOK's Ready).
        self.proxy_node = proxy_node
        self.binaries = binaries
        self.profile_path = profile_path
        self.workloads: dict[tuple[str, str], str] = {}   # (namespace, workload) -> component
        for comp, item in profile.inventory("deployments"):
            self.workloads[(item["namespace"], item["name"])] = comp
        for comp, item in profile.inventory("daemonsets"):
            self.workloads[(item["namespace"], item["name"])] = comp

    def real_controllers(self) -> dict[str, str]:
        """Workload -> the real binary that runs for it (for the twin's report)."""
        out = {}
        if "kserve" in self.profile.components:
            version = self.profile.components["kserve"].version
            for name in ("kserve-controller-manager", "llmisvc-controller-manager"):
                binary = self._kserve_binary(name, version)
                if binary:
                    out[f"kserve/{name}"] = f"{binary.name} (built from github.com/kserve/kserve@{version})"
        return out

    def _kserve_binary(self, workload: str, version: str) -> Path | None:
        name = {"kserve-controller-manager": "kserve-manager", "llmisvc-controller-manager": "kserve-llmisvc"}.get(
            workload)
        return self.binaries.get(f"{name}-{version}") if name else None

    def process_for(self, pod: dict, container: dict) -> ProcessSpec | None:
        ns = pod["metadata"]["namespace"]
        workload = workload_of(pod)
        if (ns, workload) == KUBE_PROXY:
            on_proxy_node = self.proxy_node is None or pod["spec"].get("nodeName") == self.proxy_node
            return self._standin("kubeproxy", None) if on_proxy_node else None
        component = self.workloads.get((ns, workload))
        if component is None:
            return None
        cname = container["name"]
        if component == "kserve" and cname == "manager":
            binary = self._kserve_binary(workload, self.profile.components["kserve"].version)
            if binary is None:
                return None
            return ProcessSpec(argv=[str(binary)], in_cluster=True, env=go_env({}))
        if component == "knative" and workload.startswith("net-istio"):
            role = NET_ISTIO.get(cname)
            return self._standin(role[0], role[1]) if role else None
        role = STANDIN_ROLES.get((component, cname))
        if role is None:
            return None
        if role[0] == "gateway" and workload != (self.profile.gateway or {}).get("name"):
            return None
        return self._standin(role[0], role[1])

    def _standin(self, module: str, role: str | None) -> ProcessSpec:
        argv = [sys.executable, "-m", f"twin.standins.{module}"] + ([role] if role else [])
        return ProcessSpec(argv=argv, env={"TWIN_PROFILE": str(self.profile_path),
                                           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                           ready_file=True)


def workload_of(pod: dict) -> str:
    """The Deployment or DaemonSet a Pod belongs to (a ReplicaSet's name minus its pod-template-hash)."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            pod_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
            name = ref["name"]
            return name[: -len(pod_hash) - 1] if pod_hash and name.endswith("-" + pod_hash) else name
        if ref.get("kind") in ("DaemonSet", "StatefulSet", "Job"):
            return ref["name"]
    return pod["metadata"]["name"]
