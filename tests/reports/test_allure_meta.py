"""environment.properties and executor.json."""
from __future__ import annotations

import json

from reports.allure_meta import environment_pairs, properties_text, write_environment, write_executor
from stack.redact import register_secret


def _parse_properties(text: str) -> dict[str, str]:
    """A small java.util.Properties reader (enough for what we write: one logical line per pair)."""
    out = {}
    for line in text.splitlines():
        i, esc = 0, False
        chars = list(line)
        # split at the first unescaped '='
        while i < len(chars):
            if chars[i] == "\\" and not esc:
                esc = True
            elif chars[i] == "=" and not esc:
                break
            else:
                esc = False
            i += 1
        raw_key, raw_value = line[:i], line[i + 1:]
        out[_unescape(raw_key)] = _unescape(raw_value)
    return out


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            out.append(chr(int(text[i + 2:i + 6], 16)))
            i += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
        i += 2
    return "".join(out)


def test_environment_properties(tmp_path, factory):
    run = factory.run(simulated=True)
    run.running_versions["kserve"] = None  # unreadable
    path = write_environment(tmp_path, run)
    text = path.read_text(encoding="ascii")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["SIMULATED"] == "true"
    assert props["Profile"] == "seed"
    assert props["Provider"] == "twin"
    assert props["Kubernetes.server"] == "v1.27.3"
    assert props["Kubernetes.node_image"].startswith("kindest/node\\:v1.27.3@sha256\\:3966ac")
    assert props["cert-manager.version"] == "v1.13.0"
    assert props["kserve.version"] == "unreadable"
    assert props["kserve.profile_version"] == "v0.11.0"
    assert props["image.kserve/kserve-controller-manager/manager"] == (
        "kserve/kserve-controller\\:v0.11.0@sha256\\:" + "ab" * 32)


def test_real_run_is_not_simulated(factory):
    assert environment_pairs(factory.run(simulated=False))["SIMULATED"] == "false"
    assert environment_pairs(None)["SIMULATED"] == "false"


def test_properties_escaping():
    text = properties_text({"a key": " lead=x:y#!\\ \n\tü€", "k": None})
    assert text == "a\\ key=\\ lead\\=x\\:y\\#\\!\\\\ \\n\\t\\u00FC\\u20AC\nk=\n"
    text.encode("ascii")
    assert _parse_properties(text) == {"a key": " lead=x:y#!\\ \n\tü€", "k": ""}


def test_properties_scrubbed():
    register_secret("hunter2-envsecret")
    assert "hunter2-envsecret" not in properties_text({"x": "token hunter2-envsecret"})


def test_executor_github(tmp_path):
    env = {
        "GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/kstack",
        "GITHUB_RUN_ID": "987654321", "GITHUB_RUN_NUMBER": "42", "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_WORKFLOW": "acceptance", "GITHUB_JOB": "kind",
    }
    data = json.loads(write_executor(tmp_path, env).read_text())
    assert data == {
        "name": "GitHub Actions", "type": "github", "url": "https://github.com/acme/kstack",
        "buildName": "acceptance #42 (kind)", "buildOrder": 42,
        "buildUrl": "https://github.com/acme/kstack/actions/runs/987654321",
        "reportUrl": "https://github.com/acme/kstack/actions/runs/987654321",
        "reportName": "KServe stack conformance",
    }
    env.update(GITHUB_RUN_ATTEMPT="2", KSTACK_REPORT_URL="https://acme.github.io/kstack/42/")
    data = json.loads(write_executor(tmp_path, env).read_text())
    assert data["buildUrl"].endswith("/actions/runs/987654321/attempts/2")
    assert data["reportUrl"] == "https://acme.github.io/kstack/42/"


def test_executor_local(tmp_path):
    data = json.loads(write_executor(tmp_path, {"HOME": "/root"}).read_text())
    assert data["name"] == "local" and data["type"] == "local"


def test_allure3_reads_our_properties(tmp_path):
    """Allure 3's own properties parser (reports/node_modules) reads back what we wrote."""
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    parser = Path(__file__).resolve().parents[2] / "reports/node_modules/@allurereport/reader/dist/properties.js"
    if not shutil.which("node") or not parser.is_file():
        pytest.skip("node or the allure npm package (npm ci --prefix reports) is not installed")
    pairs = {"a key": " lead=x:y#!\\ \n\tü€", "image.kserve/x/manager": "kserve/kserve-controller:v0.11.0@sha256:ab"}
    (tmp_path / "env.properties").write_text(properties_text(pairs), encoding="ascii")
    script = (f"import('{parser.as_uri()}').then(m => console.log(JSON.stringify(m.parseProperties("
              f"require('fs').readFileSync(process.argv[1], 'utf8')))))")
    proc = subprocess.run(["node", "-e", script, str(tmp_path / "env.properties")], capture_output=True, text=True,
                          timeout=30, check=True)
    assert json.loads(proc.stdout) == pairs
