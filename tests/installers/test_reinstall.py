"""`--install always` on an installed stack must not regress it: KServe's webhook configurations and its
InferenceService CRD ship the placeholder caBundle `Cg==` that cert-manager's cainjector replaces; a server-side
re-apply must not reset an injected caBundle (the webhooks would refuse every call until the cainjector re-injects)."""
from __future__ import annotations

import threading

import pytest

from installers.plan import Plan
from stack.checks import ADMISSION_API, WEBHOOK_KINDS
from stack.kube import Kube
from stack.profile import Profile
from stack.readiness import ca_bundle_problem
from tests.installers.conftest import INSTALL_SCALE, make_env

pytestmark = pytest.mark.twin

CRD = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")


def _bundles(obj: dict) -> list[str | None]:
    if obj.get("kind") == CRD[1]:
        webhook = (((obj.get("spec") or {}).get("conversion") or {}).get("webhook") or {})
        return [(webhook.get("clientConfig") or {}).get("caBundle")] if webhook else []
    return [(w.get("clientConfig") or {}).get("caBundle") for w in obj.get("webhooks") or []]


class BundleRecorder:
    """Watches the KServe webhook configurations and the InferenceService CRD; records every caBundle a client sees."""

    def __init__(self, kube: Kube, names: set[str]):
        self.kube, self.names = kube, names
        self.seen: list[tuple[str, str, str | None]] = []   # (kind, name, caBundle)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._watch, args=(api, kind), daemon=True)
                        for api, kind in [(ADMISSION_API, k) for k in WEBHOOK_KINDS] + [CRD]]

    def _watch(self, api: str, kind: str) -> None:
        _, rv = self.kube.list(api, kind)
        while not self.stop.is_set():
            for _, obj in self.kube.watch(api, kind, None, rv, 1):
                rv = obj["metadata"].get("resourceVersion", rv)
                if obj["metadata"].get("name") in self.names:
                    self.seen += [(kind, obj["metadata"]["name"], b) for b in _bundles(obj)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def installed(tmp_path):
    """The seed stack as the Plan installed it (the twin's snapshot is that install; its caBundles are injected)."""
    e = make_env(tmp_path, Profile.load("seed"), preinstalled=True)
    try:
        yield e
    finally:
        e.twin.stop()


def test_install_always_keeps_the_injected_ca_bundles_and_the_webhooks_admitting(installed):
    e = installed
    kube = Kube(e.twin.kubeconfig_path, e.twin.context)
    kserve = e.profile.components["kserve"]
    names = {w["name"] for w in kserve.inventory["webhooks"]} | {"inferenceservices.serving.kserve.io"}
    start = len(e.twin.api.request_log.entries())
    with BundleRecorder(kube, names) as recorder:
        report = Plan(e.ctx(mode="always", timeout_scale=INSTALL_SCALE)).install()
    assert [c.action for c in report.components] == ["reapplied"] * 4
    # The re-install applied them (server-side); a real API server changes nothing, so sends no event, when an
    # apply leaves an object as it was: `recorder.seen` holds whatever changed, and none of it may regress.
    applied = {x.name for x in e.twin.api.request_log.entries()[start:] if x.verb == "apply" and x.resource in (
        "mutatingwebhookconfigurations", "validatingwebhookconfigurations", "customresourcedefinitions")}
    assert names <= applied, f"the re-install did not apply {sorted(names - applied)}"
    assert any("inferenceservice.serving.kserve.io keeps its injected caBundle" in line for line in e.lines), e.lines
    regressed = sorted({(kind, name, ca_bundle_problem(b)) for kind, name, b in recorder.seen if ca_bundle_problem(b)})
    assert not regressed, f"a re-apply reset injected caBundles: {regressed}"
    for kind in WEBHOOK_KINDS:
        for cfg in kube.list(ADMISSION_API, kind)[0]:
            if cfg["metadata"]["name"] in names:
                assert all(ca_bundle_problem(b) is None for b in _bundles(cfg)), cfg["metadata"]["name"]
    # ... and the InferenceService webhook still admits a valid object and denies an invalid one
    probe = kserve.data["admission_probes"][0]
    kube.create({**probe["admit"], "metadata": {**probe["admit"]["metadata"], "namespace": "default"}}, dry_run=True)
    with pytest.raises(Exception, match="must start with alphabetical character"):
        kube.create({**probe["deny"], "metadata": {**probe["deny"]["metadata"], "namespace": "default"}}, dry_run=True)
