"""Build realistic allure-results folders: *-result.json with our labels, kstack-run.json, phases and inventory."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from stack.record import RunRecord, from_data, write_run

COMPONENTS = {"cert-manager": "v1.13.0", "istio": "1.19.0", "knative": "v1.11.0", "kserve": "v0.11.0"}

# The fake results' ids, each standing for a real test of the acceptance suites (module, function, the component it
# is parametrised with): its criteria and feature are read from that test's own markers (`suite_labels`), so a
# criterion added to or moved between the suites' tests is what these report tests see too.
SUITE_TESTS: dict[str, tuple[str, str, str | None]] = {
    "STACK-NS-ACTIVE[cert-manager]": ("test_readiness", "test_namespaces_active", "cert-manager"),
    "STACK-NS-ACTIVE[istio-system]": ("test_readiness", "test_namespaces_active", "istio"),
    "STACK-NS-ACTIVE[knative-serving]": ("test_readiness", "test_namespaces_active", "knative"),
    "STACK-NS-ACTIVE[kserve]": ("test_readiness", "test_namespaces_active", "kserve"),
    "STACK-WORKLOADS-READY[istio]": ("test_readiness", "test_workloads_ready", "istio"),
    "STACK-WORKLOADS-READY[knative]": ("test_readiness", "test_workloads_ready", "knative"),
    "STACK-WORKLOADS-READY[kserve]": ("test_readiness", "test_workloads_ready", "kserve"),
    "STACK-WORKLOADS-READY[cert-manager]": ("test_readiness", "test_workloads_ready", "cert-manager"),
    "STACK-CRDS-ESTABLISHED[kserve]": ("test_crds", "test_crds_established", "kserve"),
    "STACK-CRDS-ESTABLISHED[cert-manager]": ("test_crds", "test_crds_established", "cert-manager"),
    "STACK-WEBHOOKS-ADMIT[kserve]": ("test_webhooks", "test_webhooks_admitting", "kserve"),
    "STACK-CERT-ROUNDTRIP": ("test_certificates", "test_certificate_roundtrip", None),
    "STACK-IRIS-PREDICT": ("test_inference", "test_iris_predict_v1", None),
    "STACK-RBAC-DEFAULT-SA": ("test_security", "test_default_service_account_cannot_read_secrets", None),
    "STACK-CERT-EXPIRY": ("test_security", "test_no_stack_certificate_expires_within_the_window", None),
    "STACK-MODEL-METRICS": ("test_monitoring", "test_model_metrics_count_the_predict_calls", None),
    "STACK-AUTOSCALING": ("test_autoscaling", "test_autoscaling_follows_the_inference_service", None),
    "STACK-SCALE-TO-ZERO": ("test_autoscaling", "test_scale_to_zero_and_cold_start", None),
    "STACK-SCALE-OUT": ("test_autoscaling", "test_replicas_rise_under_load_and_fall_back", None),
}


def suite_labels(module: str, function: str, component: str | None) -> tuple[list[str], str]:
    """A suite test's criteria (its `criteria` marker, and the component's own criterion for a test parametrised
    with one, as fixtures/plugin.item_criteria adds it) and its Allure feature (its area's, else the component)."""
    import importlib

    from stack.criteria import COMPONENT_CRITERION
    mod = importlib.import_module(f"suites.acceptance.{module}")
    marks = list(getattr(getattr(mod, function), "pytestmark", [])) + list(getattr(mod, "pytestmark", []))
    criteria = [c for m in marks if m.name == "criteria" for c in m.args]
    if component in COMPONENT_CRITERION:
        criteria.append(COMPONENT_CRITERION[component])
    feature = next((m.kwargs["feature"] for m in marks if m.name == "area" and m.kwargs.get("feature")), None)
    return list(dict.fromkeys(criteria)), feature or component or "stack"


# The stack's namespaces -> their component (the fake run's namespaces and pods, per the components it has).
NAMESPACE_COMPONENT = {"cert-manager": "cert-manager", "istio-system": "istio", "knative-serving": "knative",
                       "kserve": "kserve"}

# AS_ID -> criteria, as the acceptance suites tag the tests they stand for
TESTS: dict[str, list[str]] = {test_id: suite_labels(*where)[0] for test_id, where in SUITE_TESTS.items()}


def _feature(test_id: str) -> str:
    return suite_labels(*SUITE_TESTS[test_id])[1] if test_id in SUITE_TESTS else "stack"


class ResultsFactory:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.clock = 1_750_000_000_000

    # -- allure results ------------------------------------------------------------------------------------------
    def result(self, test_id: str, status: str = "passed", message: str | None = None,
               criteria: list[str] | None = None, stop: int | None = None, name: str | None = None) -> Path:
        """`name`: what allure-pytest writes there, the test's allure.title (default: a name of the id)."""
        criteria = TESTS.get(test_id, []) if criteria is None else criteria
        self.clock += 1000
        start = self.clock if stop is None else stop - 500
        stop = self.clock + 500 if stop is None else stop
        result_uuid = str(uuid.uuid4())
        data: dict[str, Any] = {
            "name": name or f"test {test_id}",
            "status": status,
            "uuid": result_uuid,
            "historyId": uuid.uuid5(uuid.NAMESPACE_URL, test_id).hex,
            "testCaseId": uuid.uuid5(uuid.NAMESPACE_DNS, test_id).hex,
            "fullName": f"suites.acceptance.test_stack#{test_id}",
            "start": start,
            "stop": stop,
            "labels": [
                {"name": "as_id", "value": test_id},
                {"name": "epic", "value": "KServe stack"},
                {"name": "feature", "value": _feature(test_id)},
                {"name": "story", "value": test_id.split("[")[0]},
                {"name": "severity", "value": "critical"},
                {"name": "framework", "value": "pytest"},
                {"name": "language", "value": "cpython3"},
                {"name": "suite", "value": "test_stack"},
                *({"name": "criterion", "value": c} for c in criteria),
            ],
            "steps": [],
            "attachments": [],
            "parameters": [],
        }
        if message is not None or status != "passed":
            details = {"message": message or ""}
            if status in ("failed", "broken"):
                details["trace"] = f"Traceback (most recent call last):\n  ...\n{message}"
            data["statusDetails"] = details
        path = self.root / f"{result_uuid}-result.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    def all_passed(self, skip: set[str] = frozenset()) -> None:
        for test_id in TESTS:
            if test_id not in skip:
                self.result(test_id)

    # -- kstack metadata -----------------------------------------------------------------------------------------
    def inventory(self, ids: list[str] | None = None, worker: str = "gw0", split: int = 1,
                  deselected: frozenset[str] = frozenset()) -> None:
        """`deselected`: ids that -k/-m left out, as pytest_deselected marks them."""
        ids = list(TESTS) if ids is None else ids
        items = [{"id": i, "nodeid": f"suites/acceptance/test_stack.py::test_x[{i}]", "criteria": TESTS.get(i, []),
                  "deselected": i in deselected} for i in ids]
        if split == 1:
            (self.root / f"kstack-inventory-{worker}.json").write_text(json.dumps(items))
            return
        for n in range(split):  # every worker records the full inventory, as under xdist
            (self.root / f"kstack-inventory-gw{n}.json").write_text(json.dumps(items))

    def phases(self, items: list[dict] | None = None, worker: str = "controller") -> None:
        items = items if items is not None else [
            {"name": "cluster", "seconds": 41.2, "budget": 300},
            {"name": "install/cert-manager", "seconds": 35.0, "budget": 1500},
            {"name": "install/kserve", "seconds": 80.5, "budget": 1500},
        ]
        (self.root / f"kstack-phases-{worker}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))

    def run(self, simulated: bool = False, components: dict[str, str] | None = None, **overrides) -> RunRecord:
        """A RunRecord, written as the suite writes it (stack/record.py); `overrides` replace its fields."""
        from stack.criteria import CRITERIA, RunFacts

        components = dict(COMPONENTS if components is None else components)
        facts = RunFacts(frozenset(components), serverless=True)
        crits = []
        for c in CRITERIA:
            ok, reason = c.applies(facts)
            crits.append({"id": c.id, "title": c.title, "applicable": ok, "reason": reason})
        namespaces = [{"name": n, "status": "Active", "age": a} for n, a in
                      [("cert-manager", "6m4s"), ("istio-system", "4m4s"), ("knative-serving", "2m58s"),
                       ("kserve", "99s")] if NAMESPACE_COMPONENT[n] in components]
        pods = [
            {"namespace": "cert-manager", "name": "cert-manager-7bc745d694-p5ft5", "ready": "1/1", "status": "Running",
             "restarts": 0, "age": "5m12s"},
            {"namespace": "cert-manager", "name": "cert-manager-webhook-58f47fbb6b-vt58h", "ready": "1/1",
             "status": "Running", "restarts": 0, "age": "5m12s"},
            {"namespace": "istio-system", "name": "istiod-748d7b76dc-wzlws", "ready": "1/1", "status": "Running",
             "restarts": 0, "age": "3m35s"},
            {"namespace": "kserve", "name": "kserve-controller-manager-7d4b55b658-c42m9", "ready": "2/2",
             "status": "Running", "restarts": 0, "age": "71s"},
        ]
        run = {
            "simulated": simulated,
            "profile": "seed",
            "profile_path": "profiles/seed.yaml",
            "versions": components,
            "running_versions": dict(components),
            "cluster": {"provider": "twin" if simulated else "kind", "server_version": "v1.27.3",
                        "context": "twin" if simulated else "kind-kstack",
                        "node_image": "kindest/node:v1.27.3@sha256:3966ac761ae0136263ffdb6cfd4db23ef8a83cba8a463690e98317add2c9ba72",
                        "nodes": [{"name": "kstack-control-plane", "kubelet_version": "v1.27.3",
                                   "container_runtime": "containerd://1.7.1", "os_image": "Debian GNU/Linux 11 (bullseye)"}]},
            "started": "2025-07-30T10:00:00+00:00",
            "finished": "2025-07-30T10:09:00+00:00",
            "duration_seconds": 540.0,
            "namespaces": namespaces,
            "pods": [p for p in pods if NAMESPACE_COMPONENT[p["namespace"]] in components],
            "images": [{"component": "kserve", "namespace": "kserve", "workload": "kserve-controller-manager",
                        "container": "manager", "image": "kserve/kserve-controller:v0.11.0",
                        "digest": "sha256:" + "ab" * 32}],
            "limitations": [{"id": "servicemonitor-absent",
                             "text": "ServiceMonitor CRD absent: cert-manager Prometheus monitoring disabled"}],
            "criteria": crits,
            "downloads": [{"url": "https://github.com/kserve/kserve/releases/download/v0.11.0/kserve.yaml",
                           "sha256": "cd" * 32, "pinned": False}],
            "suite": {"version": "0.1.0", "commit": "0cd41107c1f4b2a3e5d6f7a8b9c0d1e2f3a4b5c6", "dirty": False,
                      "python": "3.11.7", "pytest": "9.2.0"},
            "runner": {"hostname": "runner-7", "ci": "GitHub Actions",
                       "ci_url": "https://github.com/acme/kstack/actions/runs/987654321/attempts/2", "ci_attempt": "2"},
        }
        run.update(overrides)
        record = from_data(RunRecord, run)
        write_run(self.root, record)
        return record

    def full_run(self, simulated: bool = False) -> RunRecord:
        run = self.run(simulated=simulated)
        self.phases()
        self.inventory(split=2)
        self.all_passed()
        return run
