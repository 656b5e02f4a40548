"""The model server's Prometheus metrics, and a Prometheus that scrapes them.

KServe's Python model servers (sklearnserver among them) time every predict call into the histogram
`request_predict_seconds{model_name=...}` (python/kserve/kserve/metrics.py, PREDICT_HIST_TIME, the same name from
v0.11 to v0.21) and serve it at the port and path their ServingRuntime annotates (`prometheus.kserve.io/port: "8080"`,
`prometheus.kserve.io/path: /metrics` in kserve-runtimes.yaml). Its `_count` series is the number of predict calls
the server handled.

    scrape(kube, pod)                       the predictor pod's exposition, through the API server's pod proxy
    predict_count(exposition, model)        that count, parsed as Prometheus parses it
    PrometheusClient(url).series(...)       the instant query API (/api/v1/query), for AC-PROMQL
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from stack.failures import Category

if TYPE_CHECKING:
    from stack.kube import Kube

PREDICT_HISTOGRAM = "request_predict_seconds"
PORT_ANNOTATION, PATH_ANNOTATION = "prometheus.kserve.io/port", "prometheus.kserve.io/path"
DEFAULT_PORT, DEFAULT_PATH = "8080", "/metrics"


class MetricsError(Exception):
    """The metrics could not be read: the endpoint answered an error, or not in Prometheus' format."""
    category = Category.MONITORING


@dataclass(frozen=True)
class Scrape:
    pod: str
    port: str
    path: str
    text: str


def scrape(kube: Kube, pod: dict) -> Scrape:
    meta = pod["metadata"]
    annotations = meta.get("annotations") or {}
    port = annotations.get(PORT_ANNOTATION, DEFAULT_PORT)
    path = annotations.get(PATH_ANNOTATION, DEFAULT_PATH)
    status, text = kube.pod_proxy(meta["namespace"], meta["name"], port, "GET", path)
    if status != 200:
        raise MetricsError(f"GET {path} on pod {meta['namespace']}/{meta['name']}:{port} answered HTTP {status}: "
                           f"{text[:200]}")
    return Scrape(meta["name"], port, path, text)


def predict_count(exposition: str, model: str) -> float | None:
    """The model's predict count; 0 when the histogram is exposed but has not seen this model yet (a labelled
    histogram has no sample before its first observation), None when the server exposes no such histogram."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        families = list(text_string_to_metric_families(exposition))
    except ValueError as e:
        raise MetricsError(f"the metrics are not in Prometheus' text format: {e}") from None
    histogram = next((f for f in families if f.name == PREDICT_HISTOGRAM), None)
    if histogram is None:
        return None
    return sum(s.value for s in histogram.samples
               if s.name == f"{PREDICT_HISTOGRAM}_count" and s.labels.get("model_name") == model)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    def __init__(self, url: str, timeout: float = 10):
        self.url, self.timeout = url.rstrip("/"), timeout

    def series(self, promql: str) -> list[Series]:
        """An instant query's vector; MetricsError when Prometheus is unreachable or refuses the query."""
        try:
            r = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout)
        except requests.RequestException as e:
            raise MetricsError(f"Prometheus at {self.url} unreachable: {e}") from None
        try:
            body = r.json()
        except ValueError:
            raise MetricsError(f"Prometheus at {self.url} answered HTTP {r.status_code}, not JSON: {r.text[:200]}") \
                from None
        if r.status_code != 200 or body.get("status") != "success":
            raise MetricsError(f"Prometheus refused {promql!r}: HTTP {r.status_code} {body.get('errorType', '')} "
                               f"{body.get('error', '')}".rstrip())
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise MetricsError(f"Prometheus answered {promql!r} with a {data.get('resultType')}, not a vector")
        return [Series(dict(item.get("metric") or {}), float((item.get("value") or [0, "nan"])[1]))
                for item in data.get("result") or []]


def predict_series_query(model: str, namespace: str) -> str:
    return f'{PREDICT_HISTOGRAM}_count{{model_name="{model}", namespace="{namespace}"}}'
