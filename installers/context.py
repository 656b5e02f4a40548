"""What every install step receives and raises: the InstallContext (cluster, profile, mode, budget, progress,
downloads), InstallError, Download, and `gate` (a check waited on as an install gate). installers/helm.py,
installers/manifests.py and the Addons of installers/base.py all build on it; it imports none of them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from stack.checks import Check
from stack.failures import Category, CheckFailure
from stack.kube import Kube
from stack.profile import Profile
from stack.deadline import Deadline
from stack.wait import wait_for

MODES = ("auto", "always", "never")
DEFAULT_CACHE_DIR = Path("~/.cache/kstack/manifests")


class InstallError(Exception):
    """An install step that failed, as a sentence naming the component, the step and the cause.

    `category` is the category of the cause (a CRD that never became Established: CRD); the Plan fills in the
    component, the step and the type of the original error."""

    def __init__(self, message: str, *, category: Category | None = None, component: str | None = None,
                 step: str | None = None, error_type: str | None = None):
        super().__init__(message)
        self.category, self.component, self.step, self.error_type = category, component, step, error_type


@dataclass
class Download:
    url: str                 # the URL in the profile
    sha256: str
    pinned: bool             # True when checked against the profile's sha256
    source: str = ""         # where it was fetched from (the mirror URL when a mirror is set)
    cached: bool = False     # served from the cache dir this time


def _print_progress(message: str) -> None:
    print(message, flush=True)


def _no_phase(name: str, seconds: float, budget: float, error: BaseException | None = None) -> None:
    pass


@dataclass
class InstallContext:
    kube: Kube
    profile: Profile
    mode: str = "auto"                                  # auto | always | never
    timeout_scale: float = 1.0
    kubeconfig: str | Path | None = None                # for helm; default: the Kube's kubeconfig
    context: str | None = None                          # for helm; default: the Kube's context
    progress: Callable[[str], None] = _print_progress
    # (name, seconds, budget[, error]): a timed phase; with `error`, one that raised it before it finished
    phase: Callable[..., None] = _no_phase
    cache_dir: Path | None = None                       # default: $KSTACK_CACHE_DIR or ~/.cache/kstack/manifests
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    downloads: list[Download] = field(default_factory=list)   # filled by manifest fetches
    fetches: list[str] = field(default_factory=list)          # every network fetch of this install (not cache hits)
    deadline: Deadline | None = None                    # the one install deadline; set by Plan.install
    step: str = ""                                      # the step under way, for the record of a failure

    def __post_init__(self):
        if self.mode not in MODES:
            raise InstallError(f"install mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.kubeconfig is None:
            self.kubeconfig = self.kube.kubeconfig
        if self.context is None:
            self.context = self.kube.context
        if self.cache_dir is None:
            self.cache_dir = Path(self.env.get("KSTACK_CACHE_DIR") or DEFAULT_CACHE_DIR)
        self.cache_dir = Path(self.cache_dir).expanduser()
        self._started = time.monotonic()

    def install_budget(self) -> float:
        return float(self.profile.budgets["install"]) * self.timeout_scale

    def current_deadline(self) -> Deadline:
        if self.deadline is None:
            self.deadline = Deadline(self.install_budget(), "install")
        return self.deadline

    def say(self, component: str, message: str) -> None:
        """Progress line: "[kserve 12.3s] applying kserve.yaml (52 objects)" (seconds since the install started)."""
        self.progress(f"[{component} {time.monotonic() - self._started:.1f}s] {message}")


def gate(ctx: InstallContext, check: Check | None, deadline: Deadline, describe: str | None = None) -> None:
    """Wait for a check as an install gate: its failure is an InstallError carrying the check's category."""
    if check is None:
        return
    try:
        wait_for(ctx.kube, check, deadline, describe)
    except CheckFailure as e:
        raise InstallError(e.text, category=e.category) from e
