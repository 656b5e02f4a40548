"""Snapshots of a profile's installed stack (etcd's data and the PKI), so the next twin of that profile starts from
it in seconds instead of installing it again.

A snapshot is keyed by everything that shapes the installed state: the profile's file, the code that runs while the
stack is installed (every module of twin/ and installers/ and what they import of the project, found from their
import statements, so a change to a check that neither imports keeps the snapshots), the twin's data files, the
binaries and where the upstream manifests came from. One twin at a time creates a given snapshot (a file lock):
another twin of the same profile waits for it and restores it, instead of installing the same stack beside it.
"""
from __future__ import annotations

import ast
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from filelock import FileLock, Timeout

log = logging.getLogger("twin.snapshots")

ROOT = Path(__file__).resolve().parent.parent
FORMAT = "twin-snapshot/2"
KEPT = 3                     # per profile: each change of the code keys a new one (~80 MB each)
PACKAGES = ("stack", "twin", "installers", "fixtures", "reports", "suites")   # the project's own
ROOTS = ("twin", "installers")
DATA = ("twin/*.yaml", "stack/*.yaml")
LOCK_SECONDS = 900.0         # longer than any install of a profile; past it, the twin installs on its own


def _module_file(name: str, root: Path) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, root: Path) -> Iterable[Path]:
    """The project's modules that `path` imports, wherever the import statement is (the twin imports lazily)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):          # a package's __init__ runs before its modules
                found = _module_file(".".join(parts[:i]), root)
                if found is not None:
                    yield found


def code_files(root: Path = ROOT) -> list[Path]:
    """Every module of twin/ and installers/, and the project's modules they import, transitively; the data files
    the twin and the profile loader read."""
    todo = [p for package in ROOTS for p in (root / package).rglob("*.py")]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [p for p in _imports(path, root) if p not in seen]
    data = {p for pattern in DATA for p in root.glob(pattern)}
    return sorted(seen | data)


def directory(profile, binaries: dict, upstream: Path | None, cache: Path) -> Path:
    """Where the snapshot of `profile`'s installed stack lives in `cache`."""
    digest = hashlib.sha256(FORMAT.encode())
    digest.update(profile.path.read_bytes())
    for path in code_files():
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    for name, path in sorted(binaries.items()):
        digest.update(f"{name}={path}".encode())
    # What the upstream manifests say, not where they lie: every clone of the same code on this machine (a fresh
    # clone's `make test`, `.ci/run`) finds the snapshots an earlier one made.
    for path in sorted(p for p in upstream.rglob("*") if p.is_file()) if upstream and upstream.is_dir() else ():
        digest.update(str(path.relative_to(upstream)).encode())
        digest.update(path.read_bytes())
    return cache / f"{profile.name}-{digest.hexdigest()[:16]}"


def exists(target: Path) -> bool:
    return (target / "etcd").is_dir() and (target / "pki").is_dir()


class CreationLock:
    """Held by the one twin that installs and saves `target`; another twin of the same key waits for it (then finds
    the snapshot), or goes on without it after LOCK_SECONDS."""

    def __init__(self, target: Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(target.parent / f".{target.name}.lock"))

    def acquire(self, what: str) -> bool:
        try:
            self._lock.acquire(timeout=0)
            return True
        except Timeout:
            log.info("twin: another twin is installing %s; waiting for its snapshot", what)
        try:
            self._lock.acquire(timeout=LOCK_SECONDS)
            return True
        except Timeout:
            log.warning("twin: no snapshot of %s after %.0fs; installing it here too", what, LOCK_SECONDS)
            return False

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def save(target: Path, write) -> None:
    """`write(tmp)` fills a temporary directory beside `target`, which is then renamed into place (once: a snapshot
    already there stays); only the newest KEPT snapshots of the profile stay."""
    if exists(target):
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        try:
            tmp.rename(target)
            log.info("twin: saved a snapshot of the installed stack in %s", target)
        except OSError:          # another twin saved the same snapshot meanwhile
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune(target, keep=KEPT)


def restore(source: Path, workdir: Path) -> None:
    shutil.copytree(source / "etcd", workdir / "etcd")
    shutil.copytree(source / "pki", workdir / "pki")


def prune(current: Path, keep: int) -> None:
    """Only the newest `keep` snapshots of a profile stay (the current one always): older code's are never read
    again by this checkout."""
    profile = current.name.rsplit("-", 1)[0]
    others = sorted((p for p in current.parent.glob(f"{profile}-*")
                     if p.is_dir() and p != current and p.name.rsplit("-", 1)[0] == profile),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[keep - 1:]:
        shutil.rmtree(old, ignore_errors=True)
