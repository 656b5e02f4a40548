"""Twin-backed fixtures for the installer tests: a fresh twin, the helm shim on PATH, the file:// manifest mirror."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack.profile import Profile


INSTALL_SCALE = 0.4


@dataclass
class Env:
    twin: object
    profile: Profile
    env: dict
    helm_log: Path
    cache: Path
    mirror_dir: Path
    lines: list

    def ctx(self, profile: Profile | None = None, **kw):
        from installers.context import InstallContext
        from stack.kube import Kube
        kube = kw.pop("kube", None) or Kube(self.twin.kubeconfig_path, self.twin.context)
        kw.setdefault("timeout_scale", 0.05)
        kw.setdefault("progress", self.lines.append)
        kw.setdefault("env", self.env)
        return InstallContext(kube=kube, profile=profile or self.profile, **kw)

    def helm_calls(self) -> list[dict]:
        if not self.helm_log.exists():
            return []
        return [json.loads(line) for line in self.helm_log.read_text().splitlines() if line.strip()]

    def writes(self) -> int:
        return self.twin.api.request_log.writes()


def make_env(tmp: Path, profile: Profile, faults=(), preinstalled=False, twin=None) -> Env:
    """The installers' environment for `profile` on a new twin, or on `twin` (its request log is then reset, so
    `writes()` and the log count this environment's requests only)."""
    from twin.cluster import Twin
    from twin.helm_stub import write_helm_shim
    from twin.manifest_mirror import write_mirror
    shim = write_helm_shim(tmp / "bin")
    mirror = write_mirror(profile, tmp / "mirror")
    if twin is None:
        twin = Twin(profile, faults=list(faults), preinstalled=preinstalled, workdir=tmp / "twin")
        twin.start()
    else:
        twin.api.request_log.reset()
    env = dict(os.environ)
    env.update({"PATH": f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}", "KSTACK_MANIFEST_MIRROR": mirror,
                "KSTACK_CACHE_DIR": str(tmp / "cache"), "KSTACK_TWIN_PROFILE": str(profile.path),
                "KSTACK_HELM_LOG": str(tmp / "helm.jsonl")})
    env.pop("KSTACK_REGISTRY_OVERRIDES", None)
    return Env(twin, profile, env, tmp / "helm.jsonl", tmp / "cache", tmp / "mirror", [])


# The small installer tests share one empty twin (each gets its own helm log, cache, mirror and request log), so
# they run on one worker, which starts that twin once.
BARE_TWIN = pytest.mark.xdist_group("installers-bare-twin")


@pytest.fixture(scope="module")
def bare_twin(tmp_path_factory):
    from twin.cluster import Twin
    twin = Twin(Profile.load("seed"), preinstalled=False, workdir=tmp_path_factory.mktemp("bare") / "twin").start()
    yield twin
    twin.stop()


@pytest.fixture
def fresh_env(tmp_path, bare_twin):
    """The installers on the module's empty twin (an object a test applies stays for the module: each applies its
    own names)."""
    e = make_env(tmp_path, Profile.load("seed"), twin=bare_twin)
    yield e
    bare_twin.api.faults.flaky_rate = 0.0


@pytest.fixture(scope="module")
def installed_seed(tmp_path_factory):
    """The seed stack installed by the Plan onto a fresh twin (shared by the read-mostly tests of a module)."""
    from installers.plan import Plan
    e = make_env(tmp_path_factory.mktemp("seed"), Profile.load("seed"))
    try:
        # An install from nothing on the real API server (CRDs established one by one, the real KServe controller):
        # 40% of the profile's budget, not the 5% the failure tests use, so a busy machine does not fail it.
        ctx = e.ctx(timeout_scale=INSTALL_SCALE)
        report = Plan(ctx).install()
        e.report = report
        yield e
    finally:
        e.twin.stop()
