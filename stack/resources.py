"""What a profile's stack requests from the one kind node, summed from profile data (never hard-coded here).

The scheduler places a pod only where its requests fit into the node's allocatable CPU and memory; a kind node is a
container, so its allocatable is the Docker host's CPUs and memory. The sum is: the node's own pods
(`kind.node_requests`, and `kind.worker_requests` per worker), each inventory workload's pod requests (`requests`,
times the replicas the profile installs: its floor, or its `ha:` replicas where it requires AC-HA), and the Iris
predictor pod (its container requests plus `iris.sidecar_requests`, or `iris.init_requests` if larger, as the
scheduler computes a pod's effective request).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_CPU = re.compile(r"^([0-9.]+)(m?)$")
_MEMORY = re.compile(r"^([0-9.]+)([KMGTE]i?|k)?$")
_MEMORY_UNITS = {None: 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4, "E": 1000 ** 6,
                 "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4, "Ei": 1024 ** 6}
GiB = 1024 ** 3


def cpu_millis(quantity: str | int | float | None) -> int:
    """A Kubernetes CPU quantity ("100m", "1", "0.5") in millicores."""
    if quantity is None:
        return 0
    m = _CPU.match(str(quantity).strip())
    if not m:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    return round(float(m.group(1)) * (1 if m.group(2) else 1000))


def memory_bytes(quantity: str | int | None) -> int:
    """A Kubernetes memory quantity ("128Mi", "1Gi", "500M") in bytes."""
    if quantity is None:
        return 0
    m = _MEMORY.match(str(quantity).strip())
    if not m:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return round(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])


@dataclass
class StackRequests:
    cpu_millis: int = 0
    memory_bytes: int = 0
    parts: list[tuple[str, int, int]] = field(default_factory=list)   # (what, millicores, bytes)

    def add(self, what: str, cpu: int, memory: int) -> None:
        self.cpu_millis += cpu
        self.memory_bytes += memory
        self.parts.append((what, cpu, memory))

    @property
    def cpus(self) -> float:
        return self.cpu_millis / 1000

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB

    def minimum_host(self) -> tuple[int, int]:
        """(CPUs, GiB of memory): the smallest whole Docker host on which every request fits."""
        return math.ceil(self.cpu_millis / 1000), math.ceil(self.memory_bytes / GiB)

    def breakdown(self) -> str:
        return ", ".join(f"{what} {cpu / 1000:g}" for what, cpu, _ in self.parts)


def _pair(requests: dict | None) -> tuple[int, int]:
    requests = requests or {}
    return cpu_millis(requests.get("cpu")), memory_bytes(requests.get("memory"))


def stack_requests(profile) -> StackRequests:
    total = StackRequests()
    total.add("kind node", *_pair(profile.kind.get("node_requests")))
    workers = profile.kind.get("workers", 0)
    if workers:
        c, m = _pair(profile.kind.get("worker_requests"))
        total.add(f"{workers} kind worker(s)", c * workers, m * workers)
    # A profile that requires AC-HA installs its ha: replicas (its values and patches say so); the inventory's
    # `replicas` is the floor every install keeps.
    ha = {w.ref: w.replicas for w in profile.ha_workloads()} if "AC-HA" in profile.required_criteria else {}
    for comp in profile.install_order():
        cpu = memory = 0
        for key in ("deployments", "daemonsets"):
            for w in comp.inventory.get(key, []):
                c, m = _pair(w.get("requests"))
                replicas = max(w.get("replicas", 1), ha.get(f"{w['namespace']}/{w['name']}", 0))
                cpu, memory = cpu + c * replicas, memory + m * replicas
        total.add(comp.name, cpu, memory)
    iris = profile.data.get("iris")
    if iris and profile.has("kserve"):
        main = _pair((iris.get("resources") or {}).get("requests"))
        sidecar = _pair(iris.get("sidecar_requests"))
        init = _pair(iris.get("init_requests"))
        total.add("iris pod", max(main[0] + sidecar[0], init[0]), max(main[1] + sidecar[1], init[1]))
    return total
