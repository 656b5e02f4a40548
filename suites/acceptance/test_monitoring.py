"""Monitoring of the model: the Iris model server's own metrics count exactly the predict calls the suite made;
with --prometheus-url, a Prometheus that scrapes the model namespace holds the model's series; and the Prometheus
Operator monitors the profile declares select live targets."""
from __future__ import annotations

import allure
import pytest

from stack import metrics, monitors, retry
from stack.failures import Category, expect
from suites.acceptance.iris import NAME, V1_INPUT, Predictor, running_predictor_pods

pytestmark = [pytest.mark.area("monitoring", story="model metrics", feature="monitoring"),
              pytest.mark.severity("normal"), pytest.mark.needs("stack")]
CALLS = 5


def _counts(kube, pods: list[dict]) -> dict[str, float]:
    out = {}
    for pod in pods:
        scraped = metrics.scrape(kube, pod)
        count = metrics.predict_count(scraped.text, NAME)
        expect(count is not None, Category.MONITORING,
               f"pod {pod['metadata']['name']} exposes no {metrics.PREDICT_HISTOGRAM} histogram at "
               f":{scraped.port}{scraped.path}")
        out[pod["metadata"]["name"]] = count
    return out


@pytest.mark.criteria("AC-METRICS")
@allure.title("The Iris model server's metrics count exactly the predict calls made")
def test_model_metrics_count_the_predict_calls(iris, kube, profile, ingress_url, deadline, diagnostics, evidence):
    ns = iris["namespace"]
    diagnostics.namespace(ns)
    pods = running_predictor_pods(kube, ns)
    expect(pods, Category.MONITORING, f"no running predictor pod of {ns}/{NAME}")
    before = _counts(kube, pods)        # a MetricsError is filed under Monitoring
    predictor = Predictor(kube, profile, ingress_url, iris["isvc"], deadline("predict"))
    retried = kube.retries.count("predict")
    for _ in range(CALLS):    # answered 200 (what they answer is AC-IRIS-PREDICT's)
        predictor.post(f"/v1/models/{NAME}:predict", V1_INPUT)
    retried = kube.retries.count("predict") - retried
    after = _counts(kube, running_predictor_pods(kube, ns))
    counted = sum(after.values()) - sum(before.values())
    evidence.add("model metrics", {"metric": f"{metrics.PREDICT_HISTOGRAM}_count{{model_name=\"{NAME}\"}}",
                                   "before": before, "after": after, "predict calls made": CALLS,
                                   "counted": counted, "retries while routes settled": retried})
    expect(set(after) == set(before), Category.MONITORING,
           f"the predictor pods changed while counting: {sorted(before)} -> {sorted(after)}")
    expect(counted == CALLS, Category.MONITORING,
           f"{metrics.PREDICT_HISTOGRAM}_count of {NAME} rose by {counted:g} over {CALLS} predict calls "
           f"(before {before}, after {after})")


class NoSeriesYet(Exception):
    category = Category.MONITORING


@pytest.mark.criteria("AC-PROMQL")
@allure.title("Prometheus holds the Iris model's predict series")
def test_prometheus_holds_the_model_series(request, kube, profile, run_options, ingress_url, deadline, diagnostics,
                                           evidence):
    """Optional: with --prometheus-url, an instant query for the model's predict count in its namespace finds a
    series once Prometheus has scraped it (retried while it has not, within the predict budget)."""
    if not run_options.prometheus_url:      # it applies without one only where the profile requires it
        pytest.fail("the profile requires AC-PROMQL and no Prometheus was given: add --prometheus-url URL",
                    pytrace=False)
    iris = request.getfixturevalue("iris")      # only where the check applies: a broken Iris is not its failure
    ns = iris["namespace"]
    diagnostics.namespace(ns)
    budget = deadline("predict")
    Predictor(kube, profile, ingress_url, iris["isvc"], budget).post(f"/v1/models/{NAME}:predict", V1_INPUT)
    client = metrics.PrometheusClient(run_options.prometheus_url)
    promql = metrics.predict_series_query(NAME, ns)

    def query():
        found = client.series(promql)
        if not found:
            raise NoSeriesYet(f"no series for {promql} yet")
        return found
    found = retry.call(query, what="PromQL query", layer="prometheus", attempts=30, base=2.0, cap=15.0,
                       is_transient=lambda e: "not scraped yet" if isinstance(e, NoSeriesYet) else None,
                       retries=kube.retries, deadline=budget)
    evidence.add("Prometheus series", {"prometheus": run_options.prometheus_url, "query": promql,
                                       "series": [{"labels": s.labels, "value": s.value} for s in found]})
    expect(any(s.value >= 1 for s in found), Category.MONITORING,
           f"Prometheus holds {promql} but counts no predict call: {[s.value for s in found]}")


@pytest.mark.criteria("AC-MONITORS")
@allure.title("The profile's ServiceMonitors and PodMonitors exist and select live targets")
def test_the_declared_monitors_select_live_targets(kube, profile, diagnostics, evidence):
    """Optional: where the profile declares monitors (`monitors:`), each exists and selects at least one ready
    target, resolved as the Prometheus Operator resolves it (stack/monitors.py)."""
    kinds = sorted({m.kind for m in profile.monitors})
    missing = [k for k in kinds if not kube.serves(monitors.API, k)]
    expect(not missing, Category.MONITORING,
           f"the profile declares {', '.join(kinds)}s but the API serves no {', '.join(missing)} "
           f"({monitors.API}): install the Prometheus Operator or its CRDs")
    diagnostics.namespace(*sorted({m.namespace for m in profile.monitors}))
    found = [monitors.resolve(kube, m) for m in profile.monitors]
    evidence.add("monitors", {str(r.ref): {"exists": r.exists, "targets": list(r.targets), "problem": r.problem}
                              for r in found})
    bad = [r.problem for r in found if not r.ok]
    expect(not bad, Category.MONITORING, "; ".join(bad))
