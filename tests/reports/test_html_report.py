"""The Allure 3 HTML report, built offline by reports/build_html.py and rendered in headless Chromium."""
from __future__ import annotations

import re

import pytest

from reports import build_html
from reports.allure_meta import write_categories, write_environment, write_executor
from reports.signoff import write_signoff
from tests.helpers import CHROMIUM, headless_chromium
from tests.reports.factory import TESTS


def _require_chromium() -> None:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _require_allure_and_chromium() -> None:
    if not build_html.allure_installed():
        pytest.skip("the allure npm package is not installed (npm ci --prefix reports)")
    _require_chromium()


def _rendered(url: str, tmp_path) -> tuple[str, str]:
    """The report as headless Chromium rendered it: its DOM without scripts and styles (what was rendered, not the
    embedded data), and that DOM's text with whitespace collapsed."""
    proc = headless_chromium(url, tmp_path / "chromium-profile", "--virtual-time-budget=15000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b[\s\S]*?</\1>", "", proc.stdout)
    return dom, re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


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


def test_make_report_on_empty_results_fails_and_says_why(tmp_path):
    empty = tmp_path / "allure-results"
    empty.mkdir()
    (empty / "categories.json").write_text("[]")     # what a run stopped at preflight leaves
    assert build_html.main([str(empty), "-o", str(tmp_path / "report")]) == 1
    assert not (tmp_path / "report").exists()
    with pytest.raises(build_html.BuildError, match=r"no test results in .*the run stopped before any test ran"):
        build_html.build(empty, tmp_path / "report")


@pytest.mark.slow
def test_allure_html_renders_in_chromium(factory, tmp_path):
    _require_allure_and_chromium()
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

    dom, text = _rendered(index.as_uri(), tmp_path)
    assert "KServe stack conformance" in text
    assert 'data-testid="report-title"' in dom
    assert re.search(rf"Total\s+{len(TESTS)}\b", text), text[:2000]      # every result the factory wrote
    for story in ("STACK-NS-ACTIVE", "STACK-WORKLOADS-READY", "STACK-CRDS-ESTABLISHED", "STACK-IRIS-PREDICT"):
        assert story in text, story
    assert "test STACK-IRIS-PREDICT" in text  # the failed test's row, expanded by default
    assert "SIMULATED" in text  # environment.properties shown as metadata


@pytest.mark.slow
def test_the_projects_categories_are_in_the_allure3_categories_tab(factory, tmp_path):
    """Allure 3's awesome report ignores categories.json; the suite's rules reach it through allurerc.mjs."""
    _require_allure_and_chromium()
    from stack.failures import Category
    run = factory.full_run(simulated=True)
    factory.result("STACK-WORKLOADS-READY", "failed",
                   f"{Category.IMAGE_PULL.tag} kserve ready: container kube-rbac-proxy ImagePullBackOff")
    factory.result("STACK-IRIS-PREDICT", "failed", f"{Category.PREDICT.tag} iris answered [0, 0] for [1, 1] expected")
    write_environment(factory.root, run)
    write_categories(factory.root)
    index = build_html.build(factory.root, tmp_path / "allure-report")
    _, text = _rendered(index.as_uri() + "#categories", tmp_path)
    assert f"{Category.IMAGE_PULL.title} 1" in text, text[:2000]
    assert f"{Category.PREDICT.title} 1" in text, text[:2000]
    assert "Product errors" not in text      # Allure's default bucket, where every failure went before



DIGEST = "sha256:" + "3966ac761ae0136263ffdb6cfd4db23ef8a83cba8a463690e98317add2c9ba72"
LONG_IMAGE = f"registry.mirror.example.internal:5000/gcr.io/knative-releases/knative.dev/serving/cmd/controller@{DIGEST}"
LONG_URL = ("https://objects.example.internal/kstack-mirror/github.com/kserve/kserve/releases/download/v0.11.0/"
            "kserve-runtimes-and-cluster-serving-runtimes-for-every-supported-model-format.yaml?X-Amz-Signature=" + "f" * 96)


def _long_values_run(factory) -> None:
    """A realistic results folder whose values do not fit a line: image refs with digests, unbroken messages, URLs."""
    node = {"name": "kstack-worker-" + "a1b2c3d4" * 6, "kubelet_version": "v1.27.3+k3s1-kstack.build." + "9" * 40,
            "container_runtime": "containerd://1.7.13-" + "e" * 60, "os_image": "Debian GNU/Linux 12 (bookworm) " * 4}
    factory.run(
        images=[{"component": "knative", "namespace": "knative-serving", "workload": "controller-" + "x" * 60,
                 "container": "controller", "image": LONG_IMAGE, "digest": f"{DIGEST}, {DIGEST}"}],
        pods=[{"namespace": "knative-serving", "name": "activator-" + "7d4b55b658c42m9" * 6, "ready": "1/1",
               "status": "ImagePullBackOff", "restarts": 12, "age": "5m12s"}],
        downloads=[{"url": LONG_URL, "sha256": "cd" * 32, "pinned": False}],
        cluster={"provider": "existing", "server_version": "v1.27.3+k3s1", "context": "arn:aws:eks:eu-west-1:" + "1" * 40,
                 "node_image": LONG_IMAGE, "nodes": [node, node]},
        runner={"hostname": "runner-" + "0123456789abcdef" * 5, "ci": "GitHub Actions",
                "ci_url": "https://github.com/acme-corporation-with-a-long-name/kstack-verification-suite-fork/actions/"
                          "runs/98765432109876/attempts/2", "ci_attempt": "2"},
        errors=["could not read the cluster's final state: " + LONG_URL])
    factory.phases([{"name": "install/knative-serving-with-net-istio-" + "x" * 40, "seconds": 1501.234, "budget": 1500,
                     "finished": False, "error_type": "WaitTimeout"}])
    factory.inventory()
    factory.all_passed(skip={"STACK-IRIS-PREDICT", "STACK-WORKLOADS-READY[knative]"})
    factory.result("STACK-IRIS-PREDICT", "failed", f"[predict] POST {LONG_URL} answered HTTP 503: " + "upstream" * 80,
                   name="Iris answers a v1 predict with the expected classes")
    factory.result("STACK-WORKLOADS-READY[knative]", "failed",
                   f"[image-pull] knative-serving/controller container controller: {LONG_IMAGE}:" + "Z" * 300)


def _scroll_width(html_path, tmp_path, width: int) -> tuple[int, int]:
    """(document scrollWidth, window innerWidth) of the page in headless Chromium at that window width: a copy of the
    page with a script that writes the measurement into the DOM, read back with --dump-dom."""
    page = tmp_path / "measure.html"
    script = ('<script>document.body.setAttribute("data-measure", document.documentElement.scrollWidth + " " + '
              'window.innerWidth)</script>')
    page.write_text(html_path.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    proc = headless_chromium(page.as_uri(), tmp_path / "chromium-profile", f"--window-size={width},900",
                             "--virtual-time-budget=5000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'data-measure="(\d+) (\d+)"', proc.stdout)
    assert found, proc.stdout[-2000:]
    return int(found.group(1)), int(found.group(2))


def test_the_signoff_html_has_no_horizontal_scroll_at_1400px(factory, tmp_path):
    _require_chromium()
    _long_values_run(factory)
    write_signoff(factory.root, tmp_path / "out")
    html_path = tmp_path / "out" / "signoff.html"
    assert LONG_IMAGE in html_path.read_text(encoding="utf-8")     # the long values are there to be wrapped
    scroll, inner = _scroll_width(html_path, tmp_path, 1400)
    assert inner == 1400, inner
    assert scroll <= inner, f"the page is {scroll}px wide in a {inner}px window"
