"""The twin's model server: the real KServe ModelServer serving the model file the storage initializer fetched."""
from __future__ import annotations

import http.client
import json
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


def test_the_zygote_forks_servers_in_their_pods_networks_and_reports_how_they_exit(store, tmp_path):
    """twin/zygote.py: each server runs in its Pod's network namespace (two bind the same port), answers the
    predict as a server of its own would, exits 0 on SIGTERM (uvicorn's graceful stop) and 1 with KServe's message
    when its model is missing."""
    from twin.netns import NetNamespace, PodNetwork
    from twin.processes import stop_processes
    from twin.zygote import Zygote
    node = NetNamespace().create()
    pods = [PodNetwork(node, f"10.244.0.{i}").create() for i in (11, 12)]
    zygote = Zygote(node, tmp_path / "zygote").start()
    try:
        servers = []
        for pod in pods:
            args = ["--model_name=sklearn-iris", f"--model_dir={store.path_for(IRIS_URI)}", "--http_port=8080",
                    f"--bind={pod.ip}"]
            servers.append(zygote.spawn(args, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, tmp_path,
                                        tmp_path / f"{pod.ip}.log", pod.path))
        deadline = time.monotonic() + 30
        while any(node.http_status(p.ip, 8080, "/v1/models/sklearn-iris") != 200 for p in pods):
            assert time.monotonic() < deadline and all(s.poll() is None for s in servers), \
                [(tmp_path / f"{p.ip}.log").read_text()[-2000:] for p in pods]
            time.sleep(0.1)
        for pod in pods:
            conn = http.client.HTTPConnection(pod.ip, 8080, timeout=10)
            conn._create_connection = node.create_connection
            conn.request("POST", "/v1/models/sklearn-iris:predict", json.dumps({"instances": SAMPLE_INSTANCES}),
                         {"Content-Type": "application/json"})
            assert json.loads(conn.getresponse().read()) == {"predictions": EXPECTED_PREDICTIONS}
            conn.close()
        missing = zygote.spawn(["--model_name=sklearn-iris", f"--model_dir={tmp_path / 'none'}", "--http_port=8081",
                                f"--bind={pods[0].ip}"], {"PATH": "/usr/bin:/bin"}, tmp_path, tmp_path / "missing.log",
                               pods[0].path)
        assert missing.wait(30) == 1
        assert f"Missing model file in {tmp_path / 'none'}" in (tmp_path / "missing.log").read_text()
        stop_processes(servers)
        assert [s.returncode for s in servers] == [0, 0]
    finally:
        zygote.stop()
        for pod in pods:
            pod.close()
        node.close()
