"""The twin's model server: the real KServe ModelServer serving the model file the storage initializer fetched."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT
from twin.modelserver import EXPECTED_PREDICTIONS, SAMPLE_INSTANCES
from twin.objectstore import IRIS_URI, ObjectStore

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model_dir: Path, name: str = "sklearn-iris"):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "twin.modelserver", f"--model_name={name}",
                             f"--model_dir={model_dir}", f"--http_port={port}", "--bind=127.0.0.1",
                             "--log-level=WARNING"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc, url: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if requests.get(f"{url}/v1/models/{name}", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("model server not ready")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ObjectStore:
    s = ObjectStore(tmp_path_factory.mktemp("store"))
    s.ensure_iris()
    return s


@pytest.fixture(scope="module")
def servers(store):
    good, good_url = serve(store.path_for(IRIS_URI))
    wrong, wrong_url = serve(store.path_for(IRIS_URI, wrong=True))
    try:
        wait_ready(good, good_url, "sklearn-iris")
        wait_ready(wrong, wrong_url, "sklearn-iris")
        yield {"good": good_url, "wrong": wrong_url}
    finally:
        for p in (good, wrong):
            p.terminate()
            p.wait(15)


def test_v1_and_v2_predict_the_iris_sample(servers):
    v1 = requests.post(f"{servers['good']}/v1/models/sklearn-iris:predict", json={"instances": SAMPLE_INSTANCES})
    assert v1.json() == {"predictions": EXPECTED_PREDICTIONS}
    v2 = requests.post(f"{servers['good']}/v2/models/sklearn-iris/infer", json={"inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": SAMPLE_INSTANCES}]})
    assert v2.json()["outputs"][0]["data"] == EXPECTED_PREDICTIONS


def test_the_predict_wrong_model_answers_other_classes(servers):
    got = requests.post(f"{servers['wrong']}/v1/models/sklearn-iris:predict", json={"instances": SAMPLE_INSTANCES})
    assert got.status_code == 200 and got.json()["predictions"] != EXPECTED_PREDICTIONS


def test_metrics_count_the_predict_calls(servers):
    text = requests.get(f"{servers['good']}/metrics").text
    assert "request_predict_seconds" in text


def test_a_directory_without_a_model_file_fails_with_kserves_message(tmp_path):
    proc, _ = serve(tmp_path)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1 and f"Missing model file in {tmp_path}" in out
