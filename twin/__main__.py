"""`python -m twin --profile P [--twin-fault KIND[:TARGET]]... [--scenario NAME] --kubeconfig-out PATH
[--handoff-out HANDOFF]`: run the twin standalone.

Prints the API URL and the gateway address, runs until SIGINT/SIGTERM (clean stop, exit 0). A bad profile or
fault is one clear error and exit 2. With --handoff-out, `pytest suites/acceptance --cluster twin --twin-attach
HANDOFF` verifies it as a twin run (its S3 store and its account of itself included) instead of starting one.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from twin.faults import KINDS
    from twin.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(prog="python -m twin", description="Run the simulated KServe-stack cluster.")
    parser.add_argument("--profile", required=True, help="profile name (profiles/NAME.yaml) or path")
    parser.add_argument("--twin-fault", action="append", default=[], metavar="KIND[:TARGET]",
                        help="inject a fault (repeatable); kinds: " + ", ".join(KINDS))
    parser.add_argument("--kubeconfig-out", required=True, type=Path, help="where to write the kubeconfig")
    parser.add_argument("--handoff-out", type=Path, default=None,
                        help="where to write the handoff for `pytest suites/acceptance --cluster twin --twin-attach`")
    parser.add_argument("--bare", action="store_true", help="do not preinstall the stack (an empty kind cluster)")
    parser.add_argument("--scenario", default=None, choices=sorted(SCENARIOS),
                        help="a cluster as someone left it (twin/scenarios.py): " + "; ".join(
                            f"{name}: {s.description}" for name, s in SCENARIOS.items()))
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from stack.profile import Profile, ProfileError
    from twin.cluster import Twin
    from twin.faults import FaultSpecError
    from twin.scenarios import ScenarioError

    if args.scenario and args.bare:
        print("twin: error: --scenario changes an installed stack: drop --bare", file=sys.stderr)
        return 2
    try:
        profile = Profile.load(args.profile)
        twin = Twin(profile, faults=args.twin_fault, preinstalled=not args.bare, scenario=args.scenario)
    except (ProfileError, FaultSpecError, ScenarioError) as exc:
        print(f"twin: error: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        twin.start()
        args.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(twin.kubeconfig_path, args.kubeconfig_out)
        if args.handoff_out is not None:
            from stack.record import write_handoff
            args.handoff_out.parent.mkdir(parents=True, exist_ok=True)
            write_handoff(twin.workdir, twin.handoff(), path=args.handoff_out)
        print(f"twin: profile {profile.name} started in {twin.start_seconds:.2f}s", flush=True)
        print(f"api: {twin.api.url}", flush=True)
        print(f"gateway: {twin.gateway_url}", flush=True)
        print(f"kubeconfig: {args.kubeconfig_out} (context {twin.context})", flush=True)
        if args.handoff_out is not None:
            print(f"handoff: {args.handoff_out} (pytest suites/acceptance --cluster twin --twin-attach "
                  f"{args.handoff_out})", flush=True)
        if twin.faults:
            print(f"faults: {', '.join(str(f) for f in twin.faults)}", flush=True)
        if twin.scenario:
            print(f"scenario: {twin.scenario.name} ({twin.scenario.description})", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        stopping = time.monotonic()
        twin.stop()
    print(f"twin: stopped in {time.monotonic() - stopping:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
