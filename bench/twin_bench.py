"""Benchmarks on the twin (speed is measured here, never asserted in tests).

    python -m bench.twin_bench [--profile seed] [--runs 3] [--only start|suite]

Prints the twin's start times (a bare control plane; the stack installed from nothing, snapshots off; the stack
restored from its snapshot, as the self-tests start it) with what each start spent its time on (the twin's own
phase marks: Twin.start_phases), and the wall and CPU time of a whole `pytest suites/acceptance --cluster twin` run
(the CPU of the run's process and of every process it waited for: the twin's control plane, its Pods' processes, the
model servers). Needs the control plane built (`make controlplane`).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time_start(profile_name: str, runs: int, preinstalled: bool, snapshots: bool) -> list[tuple[float, dict]]:
    from stack.profile import Profile
    from twin import Twin
    samples = []
    saved = os.environ.get("KSTACK_TWIN_SNAPSHOTS")
    os.environ["KSTACK_TWIN_SNAPSHOTS"] = "1" if snapshots else "0"
    try:
        if preinstalled and snapshots:      # the first start writes the snapshot: not a sample
            Twin(Profile.load(profile_name)).start().stop()
        for _ in range(runs):
            started = time.monotonic()
            twin = Twin(Profile.load(profile_name), preinstalled=preinstalled)
            twin.start()
            samples.append((time.monotonic() - started, dict(twin.start_phases)))
            twin.stop()
    finally:
        os.environ.pop("KSTACK_TWIN_SNAPSHOTS") if saved is None else os.environ.update(KSTACK_TWIN_SNAPSHOTS=saved)
    return samples


def time_bare_start(profile_name: str, runs: int):
    return _time_start(profile_name, runs, preinstalled=False, snapshots=False)


def time_install_start(profile_name: str, runs: int):
    return _time_start(profile_name, runs, preinstalled=True, snapshots=False)


def time_restored_start(profile_name: str, runs: int):
    return _time_start(profile_name, runs, preinstalled=True, snapshots=True)


# What a process of a run is, from its command line (the first pattern found wins).
ROLES = (("kube-apiserver", "kube-apiserver"), ("/etcd", "etcd"), ("kube-controller-manager", "kube-controller-manager"),
         ("kube-scheduler", "kube-scheduler"), ("/kwok", "KWOK"), ("kserve-manager", "KServe controller"),
         ("kserve-llmisvc", "KServe llmisvc controller"), ("twin.modelserver", "model servers"),
         ("twin.storage", "storage initializers"), ("twin.s3store", "S3 store"), ("twin.forwarder", "queue-proxy"),
         ("twin.standins.", "stand-ins"), ("pytest", "the suite (pytest: checks, twin's kubelet and proxies)"))


def _role(cmdline: str) -> str:
    return next((role for pattern, role in ROLES if pattern in cmdline), "other")


class CpuSampler:
    """Every process under `root_pid`, sampled twice a second: its CPU seconds (utime + stime) as last seen, by role.
    A process that ends between two samples loses at most half a second of its time here."""

    def __init__(self, root_pid: int):
        import threading
        self.root, self.tick = root_pid, os.sysconf("SC_CLK_TCK")
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        parents, stats = {}, {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                parents[pid], stats[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick
            except (OSError, ValueError, IndexError):
                continue
        for pid, cpu in stats.items():
            ancestor = pid
            while ancestor not in (self.root, 0, 1) and ancestor in parents:
                ancestor = parents[ancestor]
            if ancestor != self.root and pid != self.root:
                continue
            try:
                cmdline = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                           if pid not in self.seen else self.seen[pid][0])
            except OSError:
                continue
            self.seen[pid] = (cmdline, cpu)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for cmdline, cpu in self.seen.values():
            out[_role(cmdline)] = out.get(_role(cmdline), 0.0) + cpu
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def time_suite(profile_name: str, runs: int) -> list[tuple[float, dict]]:
    """Wall seconds of each run, with its CPU seconds: in all (user + system of the run and every process it waited
    for) and by role (CpuSampler)."""
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "pytest", "suites/acceptance", "--cluster", "twin",
                                     "--profile", profile_name, "-q", "--alluredir", f"{tmp}/r", "--signoff-dir",
                                     f"{tmp}/o"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with CpuSampler(proc.pid) as sampler:
                proc.wait()
            wall = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = {"cpu": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)}
            samples.append((wall, {**cpu, **{f"cpu {k}": round(v, 1) for k, v in sampler.by_role().items()}}))
    return samples


def _phases(samples: list[tuple[float, dict]]) -> str:
    """The median of each phase over the samples."""
    names = list(dict.fromkeys(name for _, phases in samples for name in phases))
    return ", ".join(f"{name} {statistics.median(p.get(name, 0.0) for _, p in samples):.1f}s" for name in names)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="seed")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("start", "suite"), default=None)
    args = parser.parse_args()
    benches = [("twin start, bare", time_bare_start), ("twin start, stack installed", time_install_start),
               ("twin start, stack restored", time_restored_start), ("acceptance suite on the twin", time_suite)]
    for label, fn in benches:
        if args.only and (args.only == "suite") != (fn is time_suite):
            continue
        samples = fn(args.profile, args.runs)
        walls = [wall for wall, _ in samples]
        print(f"{label:32s} median {statistics.median(walls):6.2f}s  min {min(walls):6.2f}s  "
              f"max {max(walls):6.2f}s  (n={len(walls)}, profile {args.profile})")
        print(f"{'':32s} {_phases(samples)}", flush=True)


if __name__ == "__main__":
    main()
