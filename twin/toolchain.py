"""Build the twin's binaries from source through the Go module proxy, pinned, into a cache keyed by version.

    python -m twin.toolchain            # build what is missing (what `make controlplane` runs), with progress
    python -m twin.toolchain --check    # say what is built and what is missing; exit 1 if anything is missing

A build is a small wrapper module that requires the upstream module at its pinned version and builds its main
packages. Upstream modules that replace their siblings with relative paths (k8s.io/kubernetes' ./staging,
etcd's ../api) cannot be `go install`ed; the wrapper replaces each such module with its published version, derived
from the downloaded go.mod rather than written by hand. The versions are data: twin/toolchain.yaml.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parent / "toolchain.yaml"
PROGRESS_EVERY = 20.0    # seconds between progress lines while `go build` runs
GO_REMEDY = ("install Go (https://go.dev/dl; any version from 1.21 fetches the toolchain a module needs through the "
             "module proxy) and make sure `go env GOPROXY` can reach a Go module proxy. Go is needed only for the "
             "self-tests and the twin: the suite against kind or an existing cluster needs only Python")


class ToolchainError(Exception):
    """A build that cannot run or failed: one sentence with the cause, and the remedy."""

    def __init__(self, message: str, remedy: str = GO_REMEDY):
        super().__init__(f"{message}\n  remedy: {remedy}")
        self.message, self.remedy = message, remedy


@dataclass(frozen=True)
class Build:
    """One wrapper module: an upstream module at a version and the main packages built from it."""
    name: str
    module: str
    version: str
    packages: tuple[str, ...]
    binaries: dict = field(default_factory=dict, hash=False)      # package -> binary name (default: last element)
    relative_replace_version: str | None = None
    version_packages: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    data: dict = field(default_factory=dict, hash=False)          # name -> directory in the module, copied
    sum: str | None = None      # the module's pinned go.sum hash, for a module the checksum database does not know

    def binary_name(self, package: str) -> str:
        return self.binaries.get(package) or package.rstrip("/").rsplit("/", 1)[-1]

    @property
    def binary_names(self) -> list[str]:
        return [self.binary_name(p) for p in self.packages]

    def import_path(self, package: str) -> str:
        return self.module if package in (".", "") else f"{self.module}/{package}"

    @property
    def key(self) -> str:
        """The cache key: the version plus a hash of the recipe, so a changed recipe rebuilds."""
        fields = {"module": self.module, "version": self.version, "packages": self.packages,
                  "relative_replace_version": self.relative_replace_version, "version_packages": self.version_packages,
                  "ldflags": self.ldflags, "data": self.data, "sum": self.sum}
        # Only the fields a recipe sets: a new optional field does not invalidate every cached build.
        recipe = json.dumps({k: v for k, v in fields.items() if v}, sort_keys=True)
        return f"{self.name}-{self.version}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"

    def _fmt(self, template: str) -> str:
        m = re.match(r"v(\d+)\.(\d+)\.(\d+)", self.version)
        major, minor, patch = m.groups() if m else ("0", "0", "0")
        return template.format(version=self.version, version_no_v=self.version.lstrip("v"), major=major,
                               minor=minor, patch=patch)

    def ldflag_string(self) -> str:
        flags = ["-s", "-w"]
        m = re.match(r"v(\d+)\.(\d+)", self.version)
        for pkg in self.version_packages:
            flags += [f"-X {pkg}.gitVersion={self.version}", f"-X {pkg}.gitMajor={m.group(1)}",
                      f"-X {pkg}.gitMinor={m.group(2)}", f"-X {pkg}.gitTreeState=clean",
                      f"-X {pkg}.buildDate=1970-01-01T00:00:00Z"]
        flags += [self._fmt(f) for f in self.ldflags]
        return " ".join(flags)

    def replace_lines(self, upstream_go_mod: str) -> list[str]:
        """The wrapper's replace directives, derived from the upstream module's own go.mod.

        A relative replace (`k8s.io/api => ./staging/src/k8s.io/api`) becomes the published module at the derived
        version; a replace to a placeholder that guards against a dependency (etcd's FORBIDDEN_DEPENDENCY) is
        dropped; a replace to another module version is kept as it is (Go ignores a dependency's replaces).
        """
        out = []
        for old, new in _replaces(upstream_go_mod):
            if new.startswith(("./", "../")):
                if "FORBIDDEN" in new:
                    continue
                if self.relative_replace_version is None:
                    raise ToolchainError(f"{self.module}@{self.version} replaces {old} with the path {new} and the "
                                         f"recipe gives no published version for it",
                                         "add relative_replace_version to its entry in twin/toolchain.yaml")
                out.append(f"{old} => {old.split(' ')[0]} {self._fmt(self.relative_replace_version)}")
            else:
                out.append(f"{old} => {new}")
        return out


def _replaces(go_mod: str) -> list[tuple[str, str]]:
    """(old, new) pairs of every replace directive, single-line or in a block."""
    pairs = []
    in_block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if in_block:
            if line == ")":
                in_block = False
                continue
            body = line
        elif line.startswith("replace ("):
            in_block = True
            continue
        elif line.startswith("replace "):
            body = line[len("replace "):]
        else:
            continue
        if "=>" in body:
            old, new = (s.strip() for s in body.split("=>", 1))
            pairs.append((old, new))
    return pairs


def load_builds(path: Path = RECIPES) -> dict[str, Build]:
    data = yaml.safe_load(path.read_text())
    builds = {}
    for name, spec in (data.get("builds") or {}).items():
        builds[name] = Build(name=name, module=spec["module"], version=spec["version"],
                             packages=tuple(spec["packages"]), binaries=dict(spec.get("binaries") or {}),
                             relative_replace_version=spec.get("relative_replace_version"),
                             version_packages=tuple(spec.get("version_packages") or ()),
                             ldflags=tuple(spec.get("ldflags") or ()), data=dict(spec.get("data") or {}),
                             sum=spec.get("sum"))
    return builds


def cache_root() -> Path:
    base = os.environ.get("KSTACK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kstack")
    return Path(base) / "twin-bin"


@dataclass
class Built:
    """What a finished build left in the cache (its build.json)."""
    build: str
    module: str
    version: str
    go_version: str
    seconds: float
    binaries: dict[str, str]     # name -> absolute path
    data: dict[str, str] = field(default_factory=dict)   # name -> absolute path of a directory copied from upstream


def built(build: Build, root: Path | None = None) -> Built | None:
    """The cached result of `build`, or None when it is not (completely) built."""
    record = (root or cache_root()) / build.key / "build.json"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    result = Built(**data)
    if not all(Path(p).is_file() and os.access(p, os.X_OK) for p in result.binaries.values()):
        return None
    if not all(Path(p).is_dir() for p in result.data.values()):
        return None
    return result


def binaries(root: Path | None = None, builds: dict[str, Build] | None = None) -> dict[str, Path]:
    """Every built binary and data directory by name; raises ToolchainError naming what is missing and the remedy."""
    builds = builds or load_builds()
    out, missing = {}, []
    for build in builds.values():
        result = built(build, root)
        if result is None:
            missing.append(f"{build.name} {build.version}")
            continue
        out.update({name: Path(p) for name, p in result.binaries.items()})
        out.update({f"{build.name}/{name}": Path(p) for name, p in result.data.items()})
    if missing:
        raise ToolchainError(f"the twin's binaries are not built: {', '.join(missing)} "
                             f"(cache {root or cache_root()})",
                             "run `make controlplane` (builds them from the Go module proxy; about 15 minutes on "
                             "a fresh 2-core machine, then cached)")
    return out


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise ToolchainError("Go is not on PATH: the twin's control plane is built from source with it")
    return go


def _run_go(go: str, args: list[str], cwd: Path, env: dict, what: str) -> str:
    proc = subprocess.run([go, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"`go {' '.join(args[:2])}` failed while {what}:\n    "
                             + "\n    ".join(_first_errors(proc.stderr or proc.stdout)),
                             _remedy_for(proc.stderr or proc.stdout))
    return proc.stdout


def _first_errors(text: str, limit: int = 8) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("go: downloading")]
    return lines[:limit] or ["(no output)"]


def _remedy_for(text: str) -> str:
    if re.search(r"dial tcp|no such host|connection refused|i/o timeout|TLS handshake|proxyconnect", text):
        return ("the Go module proxy is unreachable: check `go env GOPROXY` and the network (this machine may use "
                "only the Go module proxy)")
    if "not found" in text or "unknown revision" in text or "invalid version" in text:
        return "the proxy does not serve that version: pick another served version in twin/toolchain.yaml"
    return GO_REMEDY


def build(spec: Build, root: Path | None = None, log=print) -> Built:
    """Build `spec` into the cache unless it is there already."""
    done = built(spec, root)
    if done is not None:
        log(f"twin: {spec.name} {spec.version} already built ({', '.join(done.binaries)})")
        return done
    go = _go()
    target = (root or cache_root()) / spec.key
    work = target / "src"
    shutil.rmtree(target, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "GOFLAGS": "-buildvcs=false -mod=mod", "CGO_ENABLED": "0"}
    if spec.sum:
        # sum.golang.org does not answer for this module: skip it there, check the pinned hash here instead.
        env["GONOSUMDB"] = ",".join(filter(None, [env.get("GONOSUMDB"), spec.module]))
    began = time.monotonic()
    log(f"twin: building {spec.name} {spec.version} ({', '.join(spec.binary_names)}) from {spec.module}")
    go_version = _run_go(go, ["env", "GOVERSION"], work, env, "reading the Go version").strip()
    info = json.loads(_run_go(go, ["mod", "download", "-json", f"{spec.module}@{spec.version}"], work, env,
                              f"downloading {spec.module}@{spec.version}"))
    if spec.sum and info.get("Sum") != spec.sum:
        raise ToolchainError(f"{spec.module}@{spec.version} has hash {info.get('Sum')}, not the pinned {spec.sum}",
                             "the proxy served different content for a pinned version: do not build it; check the "
                             "module proxy")
    upstream_mod = Path(info["GoMod"]).read_text()
    go_line = re.search(r"^go\s+(\S+)", upstream_mod, re.M)
    lines = ["module kstack.local/twin-build", "", f"go {go_line.group(1) if go_line else '1.21'}", "",
             f"require {spec.module} {spec.version}", ""]
    replaces = spec.replace_lines(upstream_mod)
    if replaces:
        lines += ["replace ("] + [f"\t{r}" for r in replaces] + [")"]
    (work / "go.mod").write_text("\n".join(lines) + "\n")
    # A file importing the main packages keeps `go mod tidy` from dropping what they need.
    imports = "\n".join(f'\t_ "{spec.import_path(p)}"' for p in spec.packages)
    (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    # It downloads every module the build needs, minutes on a cold cache: a progress line says it is still going.
    with _progress(log, lambda seconds: f"twin:   resolving the dependencies (go mod tidy), {seconds:.0f}s"):
        _run_go(go, ["mod", "tidy"], work, env, f"resolving the dependencies of {spec.module}@{spec.version}")
    bin_dir = target / "bin"
    bin_dir.mkdir()
    outputs = {}
    for package in spec.packages:
        name = spec.binary_name(package)
        _go_build(go, spec, package, bin_dir / name, work, env, log)
        outputs[name] = str(bin_dir / name)
    data = {}
    for name, rel in spec.data.items():
        shutil.copytree(Path(info["Dir"]) / rel, target / "data" / name)
        data[name] = str(target / "data" / name)
    result = Built(build=spec.name, module=spec.module, version=spec.version, go_version=go_version,
                   seconds=round(time.monotonic() - began, 1), binaries=outputs, data=data)
    (target / "build.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    log(f"twin: built {spec.name} {spec.version} in {result.seconds:.0f}s")
    return result


@contextlib.contextmanager
def _progress(log, line: Callable[[float], str]):
    """Log line(seconds so far) every PROGRESS_EVERY seconds while the block runs."""
    began = time.monotonic()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(PROGRESS_EVERY):
            log(line(time.monotonic() - began))

    threading.Thread(target=report, daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def _go_build(go: str, spec: Build, package: str, output: Path, work: Path, env: dict, log) -> None:
    """`go build -v` with a progress line every PROGRESS_EVERY seconds (packages compiled so far)."""
    args = [go, "build", "-v", "-trimpath", "-ldflags", spec.ldflag_string(), "-o", str(output),
            spec.import_path(package)]
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    compiled, tail = [0], []
    began = time.monotonic()
    with _progress(log, lambda seconds: f"twin:   {output.name}: {compiled[0]} packages compiled, {seconds:.0f}s"):
        for line in proc.stderr:
            compiled[0] += 1
            tail = (tail + [line.rstrip()])[-40:]
        proc.wait()
    if proc.returncode != 0:
        errors = [ln for ln in tail if ln and not re.match(r"^[\w./-]+$", ln)]
        raise ToolchainError(f"`go build {spec.import_path(package)}` failed:\n    " + "\n    ".join(errors[-12:]),
                             _remedy_for("\n".join(tail)))
    log(f"twin:   {output.name} built ({compiled[0]} packages, {time.monotonic() - began:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.toolchain", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report what is built; build nothing")
    parser.add_argument("--only", action="append", default=[], help="build only this entry (repeatable)")
    args = parser.parse_args(argv)
    builds = load_builds()
    unknown = [n for n in args.only if n not in builds]
    if unknown:
        print(f"twin: error: no build named {', '.join(unknown)}; known: {', '.join(builds)}", file=sys.stderr)
        return 2
    selected = [builds[n] for n in (args.only or builds)]
    if args.check:
        missing = 0
        for spec in selected:
            result = built(spec)
            print(f"{spec.name} {spec.version}: " + (f"built ({result.go_version}, {result.seconds:.0f}s)"
                                                      if result else "missing"))
            missing += result is None
        return 1 if missing else 0
    began = time.monotonic()
    try:
        for spec in selected:
            build(spec, log=lambda m: print(m, flush=True))
    except ToolchainError as e:
        print(f"twin: error: {e}", file=sys.stderr)
        return 1
    print(f"twin: binaries ready in {cache_root()} ({time.monotonic() - began:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
