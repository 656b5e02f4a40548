"""The Allure 3 HTML report, built offline by reports/build_html.py and rendered in headless Chromium."""
from __future__ import annotations

import re

import pytest

from reports import build_html
from reports.allure_meta import write_categories, write_environment, write_executor
from tests.helpers import CHROMIUM, headless_chromium


def test_strip_analytics():
    html_text = ('<head></head><body><div id="app"></div>\n'
                 '    <script async src="https://www.googletagmanager.com/gtag/js?id=G-X"></script>\n'
                 '    <script>\n        window.dataLayer = window.dataLayer || [];\n'
                 "        function gtag(){dataLayer.push(arguments);}\n        gtag('js', new Date());\n    </script>\n"
                 "<script>window.allureReportData = {}</script></body>")
    cleaned = build_html.strip_analytics(html_text)
    assert "googletagmanager" not in cleaned and "dataLayer" not in cleaned
    assert "window.allureReportData" in cleaned
    assert build_html.external_references(html_text)
    assert not build_html.external_references(cleaned)


@pytest.mark.slow
def test_allure_html_renders_in_chromium(factory, tmp_path):
    if not build_html.allure_installed():
        pytest.skip("the allure npm package is not installed (npm ci --prefix reports)")
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    run = factory.full_run(simulated=True)
    factory.result("STACK-IRIS-PREDICT", "failed", "timed out after 600s waiting for InferenceService iris; "
                                                   "last observed: ImagePullBackOff")
    write_environment(factory.root, run)
    write_executor(factory.root, {})
    write_categories(factory.root)
    index = build_html.build(factory.root, tmp_path / "allure-report")
    page = index.read_text(encoding="utf-8")
    assert "googletagmanager" not in page
    assert not build_html.external_references(page)

    proc = headless_chromium(index.as_uri(), tmp_path / "chromium-profile", "--virtual-time-budget=15000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b[\s\S]*?</\1>", "", proc.stdout)  # what was rendered, not the embedded data
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "KServe stack conformance" in text
    assert 'data-testid="report-title"' in dom
    assert re.search(r"Total\s+13\b", text), text[:2000]
    for story in ("STACK-NS-ACTIVE", "STACK-WORKLOADS-READY", "STACK-CRDS-ESTABLISHED", "STACK-IRIS-PREDICT"):
        assert story in text, story
    assert "test STACK-IRIS-PREDICT" in text  # the failed test's row, expanded by default
    assert "SIMULATED" in text  # environment.properties shown as metadata
