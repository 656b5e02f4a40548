"""Helm releases through the `helm` CLI (a subprocess): `helm upgrade --install`, `helm uninstall`.

`--wait` only where the profile says `wait: true` (never on the Istio gateway on kind: its LoadBalancer never gets an
address); objects in `ready_after` are waited for with stack.wait instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import yaml

from installers.base import InstallContext, InstallError, split_ref
from stack import readiness, retry
from stack.redact import scrub
from stack.wait import Deadline, TerminalState, WaitTimeout, wait_for

INSTALL_DOC = "https://helm.sh/docs/intro/install/"
MISSING_HELM = ("helm is not installed (no `helm` on PATH); the {what} needs helm v3: install it from "
                f"{INSTALL_DOC} (or run with --install never against a cluster that already has the stack)")
_checked: dict[str, str] = {}     # helm path -> version, checked once per process


def find_helm(ctx: InstallContext, what: str = "install") -> str:
    path = shutil.which("helm", path=ctx.env.get("PATH", os.defpath))
    if not path:
        raise InstallError(MISSING_HELM.format(what=what))
    if path not in _checked:
        out = _run(ctx, [path, "version", "--short"], timeout=60, what="helm version")
        version = out.stdout.strip()
        if not version.startswith("v3."):
            raise InstallError(f"{path} is helm {version or '(unknown version)'}; helm v3 is needed: {INSTALL_DOC}")
        _checked[path] = version
    return path


def _run(ctx: InstallContext, argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, env=dict(ctx.env), capture_output=True, text=True, timeout=max(timeout, 1))
    except FileNotFoundError:
        raise InstallError(MISSING_HELM.format(what=what)) from None
    except subprocess.TimeoutExpired as e:
        raise InstallError(f"{what}: helm did not finish in {timeout:.0f}s; stderr: "
                           f"{scrub((e.stderr or b'').decode() if isinstance(e.stderr, bytes) else (e.stderr or ''))}") from None
    if proc.returncode != 0:
        raise InstallError(f"{what} failed (helm exit {proc.returncode}): {scrub(proc.stderr.strip() or proc.stdout.strip())}")
    return proc


def upgrade_command(helm: str, release: dict, values_file: str, ctx: InstallContext, timeout_seconds: int) -> list[str]:
    argv = [helm, "upgrade", "--install", release["release"], release["chart"]]
    if release.get("repo") and not release["chart"].startswith("oci://"):
        argv += ["--repo", release["repo"]]
    argv += ["--version", str(release["version"]), "--namespace", release["namespace"]]
    if release.get("create_namespace"):
        argv.append("--create-namespace")
    if release.get("wait"):
        argv += ["--wait", "--timeout", f"{max(int(timeout_seconds), 1)}s"]
    if ctx.kubeconfig:
        argv += ["--kubeconfig", str(ctx.kubeconfig)]
    if ctx.context:
        argv += ["--kube-context", ctx.context]
    argv += ["-f", values_file]
    return argv


def install_release(ctx: InstallContext, component: str, release: dict, deadline: Deadline) -> None:
    helm = find_helm(ctx)
    with tempfile.NamedTemporaryFile("w", prefix=f"kstack-{release['release']}-", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(release.get("values") or {}, f, sort_keys=False)
        values_file = f.name
    what = f"helm upgrade --install {release['release']} ({release['chart']} {release['version']})"
    try:
        ctx.say(component, f"{what} in {release['namespace']}{' --wait' if release.get('wait') else ''}")
        retry.call(lambda: _run(ctx, upgrade_command(helm, release, values_file, ctx, deadline.remaining()),
                                timeout=deadline.remaining() + 30, what=what),
                   what=what, is_transient=retry.is_install_race, deadline=deadline)
    finally:
        os.unlink(values_file)
    if release.get("ready_after"):
        wait_ready_after(ctx, component, release["ready_after"], deadline)


def wait_ready_after(ctx: InstallContext, component: str, refs: list[str], deadline: Deadline) -> None:
    """Wait for Deployments named NS/NAME (what helm --wait would have done, without the LoadBalancer check)."""
    by_ns: dict[str, list[tuple[str, str, str]]] = {}
    for ref in refs:
        ns, name = split_ref(ref)
        by_ns.setdefault(ns or "default", []).append(("Deployment", ns or "default", name))
    for ns, items in by_ns.items():
        ctx.say(component, f"waiting for {', '.join(f'{n}/{m}' for _, n, m in items)}")
        check = readiness.workloads_check(items)
        try:
            wait_for(ctx.kube, readiness.workload_sources(ns), lambda s: check(s), deadline=deadline,
                     describe=f"{component}: {', '.join(m for _, _, m in items)} ready")
        except (WaitTimeout, TerminalState) as e:
            raise InstallError(str(e)) from None


def uninstall_release(ctx: InstallContext, component: str, release: dict) -> bool:
    """helm uninstall; False when the release was not there (idempotent)."""
    helm = find_helm(ctx, what="delete")
    argv = [helm, "uninstall", release["release"], "--namespace", release["namespace"]]
    if ctx.kubeconfig:
        argv += ["--kubeconfig", str(ctx.kubeconfig)]
    if ctx.context:
        argv += ["--kube-context", ctx.context]
    try:
        _run(ctx, argv, timeout=ctx.install_budget(), what=f"helm uninstall {release['release']}")
    except InstallError as e:
        if "not found" in str(e):
            return False
        raise
    ctx.say(component, f"helm uninstall {release['release']}")
    return True


def reset_version_check() -> None:
    _checked.clear()
