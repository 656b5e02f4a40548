"""Build the Allure HTML report offline with Allure 3 (npm package `allure`, pinned in reports/package.json).

    python -m reports.build_html [RESULTS_DIR] [-o OUT_DIR]

Defaults: reports/allure-results -> reports/allure-report. Installs the npm package with `npm ci --prefix reports`
when reports/node_modules lacks it. Uses reports/allurerc.mjs (awesome plugin, single self-contained index.html).

Analytics: ALLURE_NO_ANALYTICS=true is set (honoured by the allure2/classic templates); the awesome plugin of
Allure 3.18.0 emits its Google Analytics tag unconditionally, so the tag is stripped from the generated HTML, and the
build fails if any external script or stylesheet reference is left.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPORTS = Path(__file__).resolve().parent
DEFAULT_RESULTS = REPORTS / "allure-results"
DEFAULT_OUT = REPORTS / "allure-report"
CONFIG = REPORTS / "allurerc.mjs"
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


def build(results_dir: Path = DEFAULT_RESULTS, out_dir: Path = DEFAULT_OUT) -> Path:
    """Generate the report; returns the path of its index.html."""
    results_dir, out_dir = Path(results_dir).resolve(), Path(out_dir).resolve()
    if not results_dir.is_dir():
        raise BuildError(f"no allure results at {results_dir}")
    ensure_installed()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    cmd = [str(ALLURE_BIN), "generate", "--config", str(CONFIG), "--output", str(out_dir), str(results_dir)]
    proc = subprocess.run(cmd, cwd=REPORTS, env=_env(), capture_output=True, text=True)
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
    parser.add_argument("results_dir", nargs="?", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        index = build(args.results_dir, args.out)
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"allure report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
