"""The self-tests' own machinery, without a twin: the longest-first scheduling, the session's shared runs, the
snapshot key, the fault registry, the guard that keeps twins out of unmarked tests, and --twin-attach's options."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import ROOT, run_pytest
from tests.scheduling import LongestFirst, base_nodeid
from tests.twinruns import Run, SharedRuns


# -- scheduling ---------------------------------------------------------------------------------------------------------
class _Config:
    option = type("Option", (), {"loadscopereorder": False})()

    def getvalue(self, name):
        return ["2*popen"] if name == "tx" else None


class _Node:
    def __init__(self, name: str):
        self.name, self.shutting_down, self.sent = name, False, []
        self.gateway = type("Gateway", (), {"id": name})()

    def send_runtest_some(self, indices):
        self.sent += indices

    def shutdown(self):
        self.shutting_down = True


def _scheduler(collection: list[str], durations: dict[str, float], seed: int = 1) -> tuple[LongestFirst, list]:
    sched = LongestFirst(_Config(), durations=durations, seed=seed)
    nodes = [_Node("gw0"), _Node("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    return sched, nodes


def test_the_longest_work_goes_out_first_and_a_group_stays_on_one_worker():
    collection = ["tests/a.py::quick", "tests/b.py::fault[x]", "tests/c.py::one@twin-c", "tests/c.py::two@twin-c",
                  "tests/d.py::profile[seed]", "tests/e.py::quick2"]
    durations = {"tests/a.py::quick": 0.5, "tests/b.py::fault[x]": 90, "tests/c.py::one": 60, "tests/c.py::two": 70,
                 "tests/d.py::profile[seed]": 100, "tests/e.py::quick2": 0.3}
    sched, (gw0, gw1) = _scheduler(collection, durations)
    first = [collection[i] for i in gw0.sent[:1]] + [collection[i] for i in gw1.sent[:1]]
    # the group (130 s together) and the 100 s profile run go first, one to each worker
    assert set(first) == {"tests/c.py::one@twin-c", "tests/d.py::profile[seed]"}, first
    owner = gw0 if collection.index("tests/c.py::one@twin-c") in gw0.sent else gw1
    assert collection.index("tests/c.py::two@twin-c") in owner.sent        # the group's tests travel together
    # a worker holds its current unit and one more: the short tests are still in the queue for whoever is free
    assert "tests/a.py::quick" in sched.workqueue and "tests/e.py::quick2" in sched.workqueue
    assert base_nodeid("tests/c.py::one@twin-c") == "tests/c.py::one"
    assert base_nodeid("tests/x.py::t[a@b]") == "tests/x.py::t[a@b]"      # an @ inside a parameter is not a group


def test_units_of_about_the_same_length_come_in_an_order_the_seed_decides():
    collection = [f"tests/f.py::fault[{i}]" for i in range(8)]
    durations = dict.fromkeys(collection, 60.0)

    def order(seed: int) -> list[str]:
        sched, nodes = _scheduler(collection, durations, seed)
        return [collection[i] for node in nodes for i in node.sent]
    assert order(7) == order(7)
    assert order(7) != order(8)


# -- shared runs --------------------------------------------------------------------------------------------------------
def _fake_run(folder: Path, verdict: str = "PASS") -> Run:
    (folder / "out").mkdir(parents=True)
    (folder / "out" / "signoff.json").write_text(json.dumps({"verdict": verdict, "criteria": []}))
    (folder / "output.txt").write_text("out")
    return Run.load(folder)


def test_a_shared_run_is_made_once_and_a_failed_one_fails_every_reader(tmp_path):
    runs, made = SharedRuns(tmp_path), []

    def make(folder: Path) -> Run:
        made.append(folder)
        return _fake_run(folder)
    assert runs.get("profile-seed", make).doc["verdict"] == "PASS"
    assert runs.get("profile-seed", make).doc["verdict"] == "PASS"
    assert len(made) == 1

    def broken(folder: Path) -> Run:
        made.append(folder)
        raise AssertionError("no sign-off written")
    for _ in range(2):
        with pytest.raises(AssertionError, match="no sign-off written"):
            runs.get("fault-x", broken)
    assert len(made) == 2           # tried once, then the recorded failure for the next reader


# -- the snapshot key ---------------------------------------------------------------------------------------------------
def test_the_snapshot_key_covers_what_the_twin_and_installers_import_and_nothing_else(tmp_path):
    from twin.snapshots import code_files
    for path, text in {"twin/__init__.py": "", "twin/a.py": "def f():\n    from stack import kube\n",
                       "twin/standins/__init__.py": "", "twin/standins/s.py": "import stack.wait\n",
                       "twin/x.yaml": "k: v\n", "installers/__init__.py": "", "installers/i.py": "from stack.checks import c\n",
                       "stack/__init__.py": "", "stack/kube.py": "", "stack/wait.py": "from stack import retry\n",
                       "stack/retry.py": "", "stack/checks.py": "", "stack/security.py": "",
                       "stack/profile_schema.yaml": "", "fixtures/plugin.py": ""}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    got = {p.relative_to(tmp_path).as_posix() for p in code_files(tmp_path)}
    assert {"twin/a.py", "twin/standins/s.py", "installers/i.py", "stack/kube.py", "stack/wait.py", "stack/retry.py",
            "stack/checks.py", "stack/__init__.py", "twin/x.yaml", "stack/profile_schema.yaml"} <= got
    assert "stack/security.py" not in got and "fixtures/plugin.py" not in got      # a check the twin never runs


def test_every_fault_kind_has_its_strike_undo_and_check():
    from twin.faults import KINDS
    from twin.strikes import STRIKES
    assert set(STRIKES) == set(KINDS)


# -- the guard ----------------------------------------------------------------------------------------------------------
def test_a_test_not_marked_twin_cannot_start_one():
    from stack.profile import Profile
    from twin import Twin
    with pytest.raises(AssertionError, match="starts a twin but is not marked `twin`"):
        Twin(Profile.load("seed"), preinstalled=False).start()
    with pytest.raises(AssertionError, match="runs the suite on a twin but is not marked `twin`"):
        run_pytest("suites/acceptance", "--cluster", "twin")
    assert helpers.TWIN_REFUSED


# -- --twin-attach ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--twin-attach", "missing.json"], "--twin-attach only applies to --cluster twin"),
    (["--cluster", "twin", "--twin-attach", "missing.json"], "missing.json: no such file"),
    (["--cluster", "twin", "--twin-attach", "{handoff}", "--twin-fault", "cert-stuck"],
     "--twin-fault cannot strike a twin that is already running"),
])
def test_twin_attach_options_are_checked_before_anything_starts(tmp_path, args, message):
    handoff = tmp_path / "handoff.json"
    handoff.write_text("{}")
    out = subprocess.run([sys.executable, "-m", "pytest", "suites/acceptance", "--signoff-dir", str(tmp_path / "o"),
                          "--alluredir", str(tmp_path / "r"), *[a.format(handoff=handoff) for a in args]],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR and message in out.stderr, out.stderr[-2000:]


def test_twin_attach_to_a_twin_that_stopped_is_one_preflight_error(tmp_path):
    from stack.record import ClusterHandoff, write_handoff
    handoff = write_handoff(tmp_path, ClusterHandoff(provider="twin", kubeconfig=str(tmp_path / "gone.kubeconfig"),
                                                     context="twin", simulated=True,
                                                     install_env={"KSTACK_TWIN_PROFILE": str(ROOT / "profiles" /
                                                                                             "seed.yaml")}),
                            path=tmp_path / "handoff.json")
    assert handoff.stat().st_mode & 0o077 == 0                     # it may hold the twin's S3 key pair
    out = subprocess.run([sys.executable, "-m", "pytest", "suites/acceptance", "--cluster", "twin", "--twin-attach",
                          str(handoff), "--signoff-dir", str(tmp_path / "o"), "--alluredir", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:] + out.stderr[-2000:]
    assert "has stopped: its kubeconfig" in out.stderr and "python -m twin --profile P --handoff-out" in out.stderr
    out = subprocess.run([sys.executable, "-m", "pytest", "suites/acceptance", "--cluster", "twin", "--twin-attach",
                          str(handoff), "--profile", "latest", "--signoff-dir", str(tmp_path / "o"), "--alluredir",
                          str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR and "runs the profile" in out.stderr, out.stderr[-2000:]


class _RunningTwin:
    def __init__(self):
        self.stopped = False

    def stop(self):
        self.stopped = True


def test_a_worker_runs_one_shared_twin_at_a_time(tmp_path):
    """An idle twin costs CPU: asking for another profile's twin stops the running one (it restarts when asked)."""
    from tests.twinruns import SharedTwins
    twins = SharedTwins(tmp_path, tmp_path / "shared.jsonl", "gw0")
    seed = twins("seed")
    running = seed.twin = _RunningTwin()
    latest = twins("latest")
    assert running.stopped and seed.twin is None
    assert twins("seed") is seed and latest is twins("latest")


def test_at_most_the_slots_of_suite_runs_run_at_once(tmp_path, monkeypatch):
    """Three holders for two slots: the third waits until one of the first two leaves."""
    import threading
    monkeypatch.setattr(helpers, "SLOT_DIR", tmp_path)
    monkeypatch.setattr(helpers, "SUITE_SLOTS", 2)
    inside, most, release = [], [0], threading.Event()
    lock = threading.Lock()

    def hold():
        with helpers.suite_slot():
            with lock:
                inside.append(1)
                most[0] = max(most[0], len(inside))
            release.wait(5)
            with lock:
                inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    import time
    time.sleep(0.6)
    assert len(inside) == 2          # the third waits for a slot
    release.set()
    for t in threads:
        t.join(10)
    assert most[0] == 2 and inside == []


def test_the_snapshot_key_reads_the_upstream_manifests_content_not_their_place(tmp_path):
    """Two clones of the same code on one machine (a fresh clone's `make test`) share the snapshots; a changed
    upstream manifest makes a new one."""
    from stack.profile import Profile
    from twin.snapshots import directory
    profile = Profile.load("seed")
    here, there = tmp_path / "a" / "upstream", tmp_path / "b" / "upstream"
    for root in (here, there):
        (root / "kserve-v0.11.0").mkdir(parents=True)
        (root / "kserve-v0.11.0" / "kserve.yaml").write_text("kind: List\n")
    key = directory(profile, {"etcd": "/bin/etcd"}, here, tmp_path)
    assert directory(profile, {"etcd": "/bin/etcd"}, there, tmp_path) == key
    (there / "kserve-v0.11.0" / "kserve.yaml").write_text("kind: List\nitems: []\n")
    assert directory(profile, {"etcd": "/bin/etcd"}, there, tmp_path) != key


def test_the_shared_twins_summary_says_where_the_time_of_the_runs_went(tmp_path):
    import json

    from tests.twinruns import summary
    log = tmp_path / "shared-twins.jsonl"
    entries = [{"worker": "gw0", "profile": "seed", "twin": 1, "run": 1, "faults": [], "args": [], "seconds": 100.0,
                "suite_seconds": 55.0, "gate_seconds": 12.0, "verdict": "PASS", "health": []},
               {"worker": "gw0", "profile": "seed", "twin": 1, "run": 2, "faults": ["x"], "args": [], "seconds": 80.0,
                "suite_seconds": 45.0, "gate_seconds": 8.0, "verdict": "FAIL", "health": ["a leftover"]}]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    first, failed = summary(log)
    assert first.startswith("2 suite runs on 1 shared twins, 180 s (the suites' own 100 s, health gates 20 s")
    assert first.endswith("1 health gates failed (the twin was replaced)")
    assert "a leftover" in failed
