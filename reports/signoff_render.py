"""The sign-off as pages: one list of sections (`sections`), built once from the typed SignOff, rendered to Markdown
(`render_markdown`) and to a self-contained HTML page (`render_html`). A section is a title and blocks (a paragraph, a
list, a table, a field list, the criteria checklist); each renderer only knows how to draw a block, so a section
added or changed shows in both pages alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from stack.record import INSTALL_DIAGNOSTICS_DIR
from stack.redact import scrub
from stack.versions import same_version

from reports.categories import title as category_title
from reports.render import format_seconds, h, html_table, md_table, text
from reports.signoff_doc import OUTCOME_LABEL, OUTCOMES, PASSED, STATUS_LABEL, SignOff

SIMULATED_BANNER = "SIMULATED: this run used the twin, a simulated cluster. It is not evidence about a real cluster."
OUTSIDE_RANGE_TITLE = "Outside the tested range"
EVIDENCE_SHOWN = 240     # characters of a fact shown in the pages; signoff.json keeps the recorded value
NODE_HEADER = ["NAME", "KUBELET", "CONTAINER RUNTIME", "OS IMAGE"]


# ---------------------------------------------------------------------------------------------------------------------
# blocks


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, an id shown as code after it (a test's), and a style (a CSS class in HTML)."""
    text: str | None = None
    ref: str | None = None
    style: str | None = None        # "status passed", "over", "msg", ...


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[Union[str, list]]   # an item: a text, or a run of texts and cells
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Union[str, Cell, None]]]
    console: bool = False           # kubectl's look in Markdown (a code block of aligned columns)
    empty: str = "none"


@dataclass(frozen=True)
class Fields:
    """Label and value pairs: a bullet list in Markdown, a two-column table in HTML."""
    rows: list[tuple[str, str]]


@dataclass(frozen=True)
class CheckItem:
    checked: bool
    status: str                     # passed | failed | not-run
    id: str
    title: str
    tests: list[tuple[str, str]]    # (title, id)
    reason: str | None


@dataclass(frozen=True)
class Checklist:
    items: list[CheckItem]


@dataclass(frozen=True)
class Banner:
    lead: str                       # in bold
    text: str = ""
    items: list[str] = field(default_factory=list)
    role: str = "alert"
    style: str = "banner"


Block = Union[Paragraph, Bullets, Table, Fields, Checklist, Banner]


@dataclass(frozen=True)
class Section:
    title: str | None               # None: the page's head, before the first heading
    blocks: list[Block]
    level: int = 2


# ---------------------------------------------------------------------------------------------------------------------
# the sections of a sign-off


def _shown(value: str) -> str:
    return value if len(value) <= EVIDENCE_SHOWN else value[:EVIDENCE_SHOWN] + " …"


def _yes_no(value) -> str:
    return "yes" if value is True else ("no" if value is False else text(value))


def support_text(doc: SignOff) -> str:
    """The support finding (stack.record.SupportFinding) in one sentence."""
    s = doc.support
    return (f"Kubernetes {s.server_version} is outside profile '{s.profile}''s tested range {s.tested_range} (the "
            "intersection of its components' own statements, below). The stack was verified all the same; "
            "--outside-tested-range fail makes such a run stop instead.")


def version_rows(versions: dict[str, str], running: dict[str, str | None]) -> list[list[str]]:
    """component, the profile's version, the running one, whether they match."""
    rows = []
    for component in sorted(set(versions) | set(running)):
        want, have = versions.get(component), running.get(component)
        match = "unknown" if not have or not want else ("yes" if same_version(str(have), str(want)) else "NO")
        # A run reads every component's version at its end (None: unreadable); one stopped before it has none.
        unread = "unreadable" if component in running else "not read (the run stopped before)"
        rows.append([component, text(want), text(have) if have else unread, match])
    return rows


def _suite_text(doc: SignOff) -> str:
    suite = doc.suite
    if suite is None:
        return "kstack unknown, commit unknown, Python unknown, pytest unknown"
    tree = {True: " (dirty: the work tree differs from it)", False: " (clean)"}.get(suite.dirty, "")
    return (f"kstack {text(suite.version or 'unknown')}, commit {suite.commit or 'unknown'}{tree}, "
            f"Python {text(suite.python or 'unknown')}, pytest {text(suite.pytest or 'unknown')}")


def _runner_text(doc: SignOff) -> str:
    runner = doc.runner
    line = f"host {text(runner.hostname if runner else 'unknown')}"
    if runner is None or not runner.ci:
        return line + ", not in CI"
    attempt = f" (attempt {runner.ci_attempt})" if runner.ci_attempt else ""
    return line + f", {runner.ci} run {text(runner.ci_url or 'URL unknown')}{attempt}"


def _head(doc: SignOff) -> Section:
    blocks: list[Block] = [Bullets(list(doc.verdict_reasons))]
    if doc.support:
        blocks.append(Banner(f"{OUTSIDE_RANGE_TITLE}:", support_text(doc),
                             [f"{c}: {said}" for c, said in doc.support.statements.items()], role="note",
                             style="banner support"))
    simulated = "yes" if doc.simulated else ("no" if doc.simulated is False else "unknown")
    profile = text(doc.profile) + (f" ({doc.profile_path})" if doc.profile_path else "")
    cluster = doc.cluster
    blocks.append(Fields([
        ("Profile", profile), ("Cluster provider", text(cluster.provider)),
        ("Kubernetes server", text(cluster.server_version)), ("Node image", text(cluster.node_image)),
        ("Simulated", simulated), ("Suite", _suite_text(doc)), ("Runner", _runner_text(doc)),
        ("Started", text(doc.started)), ("Finished", text(doc.finished)),
        ("Duration", format_seconds(doc.duration_seconds)), ("Generated", text(doc.generated)),
        ("Results bundle sha256", text(doc.bundle_sha256))]))
    return Section(None, blocks)


def _criteria(doc: SignOff) -> Section:
    titles = {t.id: t.title for t in doc.tests}
    return Section("Acceptance criteria", [Checklist([
        CheckItem(c.status == PASSED, c.status, c.id, c.title, [(titles.get(t, t), t) for t in c.tests], c.reason)
        for c in doc.criteria])])


def _inventory(doc: SignOff) -> Section:
    inv = doc.inventory
    line = f"expected {inv.expected} (every acceptance test collected, before -k/-m deselection)"
    if inv.outside:
        line += f"; {len(inv.outside)} result(s) outside the inventory: " + ", ".join(inv.outside)
    counts = [str(getattr(doc.results, o)) for o in OUTCOMES] + [str(doc.results.total)]
    not_run = [t for t in doc.tests if t.outcome in ("skipped", "deselected", "not_executed")]
    blocks: list[Block] = [Paragraph(line), Table([*(OUTCOME_LABEL[o] for o in OUTCOMES), "total"], [counts])]
    if not_run:
        blocks.append(Bullets([[Cell(t.title, t.id), f": {t.outcome_text}"] for t in not_run]))
    return Section("Inventory completeness", blocks)


def _tests(doc: SignOff) -> Section:
    return Section("Tests", [Table(["check", "id", "outcome", "criteria"], [
        [t.title, Cell(ref=t.id), Cell(t.outcome_text, style=f"outcome {t.outcome}"), ", ".join(t.criteria)]
        for t in doc.tests])])


def _failures(doc: SignOff) -> Section:
    return Section("Failures", [Table(["check", "status", "category", "criteria", "message"], [
        [Cell(f.title, f.id, style="check"), f.status, f.category, ", ".join(f.criteria), Cell(f.message, style="msg")]
        for f in doc.failures])])


def _install_failure(doc: SignOff) -> list[Section]:
    failure = doc.install.failure if doc.install else None
    if failure is None:
        return []
    rows = [["component", text(failure.component)], ["step", text(failure.step)],
            ["error type", text(failure.error_type)], ["category", text(category_title(failure.category))],
            ["message", text(failure.message)]]
    rows += [["diagnostics", f"allure-results/{INSTALL_DIAGNOSTICS_DIR}/{name} (in the results bundle)"]
             for name in failure.diagnostics]
    return [Section("Install failure", [Table(["", ""], rows)])]


def _evidence(doc: SignOff) -> Section:
    return Section("Evidence", [
        Paragraph("What each check saw (full values in signoff.json and the Allure attachments)."),
        Table(["test", "outcome", "evidence", "facts"],
              [[e.id, e.status, e.what, "; ".join(f"{f.name}: {_shown(f.value)}" for f in e.facts)]
               for e in doc.evidence], empty="none recorded")])


def _retries(doc: SignOff) -> Section:
    r = doc.retries
    line = "no retries" if not r.total else \
        f"{r.total} retries: " + ", ".join(f"{layer} {n}" for layer, n in r.by_layer.items())
    blocks: list[Block] = [Paragraph(line)]
    if r.top_reasons:
        blocks.append(Table(["layer: reason", "count"], [[x.reason, str(x.count)] for x in r.top_reasons]))
    return Section("Retries", blocks)


def _availability(doc: SignOff) -> list[Section]:
    """The HA posture of every run whose profile lists HA workloads; AC-HA judges it where it is required."""
    if doc.ha is None:
        return []
    ha = doc.ha
    required = next((c.applicable for c in doc.criteria if c.id == "AC-HA"), False)
    verdict = ("not highly available" if ha.findings else "highly available as the profile's ha: sections "
               "describe it") + ("" if required else " (AC-HA is not required: evidence only)")
    blocks: list[Block] = [Paragraph(verdict)]
    if ha.findings:
        blocks.append(Bullets(list(ha.findings)))
    blocks.append(Table(["workload", "Ready/wanted", "nodes", "disruption budgets", "leader Leases", "age"],
                        [[w.workload, w.replicas, w.nodes, w.budgets, w.leases, w.age] for w in ha.workloads]))
    blocks.append(Table(["webhook", "failurePolicy", "Service", "ready endpoints", "guards"],
                        [[x.webhook, x.failure_policy, text(x.service), str(x.ready_endpoints), ", ".join(x.guards)]
                         for x in ha.webhooks], empty="no webhook configuration read"))
    return [Section("High availability", blocks)]


def _cluster_state(doc: SignOff) -> list[Section]:
    nodes = [[text(n.name), text(n.kubelet_version), text(n.container_runtime), text(n.os_image)]
             for n in doc.cluster.nodes]
    out = [Section("Nodes", [Table(NODE_HEADER, nodes, empty="not recorded")]),
           Section("Namespaces", [Table(["NAME", "STATUS", "AGE"], [[n.name, n.status, n.age] for n in doc.namespaces],
                                        console=True, empty="not recorded")])]
    by_namespace: dict[str, list] = {}
    for pod in sorted(doc.pods, key=lambda p: (p.namespace or "?", p.name)):
        by_namespace.setdefault(pod.namespace or "?", []).append(pod)
    out.append(Section("Pods", [] if by_namespace else [Paragraph("not recorded")]))
    out += [Section(ns, [Table(["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                               [[text(p.name), text(p.ready), text(p.status), text(p.restarts), text(p.age)]
                                for p in pods], console=True)], level=3)
            for ns, pods in by_namespace.items()]
    if doc.images:
        out.append(Section("Controller images", [Table(["component", "workload", "container", "image", "digest"], [
            [i.component, f"{i.namespace}/{i.workload}", i.container, i.image, i.digest] for i in doc.images])]))
    return out


def _phases(doc: SignOff) -> Section:
    return Section("Phase timings", [Table(["phase", "seconds", "budget", "within budget"], [
        [p.name, text(p.seconds), text(p.budget), p.status_text if p.status == "ok" else Cell(p.status_text, style="over")]
        for p in doc.phases], empty="not recorded")])


def _downloads(doc: SignOff) -> list[Section]:
    if not doc.downloads:
        return []
    return [Section("Downloads", [Table(["url", "sha256", "pinned"],
                                        [[d.url, d.sha256, _yes_no(d.pinned)] for d in doc.downloads])])]


def _simulation(doc: SignOff) -> list[Section]:
    sim = doc.simulation
    if not sim:
        return []
    return [Section("The simulated cluster", [
        Paragraph("Control plane: " + ", ".join(f"{k} {v}" for k, v in sim.control_plane.items())),
        Paragraph("Faults injected: " + (", ".join(sim.faults) or "none")),
        Paragraph(f"Scenario: {sim.scenario or 'none'}"),
        Table(["part", "what runs", "detail"], [[x.name, x.kind, x.detail] for x in sim.parts])])]


def sections(doc: SignOff) -> list[Section]:
    """The sign-off's sections, in page order."""
    out = [_head(doc),
           Section("Versions (profile vs running)", [Table(["component", "profile", "running", "match"],
                                                           version_rows(doc.versions, doc.running_versions))]),
           _criteria(doc), _inventory(doc), _tests(doc), _failures(doc), *_install_failure(doc), _evidence(doc),
           _retries(doc)]
    if doc.run_errors:
        out.append(Section("Run errors", [Bullets(list(doc.run_errors))]))
    out += [*_availability(doc), *_cluster_state(doc), _phases(doc), *_downloads(doc), *_simulation(doc),
            Section("Known limitations", [Bullets([f"{x.id}: {x.text}" for x in doc.limitations], ordered=True)
                                          if doc.limitations else Paragraph("none detected")])]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Markdown


def _md_cell(value) -> str:
    if not isinstance(value, Cell):
        return text(value)
    if value.ref is None:
        return text(value.text)
    code = f"`{value.ref}`"
    return code if value.text in (None, "", value.ref) else f"{value.text} ({code})"


def _console(header: list[str], rows: list[list[str]]) -> str:
    cells = [header, *[[_md_cell(v) for v in r] for r in rows]]
    widths = [max(len(str(x)) for x in col) for col in zip(*cells, strict=True)]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "```\n" + "\n".join(lines).replace("```", "`\u200b``") + "\n```"


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Bullets):
        items = ["".join(_md_cell(x) for x in item) if isinstance(item, list) else item for item in block.items]
        return [f"{i}. {x}" if block.ordered else f"- {x}" for i, x in enumerate(items, 1)]
    if isinstance(block, Fields):
        return [f"- **{label}:** {value}" for label, value in block.rows]
    if isinstance(block, Banner):
        lead = f"> **{block.lead}**" + (f" {block.text}" if block.text else "")
        return [lead, *([">"] + [f"> - {x}" for x in block.items] if block.items else [])]
    if isinstance(block, Checklist):
        lines = []
        for c in block.items:
            line = f"- {'[x]' if c.checked else '[ ]'} **{STATUS_LABEL[c.status]}** {c.id}: {c.title}"
            if c.tests:
                line += " — tests: " + "; ".join(t for t, _ in c.tests)
            if c.reason:
                line += f" — {c.reason}"
            lines.append(line.replace("\n", " "))
        return lines
    if not block.rows:
        return [block.empty]
    if block.console:
        return [_console(block.header, block.rows)]
    return [md_table(block.header, [[_md_cell(v) for v in row] for row in block.rows])]


def render_markdown(doc: SignOff) -> str:
    out: list[str] = []
    if doc.simulated:
        out += _md_block(Banner(SIMULATED_BANNER)) + [""]
    out += [f"# KServe stack sign-off: {doc.verdict}", ""]
    for section in sections(doc):
        if section.title is not None:
            out += ["#" * section.level + f" {section.title}", ""]
        for block in section.blocks:
            out += _md_block(block) + [""]
    return scrub("\n".join(out))


# ---------------------------------------------------------------------------------------------------------------------
# HTML

# Image refs with digests, URLs and messages have no spaces: every text may break anywhere (overflow-wrap counts in a
# table's column widths, unlike word-break), so the page never scrolls sideways.
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f;max-width:80rem;
overflow-wrap:anywhere}
h1{margin-top:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;max-width:100%}th,td{border:1px solid #ccc;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f3f3f3;overflow-wrap:normal}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto}code{font-family:ui-monospace,Menlo,Consolas,monospace}
.banner{background:#ffe08a;border:2px solid #b58900;padding:.8rem 1rem;font-weight:bold;margin-bottom:1rem}
.verdict{display:inline-block;padding:.2rem .8rem;border-radius:.3rem;color:#fff}
.PASS,.passed{background:#2e7d32;color:#fff}.FAIL,.ERROR,.failed{background:#c62828;color:#fff}
.INCOMPLETE,.not-run{background:#6d6d6d;color:#fff}
.status{padding:0 .4rem;border-radius:.2rem;white-space:nowrap}.over{color:#c62828;font-weight:bold}
.check{display:inline-block;min-width:16rem}
.msg{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
"""


def _html_cell(value) -> str:
    if not isinstance(value, Cell):
        return h(value)
    inner = h(value.text) if value.ref is None else f"<code>{h(value.ref)}</code>" if value.text in (None, "", value.ref) \
        else f"{h(value.text)}<br><code>{h(value.ref)}</code>"
    return f'<span class="{h(value.style)}">{inner}</span>' if value.style else inner


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{h(block.text)}</p>"
    if isinstance(block, Bullets):
        tag = "ol" if block.ordered else "ul"
        items = ["".join(_html_cell(x) for x in item) if isinstance(item, list) else h(item) for item in block.items]
        return f"<{tag}>" + "".join(f"<li>{x}</li>" for x in items) + f"</{tag}>"
    if isinstance(block, Fields):
        return html_table(["run", "value"], [[label, value] for label, value in block.rows])
    if isinstance(block, Banner):
        items = "<ul>" + "".join(f"<li>{h(x)}</li>" for x in block.items) + "</ul>" if block.items else ""
        lead = h(block.lead) if not block.text and not items else f"<b>{h(block.lead)}</b> {h(block.text)}"
        return f'<div class="{h(block.style)}" role="{h(block.role)}">{lead}{items}</div>'
    if isinstance(block, Checklist):
        return html_table(["status", "id", "criterion", "tests", "reason"], [
            [f'<span class="status {h(c.status)}">{h(STATUS_LABEL[c.status])}</span>', h(c.id), h(c.title),
             "<br>".join(f'<span title="{h(test_id)}">{h(name)}</span>' for name, test_id in c.tests) or "—",
             h(c.reason)] for c in block.items], raw=True)
    if not block.rows:
        return f"<p>{h(block.empty)}</p>"
    return html_table(block.header, [[_html_cell(v) for v in row] for row in block.rows], raw=True)


def render_html(doc: SignOff) -> str:
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    f"<title>KServe stack sign-off: {h(doc.verdict)}</title>", f"<style>{_CSS}</style></head><body>"]
    if doc.simulated:
        p.append(_html_block(Banner(SIMULATED_BANNER)))
    p.append(f'<h1>KServe stack sign-off: <span class="verdict {h(doc.verdict)}">{h(doc.verdict)}</span></h1>')
    for section in sections(doc):
        if section.title is not None:
            p.append(f"<h{section.level}>{h(section.title)}</h{section.level}>")
        p += [_html_block(block) for block in section.blocks]
    p.append("</body></html>")
    return scrub("\n".join(p)) + "\n"
