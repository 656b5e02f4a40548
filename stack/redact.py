"""Redaction: no secret value may reach a report, an attachment or a log.

Two layers: objects are redacted structurally (Secret data, kubeconfig credentials, env values that look secret),
and any text is scrubbed of the values registered as secret during the run (for example the S3 keys a test put into
a Secret), so a value cannot leak through an error message or a log line either.

    python -m stack.redact DIR [--env NAME]...   scrub every text file under DIR in place (exported cluster logs,
                                                 before CI uploads them), the values of the named variables included
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|apikey|api_key|access_key|private_key|credential|tls\.key|\.key$)")
_PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_BEARER = re.compile(r"(?i)(authorization:\s*bearer\s+)\S+")

_known_values: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | bytes | None) -> None:
    """Remember a secret value so that scrub() removes it from any text."""
    if not value:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if len(value) >= 4:
        with _lock:
            _known_values.add(value)


def scrub(text: str) -> str:
    """Remove registered secret values, private keys and bearer tokens from free text."""
    if not text:
        return text
    text = _PEM_PRIVATE.sub(REDACTED, text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    with _lock:
        values = sorted(_known_values, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def redact_object(obj: Any) -> Any:
    """A deep copy of a Kubernetes object (or list of them) with secret material replaced."""
    obj = copy.deepcopy(obj)
    _redact_in_place(obj)
    return obj


def _redact_in_place(obj: Any) -> None:
    if isinstance(obj, list):
        for item in obj:
            _redact_in_place(item)
        return
    if not isinstance(obj, dict):
        return
    if obj.get("kind") == "Secret":
        for field in ("data", "stringData"):
            if isinstance(obj.get(field), dict):
                obj[field] = {k: REDACTED for k in obj[field]}
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        # kubectl's last-applied annotation repeats the whole Secret, data included.
        if "kubectl.kubernetes.io/last-applied-configuration" in annotations:
            annotations["kubectl.kubernetes.io/last-applied-configuration"] = REDACTED
    if obj.get("kind") == "Config" and "users" in obj:  # a kubeconfig
        for user in obj.get("users") or []:
            for k in list((user.get("user") or {})):
                user["user"][k] = REDACTED
    # env entries: {"name": "AWS_SECRET_ACCESS_KEY", "value": "..."}
    if "name" in obj and "value" in obj and isinstance(obj.get("name"), str) and _SECRET_KEY.search(obj["name"]):
        obj["value"] = REDACTED
    for key, value in obj.items():
        if key == "managedFields":
            continue
        if isinstance(value, str):
            obj[key] = scrub(value)
        else:
            _redact_in_place(value)


def scrub_files(directory: Path) -> int:
    """Scrub every UTF-8 text file under directory in place; returns how many files changed. Binary files are left."""
    changed = 0
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            original = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        cleaned = scrub(original)
        if cleaned != original:
            path.write_text(cleaned, encoding="utf-8")
            changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.redact",
                                     description="Scrub secret values from every text file under a folder, in place.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--env", action="append", default=[], metavar="NAME",
                        help="an environment variable whose value is secret (repeatable); unset or empty is fine")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    for name in args.env:
        register_secret(os.environ.get(name))
    print(f"redact: {scrub_files(args.directory)} file(s) scrubbed under {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
