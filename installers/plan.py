"""The Plan: the profile's components in install order, each installed (or skipped) and gated on readiness before the
next, under ONE deadline for the whole install (budgets.install x timeout_scale).

Modes: auto  - install what is absent, skip what runs at the profile's version, refuse another running version;
       always - (re)apply every component (helm upgrade --install, server-side apply of every manifest);
       never  - write nothing; only read what runs.
"""
from __future__ import annotations

import time

from installers.addons import addon_for
from installers.base import Addon
from installers.context import InstallContext, InstallError
from stack.failures import Category, category_of
from stack.record import ComponentResult, Download, InstallResult
from stack.snapshot import Status
from stack.versions import normalise_version, same_version
from stack.deadline import Deadline

ACTIONS = {"skip": "skipped", "install": "installed", "reapply": "reapplied", "upgrade": "upgraded"}


def component_result(result: InstallResult, name: str) -> ComponentResult:
    return next(c for c in result.components if c.name == name)


def failed(error: BaseException, component: str | None, step: str) -> InstallError:
    """The InstallError of a failed step, naming the component, the step, the original error type and the cause's
    category (an InstallError raised deeper keeps what it already knew)."""
    if isinstance(error, InstallError) and error.component:
        return error
    cause = error.__cause__ if isinstance(error, InstallError) and error.__cause__ else error
    message = str(error)
    if component and not message.startswith(component):
        message = f"{component}: {message}"
    out = InstallError(message, category=category_of(error) or Category.INSTALL, component=component, step=step,
                       error_type=type(cause).__name__)
    out.__cause__ = error
    return out


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
            try:
                found = addon.installed_version(self.ctx)
            except Exception as e:
                raise failed(e, addon.name, "reading the running version") from e
            if self.ctx.mode == "never":
                action = "none"
            elif found is None:
                action = "install"
            elif same_version(found, wanted):
                action = "skip" if self.ctx.mode == "auto" else "reapply"
            elif self.ctx.mode == "auto":
                raise InstallError(f"{addon.name} {found} is running but the profile wants {normalise_version(wanted)}; "
                                   "rerun with --install always to upgrade", category=Category.INSTALL,
                                   component=addon.name, step="version check", error_type="InstallError")
            else:
                action = "upgrade"
            decisions[addon.name] = (action, found)
        return decisions

    def install(self) -> InstallResult:
        """Install (or skip) every component; an InstallError naming the component and the step when one fails.
        The install is a phase (and each component's part of it), recorded whether it finishes or not."""
        ctx = self.ctx
        budget = ctx.install_budget()
        deadline = ctx.deadline = Deadline(budget, "install")
        try:
            report = self._install(budget, deadline)
        except Exception as e:
            ctx.phase("install", deadline.elapsed(), budget, e)
            raise
        ctx.phase("install", report.seconds, budget)
        return report

    def _install(self, budget: float, deadline: Deadline) -> InstallResult:
        ctx = self.ctx
        report = InstallResult(ok=True, mode=ctx.mode, budget=budget)
        decisions = self._decide()
        for index, addon in enumerate(self.addons):
            action, found = decisions[addon.name]
            wanted = normalise_version(addon.component.version)
            start = time.monotonic()
            if action == "none":
                ctx.say(addon.name, f"install mode never: not installing ({found or 'absent'} on the cluster)")
                report.components.append(ComponentResult(addon.name, "none", 0.0, wanted, found))
                continue
            # Gate a skipped component only when something is installed after it (it depends on it). Otherwise its
            # readiness is what the acceptance suites check, test by test, rather than one install error.
            gate_skipped = any(decisions[a.name][0] in ("install", "reapply", "upgrade") for a in self.addons[index + 1:])
            try:
                detail = self._run(addon, action, found, wanted, gate_skipped, deadline)
            except Exception as e:
                ctx.phase(f"install/{addon.name}", time.monotonic() - start, budget, e)
                raise failed(e, addon.name, ctx.step) from e
            seconds = time.monotonic() - start
            if action != "skip" or gate_skipped:
                ctx.say(addon.name, f"ready ({seconds:.1f}s)")
            else:       # nothing waited for it here: say so, not "ready"
                ctx.say(addon.name, "readiness left to the acceptance checks")
            ctx.phase(f"install/{addon.name}", seconds, budget)
            report.components.append(ComponentResult(addon.name, ACTIONS[action], round(seconds, 3), wanted, found,
                                                     detail))
        report.seconds = round(deadline.elapsed(), 3)
        report.downloads = [Download(d.url, d.sha256, d.pinned) for d in ctx.downloads]
        return report

    def _run(self, addon: Addon, action: str, found: str | None, wanted: str, gate_skipped: bool,
             deadline: Deadline) -> str:
        """Install (or skip) one component and wait for it; the detail of its report line."""
        ctx = self.ctx
        if action == "skip":
            ctx.say(addon.name, f"already at {found}; skipping")
            if gate_skipped:
                addon.wait_ready(ctx, deadline, functional=False)     # read-only gate: no writes on a rerun
            return f"already at {found}"
        verb = {"install": "installing", "reapply": "re-applying", "upgrade": f"upgrading from {found} to"}[action]
        ctx.say(addon.name, f"{verb} {wanted}")
        ctx.step = "install"
        addon.install(ctx)
        ctx.say(addon.name, "waiting until ready")
        addon.wait_ready(ctx, deadline, functional=True)
        return ""

    def ready(self) -> dict[str, Status]:
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
