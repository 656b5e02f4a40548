"""The model metrics of AC-METRICS as prometheus_client writes them, and the PromQL client of AC-PROMQL against a
local HTTP server answering as Prometheus' query API does (documented at prometheus.io/docs/prometheus/latest/
querying/api/)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from stack.metrics import MetricsError, PrometheusClient, predict_count, predict_series_query


def exposition(observations: dict[str, int]) -> str:
    """What a KServe model server exposes after these predict calls per model (kserve/metrics.py's histogram)."""
    registry = CollectorRegistry()
    hist = Histogram("request_predict_seconds", "predict request latency", ["model_name"], registry=registry)
    for model, calls in observations.items():
        for _ in range(calls):
            hist.labels(model_name=model).observe(0.004)
    return generate_latest(registry).decode()


def test_the_predict_count_is_the_models_histogram_count():
    assert predict_count(exposition({"sklearn-iris": 5, "other": 2}), "sklearn-iris") == 5
    assert predict_count(exposition({"other": 2}), "sklearn-iris") == 0        # exposed, never observed for it
    assert predict_count("# HELP up whatever\n# TYPE up gauge\nup 1\n", "sklearn-iris") is None
    with pytest.raises(MetricsError):
        predict_count("<html>not metrics</html>", "sklearn-iris")


class PrometheusStub(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict]] = {}

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        status, body = self.answers.get(query, (200, {"status": "success",
                                                      "data": {"resultType": "vector", "result": []}}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), PrometheusStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_instant_query_returns_its_series(prometheus):
    promql = predict_series_query("sklearn-iris", "kstack-iris-1")
    assert promql == 'request_predict_seconds_count{model_name="sklearn-iris", namespace="kstack-iris-1"}'
    PrometheusStub.answers = {promql: (200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "request_predict_seconds_count", "model_name": "sklearn-iris",
                    "namespace": "kstack-iris-1", "pod": "sklearn-iris-predictor-0"}, "value": [1764700000.1, "6"]}]}})}
    [series] = PrometheusClient(prometheus).series(promql)
    assert series.value == 6 and series.labels["pod"] == "sklearn-iris-predictor-0"
    assert PrometheusClient(prometheus).series("absent_metric") == []


def test_a_refused_query_and_an_unreachable_prometheus_are_one_clear_error(prometheus):
    PrometheusStub.answers = {"bad(": (400, {"status": "error", "errorType": "bad_data",
                                             "error": "1:5: parse error: unclosed left parenthesis"})}
    with pytest.raises(MetricsError, match="refused 'bad\\(': HTTP 400 bad_data 1:5: parse error"):
        PrometheusClient(prometheus).series("bad(")
    with pytest.raises(MetricsError, match="unreachable"):
        PrometheusClient("http://127.0.0.1:9", timeout=2).series("up")
