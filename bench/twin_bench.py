"""Benchmarks on the twin (speed is measured here, never asserted in tests).

    python -m bench.twin_bench [--profile seed] [--runs 3]

Prints the twin's start times (a bare control plane; the stack installed from nothing, snapshots off; the stack
restored from its snapshot, as the self-tests start it) and the wall time of a whole
`pytest suites/acceptance --cluster twin` run. Needs the control plane built (`make controlplane`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time_start(profile_name: str, runs: int, preinstalled: bool, snapshots: bool) -> list[float]:
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
            samples.append(time.monotonic() - started)
            twin.stop()
    finally:
        os.environ.pop("KSTACK_TWIN_SNAPSHOTS") if saved is None else os.environ.update(KSTACK_TWIN_SNAPSHOTS=saved)
    return samples


def time_bare_start(profile_name: str, runs: int) -> list[float]:
    return _time_start(profile_name, runs, preinstalled=False, snapshots=False)


def time_install_start(profile_name: str, runs: int) -> list[float]:
    return _time_start(profile_name, runs, preinstalled=True, snapshots=False)


def time_restored_start(profile_name: str, runs: int) -> list[float]:
    return _time_start(profile_name, runs, preinstalled=True, snapshots=True)


def time_suite(profile_name: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "pytest", "suites/acceptance", "--cluster", "twin", "--profile",
                            profile_name, "-q", "--alluredir", f"{tmp}/r", "--signoff-dir", f"{tmp}/o"],
                           cwd=ROOT, capture_output=True, check=False)
            samples.append(time.monotonic() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="seed")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for label, fn in (("twin start, bare", time_bare_start), ("twin start, stack installed", time_install_start),
                      ("twin start, stack restored", time_restored_start),
                      ("acceptance suite on the twin", time_suite)):
        samples = fn(args.profile, args.runs)
        print(f"{label:32s} median {statistics.median(samples):6.2f}s  min {min(samples):6.2f}s  "
              f"max {max(samples):6.2f}s  (n={len(samples)}, profile {args.profile})")


if __name__ == "__main__":
    main()
