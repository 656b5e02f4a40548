"""Small rendering helpers shared by the sign-off (reports/signoff.py) and the matrix page (reports/matrix.py):
text for an empty value, durations, Markdown and HTML tables, atomic file writes."""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any


def text(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def format_seconds(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min ({value:.0f} s)"
    return "unknown"


def md_cell(value: Any) -> str:
    return text(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def h(value: Any) -> str:
    """HTML-escaped text (attribute-safe)."""
    return html.escape(text(value), quote=True)


def html_table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    """A table; with raw=True the cells are already HTML (escape them yourself)."""
    head = "".join(f"<th>{h(x)}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{v if raw else h(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Replace path in one step, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp.write_bytes(data)
    os.replace(tmp, path)
