"""The root cause of a failure: when a check fails while a component it needs is not running, that component is the
cause, and the failure says so (`blocked_by` its criterion, with what was observed of it) rather than reading as a
defect of the check.

A KServe controller in ImagePullBackOff makes the Iris checks fail with "webhook not reachable" or "not Ready in
time"; the failure is real (the model does not answer), but the reason is the controller. The suite's plugin
(fixtures/blocking.py) looks once at the components a failed test needs, at the moment it fails, and turns the
failure into a BlockedFailure carrying the blocker's criterion, category and observed state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.checks import deployed, workloads
from stack.criteria import COMPONENT_CRITERION
from stack.failures import Category, CheckFailure
from stack.deadline import Deadline
from stack.wait import look

if TYPE_CHECKING:
    from stack.kube import Kube
    from stack.profile import Profile

LOOK_SECONDS = 20      # one list of each source of the components' workloads; never a wait


@dataclass(frozen=True)
class Blocker:
    """A component a failed check needs, seen not running."""
    component: str
    criterion: str                 # the component's criterion (AC-KSERVE-CONTROLLER)
    observed: str                  # what its workloads showed: the root cause
    category: Category             # the root cause's category (image-pull, crash-loop, not-ready)


class BlockedFailure(CheckFailure):
    """A check that failed while a component it needs was not running: filed under the blocker's category."""

    def __init__(self, blocker: Blocker, original: BaseException):
        self.blocker = blocker
        seen = getattr(original, "text", None) or str(original)
        super().__init__(f"blocked by {blocker.criterion} ({blocker.component}): {blocker.observed}. "
                         f"The check saw: {seen}", blocker.category)


def find_missing(kube: "Kube", profile: "Profile", components: list[str]) -> Blocker | None:
    """The first of these components (in install order) whose workloads on a model's data path (`data_path`) are
    absent or scaled below what the profile expects, or None. On an installed stack that stays so (checks.deployed),
    so a check that needs the component fails at once, before it waits for anything: a missing ingress gateway
    blocks every predict call."""
    for comp in profile.install_order():
        if comp.name not in components or not comp.workloads or comp.name not in COMPONENT_CRITERION:
            continue
        needed = [w for w in comp.workloads if w.data_path]
        if not needed:
            continue
        status, _ = look(kube, deployed(needed, name=f"{comp.name} deployed"), Deadline(LOOK_SECONDS, "prerequisites"))
        if status.terminal:
            return Blocker(comp.name, COMPONENT_CRITERION[comp.name], status.terminal,
                           status.category or Category.NOT_READY)
    return None


def find_blocker(kube: "Kube", profile: "Profile", components: list[str]) -> Blocker | None:
    """The first of these components (in install order) whose workloads are not Available now, or None."""
    for comp in profile.install_order():
        if comp.name not in components or not comp.workloads or comp.name not in COMPONENT_CRITERION:
            continue
        status, _ = look(kube, workloads(comp.workloads, name=f"{comp.name} workloads"),
                         Deadline(LOOK_SECONDS, "root cause"))
        if not status.done:
            return Blocker(comp.name, COMPONENT_CRITERION[comp.name], status.observed,
                           status.category or Category.NOT_READY)
    return None


def require_deployed(kube: "Kube", profile: "Profile", what: str) -> None:
    """Before `what` (a model deploy) starts: every workload on a model's data path deployed as the profile expects,
    else a BlockedFailure at once, naming the missing one (one look, no wait)."""
    blocker = find_missing(kube, profile, list(profile.components))
    if blocker is not None:
        raise BlockedFailure(blocker, CheckFailure(f"{what} was not started: a component it needs is not deployed "
                                                   "as the profile expects, and nothing will deploy it",
                                                   blocker.category))
