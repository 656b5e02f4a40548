"""The Plan: the profile's components in install order, each installed (or skipped) and gated on readiness before the
next, under ONE deadline for the whole install (budgets.install x timeout_scale).

Modes: auto  - install what is absent, skip what runs at the profile's version, refuse another running version;
       always - (re)apply every component (helm upgrade --install, server-side apply of every manifest);
       never  - write nothing; only read what runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from installers.addons import addon_for
from installers.base import Addon, Download, InstallContext, InstallError, Readiness
from stack.versions import normalise_version, same_version
from stack.wait import Deadline


@dataclass
class ComponentReport:
    name: str
    action: str                      # installed | upgraded | reapplied | skipped | none
    seconds: float
    wanted: str
    found: str | None                # running version before the install (None: absent)
    detail: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class InstallReport:
    mode: str
    components: list[ComponentReport] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    seconds: float = 0.0
    budget: float = 0.0

    def component(self, name: str) -> ComponentReport:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "seconds": round(self.seconds, 3), "budget": self.budget,
                "components": [c.to_dict() for c in self.components],
                "downloads": [d.to_dict() for d in self.downloads]}


class Plan:
    def __init__(self, ctx: InstallContext):
        self.ctx = ctx
        self.addons: list[Addon] = [addon_for(c) for c in ctx.profile.install_order()]

    def addon(self, name: str) -> Addon:
        return next(a for a in self.addons if a.name == name)

    def _decide(self) -> dict[str, tuple[str, str | None]]:
        """Per component: (action, running version). Raises before anything is written on a version conflict."""
        decisions = {}
        for addon in self.addons:
            wanted = addon.component.version
            found = addon.installed_version(self.ctx)
            if self.ctx.mode == "never":
                action = "none"
            elif found is None:
                action = "install"
            elif same_version(found, wanted):
                action = "skip" if self.ctx.mode == "auto" else "reapply"
            elif self.ctx.mode == "auto":
                raise InstallError(f"{addon.name} {found} is running but the profile wants {normalise_version(wanted)}; "
                                   "rerun with --install always to upgrade")
            else:
                action = "upgrade"
            decisions[addon.name] = (action, found)
        return decisions

    def install(self) -> InstallReport:
        ctx = self.ctx
        budget = ctx.install_budget()
        deadline = ctx.deadline = Deadline(budget, "install")
        report = InstallReport(mode=ctx.mode, budget=budget)
        decisions = self._decide()
        for index, addon in enumerate(self.addons):
            action, found = decisions[addon.name]
            wanted = normalise_version(addon.component.version)
            start = time.monotonic()
            if action == "none":
                ctx.say(addon.name, f"install mode never: not installing ({found or 'absent'} on the cluster)")
                report.components.append(ComponentReport(addon.name, "none", 0.0, wanted, found))
                continue
            if action == "skip":
                ctx.say(addon.name, f"already at {found}; skipping")
                # Gate a skipped component only when something is installed after it (it depends on it). Otherwise
                # its readiness is what the acceptance suites check, test by test, rather than one install error.
                if any(decisions[a.name][0] in ("install", "reapply", "upgrade") for a in self.addons[index + 1:]):
                    addon.wait_ready(ctx, deadline, functional=False)     # read-only gate: no writes on a rerun
                detail = f"already at {found}"
            else:
                verb = {"install": "installing", "reapply": "re-applying", "upgrade": f"upgrading from {found} to"}[action]
                ctx.say(addon.name, f"{verb} {wanted}")
                try:
                    addon.install(ctx)
                    ctx.say(addon.name, "waiting until ready")
                    addon.wait_ready(ctx, deadline, functional=True)
                except InstallError as e:
                    raise InstallError(f"{addon.name}: {e}" if not str(e).startswith(addon.name) else str(e)) from e
                detail = ""
            seconds = time.monotonic() - start
            ctx.say(addon.name, f"ready ({seconds:.1f}s)")
            ctx.phase(f"install/{addon.name}", seconds, budget)
            report.components.append(ComponentReport(
                addon.name, {"skip": "skipped", "install": "installed", "reapply": "reapplied",
                             "upgrade": "upgraded"}[action], round(seconds, 3), wanted, found, detail))
        report.seconds = deadline.elapsed()
        report.downloads = list(ctx.downloads)
        ctx.phase("install", report.seconds, budget)
        return report

    def ready(self) -> dict[str, Readiness]:
        """One look at every component (non-blocking)."""
        return {a.name: a.ready(self.ctx) for a in self.addons}

    def delete(self) -> None:
        """Remove what the install created, components in reverse order."""
        if self.ctx.mode == "never":
            raise InstallError("install mode never: refusing to delete anything")
        for addon in reversed(self.addons):
            start = time.monotonic()
            self.ctx.say(addon.name, "deleting")
            addon.delete(self.ctx)
            self.ctx.phase(f"delete/{addon.name}", time.monotonic() - start, self.ctx.install_budget())

    def diagnostics(self) -> dict[str, list]:
        return {a.name: a.diagnostics(self.ctx) for a in self.addons}
