"""A phase that raised (its deadline ran out, or any error) is still recorded, with how long it ran, its budget and
that it did not finish: the checks' phases (fixtures.plugin.Phases) and the install's (installers.plan.Plan)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from fixtures.plugin import Phases
from installers.context import InstallContext, InstallError
from installers.plan import Plan
from reports.evaluation import build_signoff
from stack.failures import Category
from stack.profile import Profile
from stack.record import Phase, read_results_record
from stack.deadline import Deadline
from stack.wait import WaitTimeout


def _config(results_dir):
    """What Phases reads of a pytest config: the allure results directory (no xdist worker: "main")."""
    return SimpleNamespace(option=SimpleNamespace(allure_report_dir=str(results_dir)))


def test_a_check_phase_that_times_out_is_recorded_unfinished(tmp_path):
    phases = Phases(_config(tmp_path))
    with phases.over(Deadline(30, "predict")):
        pass
    with pytest.raises(WaitTimeout), phases.over(Deadline(0.05, "inference_service")) as budget:
        while not budget.expired():
            time.sleep(0.01)
        raise WaitTimeout("InferenceService iris not Ready", Category.PREDICT)
    with pytest.raises(KeyError), phases.over(Deadline(120, "certificate")):
        raise KeyError("status")
    recorded = {p.name: p for p in read_results_record(tmp_path).phases}
    assert recorded["predict"].finished is True and recorded["predict"].budget == 30
    timed_out = recorded["inference_service"]
    assert (timed_out.finished, timed_out.error_type, timed_out.budget) == (False, "WaitTimeout", 0.05)
    assert timed_out.seconds >= timed_out.budget
    assert (recorded["certificate"].finished, recorded["certificate"].error_type) == (False, "KeyError")
    statuses = {p["name"]: p["status"] for p in build_signoff(tmp_path)["phases"]}
    assert statuses == {"predict": "ok", "inference_service": "TIMED OUT", "certificate": "DID NOT FINISH"}


def test_an_install_that_fails_records_its_component_and_itself_unfinished(monkeypatch):
    recorded: list[Phase] = []

    def phase(name, seconds, budget, error=None):
        recorded.append(Phase(name, seconds, budget, finished=error is None,
                              error_type=type(error).__name__ if error else None))

    ctx = InstallContext(kube=SimpleNamespace(kubeconfig="/k", context=None), profile=Profile.load("seed"),
                         progress=lambda line: None, phase=phase)
    plan = Plan(ctx)
    first, second = plan.addons[0].name, plan.addons[1].name
    monkeypatch.setattr(plan, "_decide", lambda: {a.name: ("install", None) for a in plan.addons})

    def run(addon, *args):
        if addon.name == second:
            raise WaitTimeout(f"{second} not ready", Category.NOT_READY)
        return ""
    monkeypatch.setattr(plan, "_run", run)
    with pytest.raises(InstallError):
        plan.install()
    assert [(p.name, p.finished, p.error_type) for p in recorded] == [
        (f"install/{first}", True, None), (f"install/{second}", False, "WaitTimeout"), ("install", False, "InstallError")]
    assert all(p.budget == ctx.install_budget() for p in recorded)
