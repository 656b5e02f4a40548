"""The twin's account of itself, for the sign-off of every twin run: what is real, what is a stand-in and why,
what is simulated, where the install sources came from, and how the twin differs from the profile's cluster."""
from __future__ import annotations

from stack.record import Limitation, SimulatedPart, Simulation
from twin import toolchain

# component -> [(part, reason the real one does not run)]; the reasons are argued at the top of each module.
STAND_INS = {
    "cert-manager": [("cert-manager controller, cainjector and webhook (twin/standins/certmanager.py)",
                      "cert-manager's binaries are separate Go modules since v1.12, which the module proxy here "
                      "refuses")],
    "istio": [("istiod's webhooks: validation and gateway injection (twin/standins/istiod.py)",
               "the proxy serves istio.io/istio only as untagged pseudo-versions, and xDS has no Envoy to serve"),
              ("the ingress gateway: Envoy's routing of Gateways and VirtualServices (twin/standins/gateway.py)",
               "Envoy is a container image")],
    "knative": [("Knative Serving controller and webhook (twin/standins/knative.py, knative_webhook.py)",
                 "its Revisions need a registry for digests, queue-proxy metrics and the activator's data path"),
                ("net-istio controller and webhook (twin/standins/netistio.py)",
                 "knative.dev/net-istio is not served by the module proxy, and it probes Envoy gateways")],
}
SIMULATED = [
    ("container images", "no container runtime: a Pod without a process of the twin only reports KWOK's status"),
    ("the model server", "the sklearn runtime image is replaced by the real KServe Python ModelServer (kserve "
                         "package) serving the same model file, forked from a process that imported kserve once "
                         "(twin/zygote.py) instead of a Python of its own"),
    ("gs:// storage", "the twin's object store holds the profiles' sample Iris model; other gs:// URIs do not exist"),
    ("the S3 store (a DigitalOcean Space)", "moto's S3 server (PyPI moto) in the twin's network, with IAM "
                                            "authentication and the Iris model; the download is KServe's own "
                                            "storage code (kserve-storage)"),
    ("queue-proxy", "a TCP forwarder to the model server (twin/forwarder.py)"),
    ("kube-proxy", "NodePorts only (twin/standins/kubeproxy.py); no ClusterIP routing"),
    ("Istio sidecars", "Envoy is replaced by twin/standins/sidecar.py on a model Pod's inbound ports (real mTLS "
                       "with istiod's CA, PeerAuthentication, AuthorizationPolicy) and by auto mTLS in the gateway "
                       "and activator stand-ins; istiod's xDS by the twin's mesh snapshot (twin/mesh.py)"),
]


def simulation(twin) -> Simulation:
    """A Simulation for a started twin."""
    from twin.upstream import install_sources
    builds = toolchain.load_builds()
    cp = twin.controlplane
    version = (cp.version or {}).get("gitVersion", builds["kubernetes"].version)
    out = Simulation(control_plane={"kube-apiserver": version, "kube-controller-manager": version,
                                    "kube-scheduler": version, "etcd": builds["etcd"].version,
                                    "kwok": builds["kwok"].version},
                     faults=[str(f) for f in twin.fault_set],
                     scenario=twin.scenario.name if twin.scenario else None)
    out.parts.append(SimulatedPart("control plane", "real",
                                   f"kube-apiserver, kube-controller-manager, kube-scheduler {version} and etcd "
                                   f"{builds['etcd'].version} built from source; authentication, RBAC and "
                                   "admission on; webhooks reached through their Services' endpoints"))
    out.parts.append(SimulatedPart("node", "simulated", f"one KWOK {builds['kwok'].version} node: Pods get their "
                                   "status from KWOK Stages; the twin's kubelet runs the processes it can"))
    for workload, detail in twin.kubelet.catalog.real_controllers().items():
        out.parts.append(SimulatedPart(workload, "real", detail))
    for comp in twin.profile.install_order():
        for name, reason in STAND_INS.get(comp.name, []):
            out.parts.append(SimulatedPart(name, "stand-in", reason))
    out.parts += [SimulatedPart(name, "simulated", detail) for name, detail in SIMULATED]
    for source in install_sources(twin.profile):
        out.parts.append(SimulatedPart(f"install source {source.what}", "real" if source.upstream else "stand-in",
                                       source.detail))
    low, high = twin.profile.kubernetes_range
    minor = ".".join(version.lstrip("v").split(".")[:2])
    if not _within(minor, low, high):
        out.limitations.append(Limitation("twin-kubernetes-version", f"the twin's control plane is Kubernetes "
                                          f"{version}, outside the profile's range {low}-{high} (one control plane "
                                          "is built for every profile)"))
    if any(not s.upstream for s in install_sources(twin.profile)):
        out.limitations.append(Limitation("twin-synthesised-manifests", "install sources not available offline are "
                                          "synthesised from the profile inventory, with one broad ClusterRole per "
                                          "component instead of upstream's RBAC; of a Helm chart's values only the "
                                          "replicas and PodDisruptionBudgets are read (twin/seed.py)"))
    if twin.profile.has("istio"):
        out.limitations.append(Limitation("twin-simulated-sidecars", "AC-MESH-MTLS and AC-MESH-AUTHZ are judged "
                                          "against the twin's sidecar stand-in, not Envoy: it models "
                                          "PeerAuthentication modes and AuthorizationPolicy sources, operations "
                                          "and a few conditions, and intercepts only model Pods' inbound ports"))
    out.limitations.append(Limitation("twin-no-containers", "no container runs: images are never pulled and Pods "
                                      "without a process of the twin are Ready without their probes"))
    if len(twin.node_names) > 1:
        out.limitations.append(Limitation("twin-nodes-share-a-host", f"the twin's {len(twin.node_names)} nodes are KWOK "
                                          "nodes of one host: the real scheduler spreads Pods over them, but their "
                                          "processes share the host's CPU and one network address, so a node's loss "
                                          "or drain is never simulated"))
    if twin.scenario is not None:
        out.limitations += list(twin.scenario.limitations)
    return out


def _within(minor: str, low: str, high: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))
    return key(low) <= key(minor) <= key(high)
