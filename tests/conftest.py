"""The self-tests' session: the runs and twins several tests share (tests/twinruns.py), how xdist schedules them
(tests/scheduling.py), and a guard that keeps twins out of the tests not marked `twin` (`make test-fast`)."""
from __future__ import annotations

import os
import random

import pytest

from tests import helpers, twinruns
from tests.scheduling import base_nodeid


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config) -> None:
    # One seed for the whole session: xdist's workers inherit it (they must collect the same tests in the same order).
    if not _is_worker(config) and not os.environ.get(twinruns.FAULT_SEED_ENV):
        os.environ[twinruns.FAULT_SEED_ENV] = str(random.SystemRandom().randrange(1, 10 ** 6))


def pytest_report_header(config) -> list[str]:
    return [f"shared twins: fault runs in an order shuffled by {twinruns.FAULT_SEED_ENV}="
            f"{os.environ.get(twinruns.FAULT_SEED_ENV)} (set it to repeat an order)"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """In an xdist worker under --dist loadgroup: a test's xdist_group goes into its nodeid (`...::test@group`),
    which is how the scheduler sees the group. xdist 3.8 writes it to `item._nodeid`, which pytest 9 no longer
    reads (a node's id is `item._id`): without this, every group's tests were spread over the workers."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and base_nodeid(item.nodeid) == item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "loadgroup":
        from tests.scheduling import LongestFirst
        return LongestFirst(config, log, seed=twinruns.fault_seed())
    return None


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory, worker_id) -> twinruns.SharedRuns:
    return twinruns.SharedRuns(twinruns.session_root(tmp_path_factory, worker_id))


@pytest.fixture(scope="session")
def shared_twins(tmp_path_factory, worker_id):
    twins = twinruns.SharedTwins(tmp_path_factory.mktemp("shared-twins"),
                                 twinruns.session_root(tmp_path_factory, worker_id) / twinruns.TWIN_LOG, worker_id)
    yield twins
    twins.stop()


@pytest.fixture(autouse=True)
def _twins_only_where_marked(request, monkeypatch):
    """A test not marked `twin` may not start one, in this process or in a suite run: `make test-fast` (-m "not
    twin") must stay free of twins, and a twin test unmarked would slip into it."""
    if request.node.get_closest_marker("twin"):
        yield
        return
    from twin.cluster import Twin

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a twin but is not marked `twin`")
    monkeypatch.setattr(Twin, "start", refuse)
    monkeypatch.setattr(helpers, "TWIN_REFUSED", request.node.nodeid)
    yield


def pytest_terminal_summary(terminalreporter, config) -> None:
    if _is_worker(config):
        return
    root = config._tmp_path_factory.getbasetemp() / "shared-runs"
    lines = twinruns.summary(root / twinruns.TWIN_LOG)
    if lines:
        terminalreporter.section("shared twins")
        for line in lines:
            terminalreporter.write_line(line)
