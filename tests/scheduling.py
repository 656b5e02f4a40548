"""How `make test` hands the self-tests to its xdist workers: longest first.

xdist's loadgroup keeps the tests of one `xdist_group` (a module's twin) on one worker, but hands its work units out
in collection order and three ahead, so one worker could end with a queue of long twin runs while the other idles.
Here a worker gets the longest unit left (a test, or a group's tests together), by the durations measured in a full
run (tests/durations.json, `python -m bench.selftests durations JUNIT_XML` writes it), with one unit ahead of the
one it runs (a worker needs the next test to run the current one). Units of about the same length come in an order
shuffled by the session's seed, so a leftover of one fault run in a shared twin meets different successors from one
session to the next (the seed is printed in the header).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from xdist.scheduler.loadgroup import LoadGroupScheduling

DURATIONS = Path(__file__).resolve().parent / "durations.json"
UNKNOWN_SECONDS = 2.0        # a test not measured yet
BUCKET_SECONDS = 20.0        # units this close in length are shuffled among themselves


def load_durations(path: Path = DURATIONS) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def base_nodeid(nodeid: str) -> str:
    """The test's id without loadgroup's `@group` suffix."""
    at, bracket = nodeid.rfind("@"), nodeid.rfind("]")
    return nodeid[:at] if at > bracket else nodeid


class LongestFirst(LoadGroupScheduling):
    def __init__(self, config, log=None, durations: dict[str, float] | None = None, seed: int = 0):
        super().__init__(config, log)
        self.durations = load_durations() if durations is None else durations
        self.rng = random.Random(seed)
        self._rank: dict[str, float] = {}

    def cost(self, scope: str) -> float:
        return sum(self.durations.get(base_nodeid(n), UNKNOWN_SECONDS) for n in self.workqueue[scope])

    def _key(self, scope: str) -> tuple[float, float]:
        if scope not in self._rank:
            self._rank[scope] = self.rng.random()
        return round(self.cost(scope) / BUCKET_SECONDS), self._rank[scope]

    def _assign_work_unit(self, node) -> None:
        scope = max(self.workqueue, key=self._key)
        work_unit = self.workqueue.pop(scope)
        self.assigned_work.setdefault(node, {})[scope] = work_unit
        collection = self.registered_collections[node]
        node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])

    def _reschedule(self, node) -> None:
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 1:     # the one it runs and the next
            return
        self._assign_work_unit(node)
