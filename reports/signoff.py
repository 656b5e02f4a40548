"""The sign-off's files: signoff.json, signoff.md, signoff.html and results-bundle.tar.gz, from an allure-results
folder only (never from the cluster). reports/evaluation.py evaluates the run into a typed SignOff
(reports/signoff_doc.py); reports/signoff_render.py draws its sections; this module bundles the results and writes the
files, each replaced in one step.

    python -m reports.signoff RESULTS_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from stack.record import from_data
from stack.redact import scrub

from reports.evaluation import evaluate
from reports.render import atomic_write as _atomic_write
from reports.signoff_doc import SignOff
from reports.signoff_render import render_html, render_markdown

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "reports" / "out"
BUNDLE_NAME = "results-bundle.tar.gz"


# ---------------------------------------------------------------------------------------------------------------------
# the results bundle


def _bundle_members(results_dir: Path, exclude: Iterable[Path]) -> list[Path]:
    excluded = [p.resolve() for p in exclude]
    members = []
    for root, dirs, files in os.walk(results_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() not in excluded
                         and not (root_path / d).is_symlink())
        for name in sorted(files):
            path = root_path / name
            if path.is_symlink() or name.endswith(".lock") or path.resolve() in excluded:
                continue
            members.append(path)
    return sorted(members, key=lambda p: p.relative_to(results_dir).as_posix())


def write_bundle(results_dir: Path, bundle_path: Path, exclude: Iterable[Path] = ()) -> str:
    """A deterministic tar.gz of results_dir (sorted names, mtime 0, uid/gid 0, gzip mtime 0); text files scrubbed.
    Returns its sha256."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _bundle_members(results_dir, [bundle_path, *exclude]):
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                data = scrub(text).encode("utf-8")
            info = tarfile.TarInfo(name="allure-results/" + path.relative_to(results_dir).as_posix())
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    payload = buf.getvalue()
    _atomic_write(bundle_path, payload)
    return hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# writing


OUTPUT_NAMES = ("signoff.json", "signoff.md", "signoff.html", BUNDLE_NAME)


def remove_previous(out_dir: str | Path) -> list[Path]:
    """Remove a previous run's sign-off from out_dir (at the start of a run), so no old verdict is read as this
    run's when this one stops early. Only the sign-off's own files; returns those removed."""
    removed = []
    for name in OUTPUT_NAMES:
        path = Path(out_dir) / name
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def write_signoff(results_dir: str | Path, out_dir: str | Path = DEFAULT_OUT, stopped: str | None = None) -> list[Path]:
    """Write signoff.json, signoff.md, signoff.html and results-bundle.tar.gz into out_dir; returns their paths.

    `stopped`: the run stopped before any check ran (bad options, preflight): the verdict is ERROR, with that
    message as its reason.

    Call it from the xdist controller (or a non-xdist process) only; a filelock in out_dir serialises concurrent
    callers anyway, and each file is replaced atomically."""
    results_dir = Path(results_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir / ".signoff.lock"), timeout=300):
        bundle = out_dir / BUNDLE_NAME
        sha = write_bundle(results_dir, bundle, exclude=[out_dir]) if results_dir.is_dir() else None
        doc = evaluate(results_dir, stopped=stopped, bundle_sha256=sha)
        paths = {"json": out_dir / "signoff.json", "md": out_dir / "signoff.md", "html": out_dir / "signoff.html"}
        _atomic_write(paths["json"], scrub(json.dumps(doc.to_data(), indent=2, ensure_ascii=False)) + "\n")
        _atomic_write(paths["md"], render_markdown(doc))
        _atomic_write(paths["html"], render_html(doc))
    return [paths["json"], paths["md"], paths["html"]] + ([bundle] if sha else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.signoff",
                                     description="Regenerate the sign-off from an allure-results folder.")
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir} is not a directory", file=sys.stderr)
        return 2
    paths = write_signoff(args.results_dir, args.out)
    print(summary_line(read_signoff(paths[0]), paths))
    return 0


def read_signoff(path: str | Path) -> SignOff:
    """A signoff.json this module wrote, typed again."""
    return from_data(SignOff, json.loads(Path(path).read_text(encoding="utf-8")))


def summary_line(doc: SignOff, paths: list[Path]) -> str:
    sim = " (SIMULATED)" if doc.simulated else ""
    return f"sign-off: {doc.verdict}{sim}: " + ", ".join(str(p) for p in paths)


if __name__ == "__main__":
    sys.exit(main())
