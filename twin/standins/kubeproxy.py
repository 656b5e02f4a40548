"""kube-proxy stand-in: `python -m twin.standins.kubeproxy`, the process of kind's kube-proxy Pod (host network).

Why not the real one: kube-proxy programs iptables/nftables/IPVS rules in the node's kernel, and the twin has no
node kernel of its own (its node is KWOK's). What it does: for every NodePort of a NodePort or LoadBalancer
Service, it listens on the node address and forwards each TCP connection to a ready endpoint of the Service (from
its EndpointSlices, port matched by name), round robin; no ready endpoint, and the connection is refused, as
kube-proxy's REJECT rule does. ClusterIPs are not implemented (nothing in the twin dials one).
"""
from __future__ import annotations

import itertools
import logging
import socket
import sys
import threading

from twin.forwarder import pipe
from twin.standins import runtime
from twin.standins.runtime import Informer, Kube

log = logging.getLogger("twin.standin.kube-proxy")


class NodePorts:
    def __init__(self, kube: Kube, node_ip: str):
        self.node_ip = node_ip
        self.lock = threading.Lock()
        self.listeners: dict[int, socket.socket] = {}
        self.targets: dict[int, tuple[str, str, str]] = {}          # nodePort -> (namespace, service, port name)
        self.counter = itertools.count()
        self.services = Informer(kube, "v1", "Service", self._sync)
        self.slices = Informer(kube, "discovery.k8s.io/v1", "EndpointSlice")

    def start(self) -> None:
        self.slices.start()
        self.services.start()

    def _sync(self, event_type: str, svc: dict) -> None:
        meta = svc["metadata"]
        wanted = {}
        if event_type != "DELETED" and svc.get("spec", {}).get("type") in ("NodePort", "LoadBalancer"):
            for port in svc["spec"].get("ports") or []:
                if port.get("nodePort") and port.get("protocol", "TCP") == "TCP":
                    wanted[port["nodePort"]] = (meta["namespace"], meta["name"], port.get("name") or "")
        with self.lock:
            for node_port, target in list(self.targets.items()):
                if target[:2] == (meta["namespace"], meta["name"]) and node_port not in wanted:
                    self.targets.pop(node_port)
                    self.listeners.pop(node_port).close()
            for node_port, target in wanted.items():
                self.targets[node_port] = target
                if node_port not in self.listeners:
                    self._listen(node_port)

    def _listen(self, node_port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.node_ip, node_port))
        sock.listen(64)
        self.listeners[node_port] = sock
        threading.Thread(target=self._accept, args=(node_port, sock), daemon=True).start()
        log.info("NodePort %d -> %s/%s:%s", node_port, *self.targets[node_port])

    def endpoint(self, node_port: int) -> tuple[str, int] | None:
        with self.lock:
            target = self.targets.get(node_port)
        if target is None:
            return None
        ns, service, port_name = target
        ready = []
        for eps in self.slices.items():
            if eps["metadata"].get("namespace") != ns or \
                    (eps["metadata"].get("labels") or {}).get("kubernetes.io/service-name") != service:
                continue
            port = next((p["port"] for p in eps.get("ports") or [] if (p.get("name") or "") == port_name), None)
            if port is None:
                continue
            for ep in eps.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready"):
                    ready += [(address, port) for address in ep.get("addresses") or []]
        if not ready:
            return None
        return ready[next(self.counter) % len(ready)]

    def _accept(self, node_port: int, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return       # the listener was closed
            threading.Thread(target=self._forward, args=(node_port, client), daemon=True).start()

    def _forward(self, node_port: int, client: socket.socket) -> None:
        target = self.endpoint(node_port)
        if target is None:
            client.close()   # no ready endpoint: refused, as kube-proxy's REJECT rule
            return
        pipe(client, lambda: socket.create_connection(target, timeout=10))


def start(stop: threading.Event) -> None:
    NodePorts(Kube(), runtime.listen_address()).start()


if __name__ == "__main__":
    sys.exit(runtime.run(start, "kube-proxy"))
