"""The matrix page: one row per acceptance criterion, one column per profile run, read in ten seconds.

    python -m reports.matrix RUN_DIR... [--out DIR]      writes DIR/matrix.md, DIR/matrix.html, DIR/matrix.json

Each RUN_DIR is one run's folder (reports/run_results.py says what is read from it). A cell is
- PASS / FAIL / NOT RUN as the run's sign-off evaluates the criterion; a FAIL names its first failing test (the
  earliest to start) and that test's category;
- INCOMPLETE when the run's results are missing or unreadable (no folder, no or a broken kstack-run.json): the column
  says why. A failure found in such partial results still shows as FAIL.
Per profile: verdict, SIMULATED where it ran on the twin, Kubernetes server version, duration, and the component
versions (profile vs running). The page's verdict is FAIL if any column failed, else INCOMPLETE if any is incomplete,
else PASS. matrix.html is one self-contained file (inline CSS, no script, no external reference).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from stack.criteria import CRITERIA, Criterion
from stack.redact import scrub

from reports.render import atomic_write, format_seconds, h, html_table, md_table, text
from reports.run_results import RunResults, read_run

SCHEMA_VERSION = 1
PASS, FAIL, NOT_RUN, INCOMPLETE = "PASS", "FAIL", "NOT RUN", "INCOMPLETE"
_FROM_SIGNOFF = {"passed": PASS, "failed": FAIL, "not-run": NOT_RUN}
SIMULATED_NOTE = ("SIMULATED: {names} ran on the twin, a simulated cluster; "
                  "{those} columns are not evidence about a real cluster.")


@dataclass(frozen=True)
class Cell:
    status: str                 # PASS | FAIL | NOT RUN | INCOMPLETE
    test: str | None = None     # FAIL: the first failing test
    category: str | None = None  # FAIL: its category
    note: str | None = None     # NOT RUN / INCOMPLETE: why


@dataclass(frozen=True)
class Column:
    run: RunResults
    cells: tuple[Cell, ...]     # in the order of Matrix.criteria

    @property
    def verdict(self) -> str:
        return self.run.verdict


@dataclass(frozen=True)
class Matrix:
    criteria: tuple[Criterion, ...]
    columns: tuple[Column, ...]
    generated: str

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.columns}
        return FAIL if FAIL in verdicts else INCOMPLETE if INCOMPLETE in verdicts or not verdicts else PASS

    @property
    def simulated(self) -> list[str]:
        return [c.run.name for c in self.columns if c.run.simulated]


def cell(run: RunResults, criterion: Criterion) -> Cell:
    outcome = run.criterion(criterion.id)
    if outcome is not None and outcome.status == "failed":
        first = outcome.first_failure
        return Cell(FAIL, first.id if first else None, first.category if first else None,
                    None if first else outcome.reason)
    if run.problem:
        return Cell(INCOMPLETE, note=run.problem)
    if outcome is None:
        return Cell(INCOMPLETE, note=f"the run's sign-off has no {criterion.id}")
    return Cell(_FROM_SIGNOFF[outcome.status], note=outcome.reason)


def build_matrix(run_dirs: list[Path]) -> Matrix:
    runs = [read_run(d) for d in run_dirs]
    columns = tuple(Column(run, tuple(cell(run, c) for c in CRITERIA)) for run in runs)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return Matrix(CRITERIA, columns, now)


# ---------------------------------------------------------------------------------------------------------------------
# rendering


def _cell_text(c: Cell) -> str:
    if c.status == FAIL and c.test:
        return f"FAIL: {c.test} ({c.category})"
    return c.status


def _kubernetes(run: RunResults) -> str:
    where = f" on {run.provider}" if run.provider else ""
    return f"Kubernetes {run.server_version}{where}" if run.server_version else "Kubernetes unknown"


def _column_heading(col: Column) -> str:
    sim = ", SIMULATED" if col.run.simulated else ""
    return f"{col.run.name} ({_kubernetes(col.run)}{sim})"


def _components(m: Matrix) -> list[str]:
    return sorted({v.component for col in m.columns for v in col.run.versions})


def _version_text(col: Column, component: str) -> str:
    v = next((x for x in col.run.versions if x.component == component), None)
    if v is None:
        return "—"
    running = v.running or "unreadable"
    mark = {True: "", False: " MISMATCH", None: ""}[v.matches]
    return f"{text(v.wanted)} / {running}{mark}"


def _profile_rows(m: Matrix) -> list[list[str]]:
    rows = [["verdict"] + [col.verdict for col in m.columns],
            ["simulated"] + [{True: "SIMULATED (twin)", False: "no (real cluster)", None: "unknown"}[col.run.simulated]
                             for col in m.columns],
            ["Kubernetes"] + [text(col.run.server_version) + (f" (OUTSIDE the tested range {col.run.outside_range})"
                                                               if col.run.outside_range else "")
                              for col in m.columns],
            ["cluster"] + [text(col.run.provider) for col in m.columns],
            ["node image"] + [text(col.run.node_image) for col in m.columns],
            ["duration"] + [format_seconds(col.run.duration_seconds) for col in m.columns],
            ["started"] + [text(col.run.started) for col in m.columns]]
    rows += [[f"{component} (profile / running)"] + [_version_text(col, component) for col in m.columns]
             for component in _components(m)]
    return rows


def _notes(m: Matrix) -> list[str]:
    """Why each column is incomplete and each NOT RUN cell was not run, once per column and reason."""
    out = []
    for col in m.columns:
        if col.run.outside_range:
            out.append(f"{col.run.name}: Kubernetes {col.run.server_version} is outside the profile's tested range "
                       f"{col.run.outside_range}: verified all the same (its sign-off quotes the components' "
                       "statements)")
        if col.run.problem:
            out.append(f"{col.run.name}: INCOMPLETE: {col.run.problem}")
        for criterion, c in zip(m.criteria, col.cells, strict=True):
            if c.status == NOT_RUN and c.note:
                out.append(f"{col.run.name} {criterion.id}: NOT RUN: {c.note}")
            elif c.status == FAIL and not c.test and c.note:
                out.append(f"{col.run.name} {criterion.id}: FAIL: {c.note}")
    return out


def render_markdown(m: Matrix) -> str:
    out = [f"# KServe stack matrix: {m.verdict}", ""]
    if m.simulated:
        out += [f"> **{_simulated_note(m)}**", ""]
    out += [md_table(["criterion"] + [_column_heading(col) for col in m.columns],
                     [[f"{c.id} {c.title}"] + [_cell_text(col.cells[i]) for col in m.columns]
                      for i, c in enumerate(m.criteria)]), "",
            "## Profiles", "",
            md_table(["profile"] + [col.run.name for col in m.columns], _profile_rows(m)), ""]
    notes = _notes(m)
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += [f"Generated {m.generated} from {', '.join(str(col.run.source) for col in m.columns)}.", ""]
    return scrub("\n".join(out))


def _simulated_note(m: Matrix) -> str:
    names = m.simulated
    return SIMULATED_NOTE.format(names=", ".join(names), those="this column is" if len(names) == 1 else "these")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f}
h1{margin-top:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;
vertical-align:top}thead th{background:#f3f3f3}tbody th{font-weight:normal;background:#fafafa}
.banner{background:#ffe08a;border:2px solid #b58900;padding:.8rem 1rem;font-weight:bold;margin-bottom:1rem}
.verdict{display:inline-block;padding:.1rem .7rem;border-radius:.3rem;color:#fff}
.PASS{background:#2e7d32;color:#fff}.FAIL{background:#c62828;color:#fff}
.NOT_RUN{background:#e0e0e0;color:#333}.INCOMPLETE{background:#6d6d6d;color:#fff}
.sim{display:inline-block;background:#ffe08a;color:#5c4400;border-radius:.2rem;padding:0 .3rem;font-size:.8em}
.k8s{font-weight:normal;font-size:.85em;color:#444}
.test{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}.cat{font-size:.85em}
.id{font-family:ui-monospace,Menlo,Consolas,monospace}small{color:#555}
"""


def _status_class(status: str) -> str:
    return status.replace(" ", "_")


def _cell_html(c: Cell) -> str:
    body = f'<span class="verdict {_status_class(c.status)}">{h(c.status)}</span>'
    if c.status == FAIL and c.test:
        body += f'<br><span class="test">{h(c.test)}</span><br><span class="cat">{h(c.category)}</span>'
    title = f' title="{h(c.note)}"' if c.note else ""
    return f"<td{title}>{body}</td>"


def _heading_html(col: Column) -> str:
    sim = ' <span class="sim">SIMULATED</span>' if col.run.simulated else ""
    return (f'<th scope="col">{h(col.run.name)}{sim}<br><span class="k8s">{h(_kubernetes(col.run))}</span><br>'
            f'<span class="verdict {_status_class(col.verdict)}">{h(col.verdict)}</span></th>')


def render_html(m: Matrix) -> str:
    p = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>KServe stack matrix: {h(m.verdict)}</title>", f"<style>{_CSS}</style></head><body>"]
    if m.simulated:
        p.append(f'<div class="banner" role="alert">{h(_simulated_note(m))}</div>')
    p.append(f'<h1>KServe stack matrix: <span class="verdict {_status_class(m.verdict)}">{h(m.verdict)}</span></h1>')
    rows = []
    for i, c in enumerate(m.criteria):
        cells = "".join(_cell_html(col.cells[i]) for col in m.columns)
        rows.append(f'<tr><th scope="row"><span class="id">{h(c.id)}</span><br><small>{h(c.title)}</small></th>'
                    f"{cells}</tr>")
    head = '<th scope="col">criterion</th>' + "".join(_heading_html(col) for col in m.columns)
    p.append(f'<table id="matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    p.append("<h2>Profiles</h2>")
    p.append(html_table(["profile"] + [col.run.name for col in m.columns], _profile_rows(m)))
    notes = _notes(m)
    if notes:
        p.append("<h2>Notes</h2><ul>" + "".join(f"<li>{h(n)}</li>" for n in notes) + "</ul>")
    p.append(f"<p><small>Generated {h(m.generated)} from "
             f"{h(', '.join(str(col.run.source) for col in m.columns))}.</small></p>")
    p.append("</body></html>")
    return scrub("\n".join(p)) + "\n"


def to_json(m: Matrix) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": m.verdict,
        "generated": m.generated,
        "simulated": m.simulated,
        "criteria": [{"id": c.id, "title": c.title} for c in m.criteria],
        "profiles": [{
            "name": col.run.name,
            "verdict": col.verdict,
            "run": {**asdict(col.run), "source": str(col.run.source)},
            "cells": {c.id: asdict(x) for c, x in zip(m.criteria, col.cells, strict=True)},
        } for col in m.columns],
    }


def write_matrix(run_dirs: list[Path], out_dir: Path) -> tuple[Matrix, list[Path]]:
    m = build_matrix(run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "matrix.md", out_dir / "matrix.html", out_dir / "matrix.json"]
    atomic_write(paths[0], render_markdown(m))
    atomic_write(paths[1], render_html(m))
    atomic_write(paths[2], scrub(json.dumps(to_json(m), indent=2, ensure_ascii=False)) + "\n")
    return m, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="one run's folder (its allure-results/ inside, or an allure-results folder); a missing "
                             "one becomes an INCOMPLETE column")
    parser.add_argument("--out", type=Path, default=Path("reports") / "matrix", help="output folder (default "
                                                                                    "reports/matrix)")
    args = parser.parse_args(argv)
    m, paths = write_matrix(args.run_dirs, args.out)
    sim = " (SIMULATED: " + ", ".join(m.simulated) + ")" if m.simulated else ""
    print(f"matrix: {m.verdict}{sim}: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
