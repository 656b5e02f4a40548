"""Where the self-tests' time goes, from the JUnit XML of a `make test` run (speed is measured here, never asserted).

    make test ARGS="--junitxml=/tmp/selftests.xml"
    python -m bench.selftests report /tmp/selftests.xml [--top 25]      # by module, the longest tests
    python -m bench.selftests durations /tmp/selftests.xml              # rewrite tests/durations.json

`durations` writes what tests/scheduling.py hands out longest first: each test's seconds, rounded (a test that has
not run yet counts a default there). A test's time here is its setup, call and teardown, so a module's twin fixture
counts in its first test.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scheduling import base_nodeid  # noqa: E402 - after the path: the scheduler's own reading of an id


def read_junit(path: Path) -> dict[str, float]:
    """nodeid -> seconds, from pytest's JUnit XML (classname `tests.reports.test_x[.Class]`, name `test_y[param]`)."""
    out: dict[str, float] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        # the module is the longest prefix that is a file; what follows it is a class
        for cut in range(len(parts), 0, -1):
            module = Path(*parts[:cut]).with_suffix(".py")
            if (ROOT / module).is_file():
                nodeid = base_nodeid("::".join([module.as_posix(), *parts[cut:], case.get("name", "")]))
                out[nodeid] = out.get(nodeid, 0.0) + float(case.get("time") or 0)
                break
    return out


def report(durations: dict[str, float], top: int) -> str:
    by_module: dict[str, list[float]] = defaultdict(list)
    for nodeid, seconds in durations.items():
        by_module[nodeid.split("::")[0]].append(seconds)
    total = sum(durations.values())
    lines = [f"{len(durations)} tests, {total:.0f} s of test time (setup + call + teardown, over every worker)", "",
             "| module | tests | seconds | share |", "|---|---:|---:|---:|"]
    for module, times in sorted(by_module.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| {module} | {len(times)} | {sum(times):.0f} | {sum(times) / total:.0%} |")
    lines += ["", f"The {top} longest:", "", "| test | seconds |", "|---|---:|"]
    for nodeid, seconds in sorted(durations.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {nodeid} | {seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selftests")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="where the time of a run went")
    rep.add_argument("junit", type=Path)
    rep.add_argument("--top", type=int, default=25)
    dur = sub.add_parser("durations", help="rewrite the durations the scheduler reads")
    dur.add_argument("junit", type=Path)
    dur.add_argument("--out", type=Path, default=ROOT / "tests" / "durations.json")
    args = parser.parse_args(argv)
    durations = read_junit(args.junit)
    if args.command == "report":
        print(report(durations, args.top))
    else:
        args.out.write_text(json.dumps({k: round(v, 1) for k, v in sorted(durations.items())}, indent=0) + "\n")
        print(f"{len(durations)} tests written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
