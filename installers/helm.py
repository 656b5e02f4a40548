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

from installers.context import InstallContext, InstallError, gate
from stack import checks, retry
from stack.checks import split_ref
from stack.profile import WorkloadRef
from stack.redact import scrub
from stack.deadline import Deadline

INSTALL_DOC = "https://helm.sh/docs/intro/install/"
MISSING_HELM = ("helm is not installed (no `helm` on PATH); the {what} needs helm v3: install it from "
                f"{INSTALL_DOC} (or run with --install never against a cluster that already has the stack)")
# Homebrew's `helm` formula is Helm v4 since its release; v3 stays as the keg-only `helm@3` (Formula/h/helm@3.rb in
# Homebrew/homebrew-core), which is not on PATH until put there.
HELM3_REMEDY = (f"install Helm v3 ({INSTALL_DOC}) and put it first on PATH (Homebrew: `brew install helm@3`, then "
                "`export PATH=\"$(brew --prefix helm@3)/bin:$PATH\"`: Homebrew's `helm` is v4)")
_checked: dict[str, str] = {}     # helm path -> version, checked once per process


class HelmVersionError(Exception):
    """The helm found is not helm v3 (or does not say which helm it is)."""


def helm_version(path: str, env) -> str:
    """`helm version --short` of this binary (v3.x.y+g...), or HelmVersionError.

    Only helm v3 is accepted: the profiles' charts, values and flags were verified with helm v3 only."""
    if path not in _checked:
        try:
            proc = subprocess.run([path, "version", "--short"], env=dict(env), capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HelmVersionError(f"`{path} version --short` could not run: {e}") from None
        version = proc.stdout.strip()
        if proc.returncode != 0:
            raise HelmVersionError(f"`{path} version --short` failed (exit {proc.returncode}): "
                                   f"{scrub(proc.stderr.strip() or version)[:200]}")
        if not version.startswith("v3."):
            raise HelmVersionError(f"{path} is helm {version or '(unknown version)'}; helm v3 is needed")
        _checked[path] = version
    return _checked[path]


def find_helm(ctx: InstallContext, what: str = "install") -> str:
    path = shutil.which("helm", path=ctx.env.get("PATH", os.defpath))
    if not path:
        raise InstallError(MISSING_HELM.format(what=what))
    try:
        helm_version(path, ctx.env)
    except HelmVersionError as e:
        raise InstallError(f"{e}: {HELM3_REMEDY}") from None
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
                   what=what, layer="helm", is_transient=retry.race_signature, retries=ctx.kube.retries,
                   deadline=deadline)
    finally:
        os.unlink(values_file)
    if release.get("ready_after"):
        wait_ready_after(ctx, component, release["ready_after"], deadline)


def ready_after_check(component: str, refs: list[str]) -> checks.Check:
    """Deployments named NS/NAME Ready (what helm --wait would have done, without the LoadBalancer check)."""
    workloads = [WorkloadRef("Deployment", *_namespace_and_name(ref)) for ref in refs]
    return checks.workloads(workloads, name=f"{component}: {', '.join(w.name for w in workloads)} ready")


def _namespace_and_name(ref: str) -> tuple[str, str]:
    ns, name = split_ref(ref)
    return ns or "default", name


def wait_ready_after(ctx: InstallContext, component: str, refs: list[str], deadline: Deadline) -> None:
    ctx.say(component, f"waiting for {', '.join(refs)}")
    gate(ctx, ready_after_check(component, refs), deadline)


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
