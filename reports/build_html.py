"""Build the Allure HTML report offline with Allure 3 (npm package `allure`, pinned in reports/package.json).

    python -m reports.build_html [RESULTS_DIR...] [-o OUT_DIR] [--history FILE]

Defaults: reports/allure-results -> reports/allure-report. Several results folders (one per profile) merge into one
report; each test keeps its profile as an Allure parameter, so the profiles' results stay apart. With --history,
Allure 3 reads the JSONL history file and appends this report's entry to it (`historyPath`): carry the file from one
run to the next (the nightly workflow keeps it in the Actions cache) and the report shows trends across runs.

Installs the npm package with `npm ci --prefix reports` when reports/node_modules lacks it. Uses reports/allurerc.mjs
(awesome plugin, single self-contained index.html).

Analytics: ALLURE_NO_ANALYTICS=true is set (honoured by the allure2/classic templates); the awesome plugin of
Allure 3.18.0 emits its Google Analytics tag unconditionally, so the tag is stripped from the generated HTML, and the
build fails if any external script or stylesheet reference is left.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from reports.categories import categories

REPORTS = Path(__file__).resolve().parent
DEFAULT_RESULTS = REPORTS / "allure-results"
DEFAULT_OUT = REPORTS / "allure-report"
CONFIG = REPORTS / "allurerc.mjs"
HISTORY_ENV = "KSTACK_ALLURE_HISTORY"   # read by allurerc.mjs as its historyPath
CATEGORIES_ENV = "KSTACK_ALLURE_CATEGORIES"   # read by allurerc.mjs as its categories (JSON)
ALLURE_BIN = REPORTS / "node_modules" / ".bin" / "allure"

_ANALYTICS = (
    re.compile(r'\s*<script[^>]*\bsrc="https?://www\.googletagmanager\.com/[^"]*"[^>]*>\s*</script>'),
    re.compile(r"\s*<script>\s*window\.dataLayer\s*=[\s\S]*?</script>"),
)
_EXTERNAL = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["\']?(?:https?:)?//', re.I)


class BuildError(RuntimeError):
    pass


def allure_installed() -> bool:
    return ALLURE_BIN.exists()


def ensure_installed() -> None:
    if allure_installed():
        return
    npm = shutil.which("npm")
    if not npm:
        raise BuildError("npm not found: install Node.js 20+ to build the Allure HTML report")
    subprocess.run([npm, "ci", "--prefix", str(REPORTS), "--no-audit", "--no-fund"], check=True,
                   env=_env())
    if not allure_installed():
        raise BuildError(f"npm ci did not install {ALLURE_BIN}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ALLURE_NO_ANALYTICS"] = "true"
    env.setdefault("NO_COLOR", "1")
    env.setdefault("NO_UPDATE_NOTIFIER", "1")
    env.setdefault("npm_config_update_notifier", "false")
    return env


def strip_analytics(html: str) -> str:
    for pattern in _ANALYTICS:
        html = pattern.sub("", html)
    return html


def external_references(html: str) -> list[str]:
    return [m.group(0) for m in _EXTERNAL.finditer(html)]


def build(results_dirs: Path | Sequence[Path] = DEFAULT_RESULTS, out_dir: Path = DEFAULT_OUT,
          history: Path | None = None) -> Path:
    """Generate the report from one or more results folders; returns the path of its index.html."""
    dirs = [Path(results_dirs)] if isinstance(results_dirs, (str, Path)) else [Path(d) for d in results_dirs]
    dirs = [d.resolve() for d in dirs]
    out_dir = Path(out_dir).resolve()
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing or not dirs:
        raise BuildError(f"no allure results at {', '.join(missing) or '(no folder given)'}")
    empty = [str(d) for d in dirs if not any(d.glob("*-result.json"))]
    if empty:   # a report of nothing would look like a run that had nothing to say
        raise BuildError(f"no test results in {', '.join(empty)} (no *-result.json): the run stopped before any "
                         "test ran; see its sign-off (reports/out/signoff.md) for why, or run the suite first")
    ensure_installed()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    env = _env()
    env[CATEGORIES_ENV] = json.dumps(categories())
    if history is not None:
        history = Path(history).resolve()
        history.parent.mkdir(parents=True, exist_ok=True)
        env[HISTORY_ENV] = str(history)
    cmd = [str(ALLURE_BIN), "generate", "--config", str(CONFIG), "--output", str(out_dir), *map(str, dirs)]
    proc = subprocess.run(cmd, cwd=REPORTS, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"allure generate failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    index = out_dir / "index.html"
    if not index.is_file():
        raise BuildError(f"allure generate wrote no {index}:\n{proc.stdout}\n{proc.stderr}")
    for page in out_dir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        cleaned = strip_analytics(text)
        if cleaned != text:
            page.write_text(cleaned, encoding="utf-8")
        leftovers = external_references(cleaned)
        if leftovers or "googletagmanager" in cleaned:
            raise BuildError(f"{page} still references external resources: {leftovers[:3]}")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build_html", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dirs", nargs="*", type=Path, default=[DEFAULT_RESULTS], metavar="RESULTS_DIR")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--history", type=Path, default=None,
                        help="Allure history file (JSONL): read for trends, and this report's entry appended")
    args = parser.parse_args(argv)
    try:
        index = build(args.results_dirs, args.out, args.history)
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"allure report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
