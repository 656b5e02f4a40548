"""What a fresh kind cluster holds before anything is installed, for the twin's real control plane.

The control plane itself provides what kubeadm's does (the `default` ServiceAccount, kube-root-ca.crt, the
`kubernetes` Service, RBAC bootstrap roles). What kind adds on top (its node, CoreDNS, kube-proxy, kindnet,
local-path-provisioner) is created here as objects, and KWOK runs their Pods; only kube-proxy has a process
(twin/standins/kubeproxy.py: the NodePorts). The twin's node carries kstack.io/simulated=true, the one mark a twin
carries on purpose, so that every client can tell the cluster is simulated.
"""
from __future__ import annotations

from twin.kwok import NODE_ANNOTATION

SIMULATED_LABEL = "kstack.io/simulated"
COREDNS = "v1.11.1"        # kind v0.30's CoreDNS (kubeadm 1.34's constants.CoreDNSVersion is v1.12.x; kind pins)


def node(name: str, kubernetes_version: str, role: str = "control-plane", tainted: bool = False) -> dict:
    """A node kind creates: its control plane (tainted NoSchedule only beside workers: kind removes the taint on a
    single node, pkg/cluster/internal/create/actions/kubeadminit/init.go @v0.20.0), or a worker."""
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok", SIMULATED_LABEL: "true"}
    if role == "control-plane":
        labels.update({"node-role.kubernetes.io/control-plane": "",
                       "node.kubernetes.io/exclude-from-external-load-balancers": ""})
    # An 8-CPU, 16 GiB node: the profiles' stacks fit with room (the seed stack requests about 3.1 CPUs), so
    # scheduling is real but never the bottleneck of a self-test.
    capacity = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    spec = {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]} if tainted else {}
    return {"apiVersion": "v1", "kind": "Node", "spec": spec,
            "metadata": {"name": name, "labels": labels, "annotations": dict(NODE_ANNOTATION)},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "nodeInfo": {"kubeletVersion": kubernetes_version, "kubeProxyVersion": kubernetes_version,
                                    # KWOK renders these unquoted into YAML: no ": " in them.
                                    "containerRuntimeVersion": "kwok://none (simulated, no container runtime)",
                                    "osImage": "KWOK fake node (twin)", "operatingSystem": "linux",
                                    "architecture": "amd64"}}}


def node_names(workers: int, control_plane: str) -> list[str]:
    """The control plane, then kind's names for its workers: <cluster>-worker, <cluster>-worker2, ..."""
    prefix = control_plane.removesuffix("-control-plane")
    return [control_plane] + [f"{prefix}-worker{'' if i == 1 else i}" for i in range(1, workers + 1)]


def kind_objects(kubernetes_version: str) -> list[dict]:
    """kube-system and local-path-storage as kind leaves them (the parts suites and diagnostics see)."""
    objs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "local-path-storage"}}]
    dns_labels = {"k8s-app": "kube-dns"}
    objs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}})
    objs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dns_labels},
                 "spec": {"replicas": 2, "selector": {"matchLabels": dns_labels},
                          "template": {"metadata": {"labels": dns_labels},
                                       "spec": {"serviceAccountName": "coredns", "priorityClassName":
                                                "system-cluster-critical", "containers": [{
                                                    "name": "coredns",
                                                    "image": f"registry.k8s.io/coredns/coredns:{COREDNS}",
                                                    "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}},
                                                    "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                                              {"name": "dns-tcp", "containerPort": 53,
                                                               "protocol": "TCP"},
                                                              {"name": "metrics", "containerPort": 9153,
                                                               "protocol": "TCP"}]}]}}}})
    objs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": dns_labels},
                 "spec": {"selector": dns_labels, "clusterIP": "10.96.0.10",
                          "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}})
    for name, image, labels, selector in (
            ("kube-proxy", f"registry.k8s.io/kube-proxy:{kubernetes_version}", {"k8s-app": "kube-proxy"},
             {"k8s-app": "kube-proxy"}),
            ("kindnet", "docker.io/kindest/kindnetd:v20250512-df8de77b", {"app": "kindnet", "k8s-app": "kindnet",
                                                                            "tier": "node"}, {"app": "kindnet"})):
        objs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name,
                                                                                "namespace": "kube-system"}})
        objs.append({"apiVersion": "apps/v1", "kind": "DaemonSet",
                     "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
                     "spec": {"selector": {"matchLabels": selector},
                              "template": {"metadata": {"labels": labels},
                                           # every node, tainted or not: kubeadm's kube-proxy and kind's kindnet
                                           # tolerate everything (operator: Exists)
                                           "spec": {"serviceAccountName": name, "hostNetwork": True,
                                                    "priorityClassName": "system-node-critical",
                                                    "tolerations": [{"operator": "Exists"}],
                                                    "nodeSelector": {"kubernetes.io/os": "linux"},
                                                    "containers": [{"name": name if name != "kindnet"
                                                                    else "kindnet-cni", "image": image}]}}}})
    # kube-proxy reads Services and EndpointSlices cluster-wide (kubeadm binds system:node-proxier to its SA).
    objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "kubeadm:node-proxier"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "system:node-proxier"},
                 "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]})
    objs.append({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "local-path-provisioner-service-account", "namespace": "local-path-storage"}})
    objs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "local-path-provisioner", "namespace": "local-path-storage"},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "local-path-provisioner"}},
                          "template": {"metadata": {"labels": {"app": "local-path-provisioner"}},
                                       "spec": {"serviceAccountName": "local-path-provisioner-service-account",
                                                "containers": [{"name": "local-path-provisioner",
                                                                "image": "docker.io/kindest/local-path-provisioner:"
                                                                         "v20250214-acbabc1a"}]}}}})
    return objs
