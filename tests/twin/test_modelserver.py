"""twin.modelserver: a real KServe ModelServer serving the sklearn Iris model, on loopback only, and cleaned up."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from twin.gateway import Gateway
from twin.modelserver import (EXIT_SAMPLE_MISMATCH, EXPECTED_PREDICTIONS, REPO_ROOT, SAMPLE_INSTANCES, ModelServerProcess, sample_check,
                              train_iris)

pytestmark = pytest.mark.slow

MODEL = "sklearn-iris"
V2_BODY = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": SAMPLE_INSTANCES}]}
READY_TIMEOUT = 60


@pytest.fixture(scope="module")
def servers():
    """Three servers started in parallel: the correct one, the predict-wrong one, and one for the stop() test."""
    procs = {"ok": ModelServerProcess(MODEL), "wrong": ModelServerProcess(MODEL, wrong=True),
             "disposable": ModelServerProcess("disposable")}
    try:
        for proc in procs.values():
            proc.start()
        for name, proc in procs.items():
            assert proc.wait_ready(READY_TIMEOUT), f"{name} server not ready: {proc!r}\n{proc.output()[-3000:]}"
            print(f"model server {name}: start-to-ready {proc.startup_seconds:.2f}s")
        yield procs
    finally:
        with ThreadPoolExecutor() as pool:
            list(pool.map(ModelServerProcess.stop, procs.values()))


def _predict(url: str, **kw) -> requests.Response:
    return requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": SAMPLE_INSTANCES}, timeout=10, **kw)


def _listening_sockets(pids: set) -> list:
    """(local address, port) of every TCP LISTEN socket (v4 and v6) owned by the given pids, from /proc."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                addr_hex, port_hex = local.split(":")
                if len(addr_hex) == 8:
                    addr = ".".join(str(b) for b in reversed(bytes.fromhex(addr_hex)))
                else:
                    addr = "v6:" + addr_hex
                found.append((addr, int(port_hex, 16)))
    return found


def _group_members(pgid: int) -> set:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ...
                members.add(int(entry.name))
    return members


def _wait_gone(pid: int, timeout: float) -> bool:
    """Event-driven wait (pidfd) for a process that is not our child to terminate."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_sample_check_unit():
    assert sample_check(train_iris()) is None
    assert "predicted the correct" in sample_check(train_iris(), wrong=True)
    assert "expected [1, 1]" in sample_check(train_iris(wrong=True))


def test_self_check_failure_exits_nonzero_with_message():
    # Make the canonical expectation unreachable and run the real entry point: it must refuse to serve.
    script = ("import sys; import twin.modelserver as m; m.EXPECTED_PREDICTIONS[:] = [0, 0]; "
              "sys.exit(m.main(['--model-name', 'x', '--http-port', '1']))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_SAMPLE_MISMATCH, done.stderr
    assert "self-check failed" in done.stderr and "expected [0, 0]" in done.stderr


def test_v1_predict_is_1_1(servers):
    r = _predict(servers["ok"].url)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": EXPECTED_PREDICTIONS}


def test_v2_infer_is_1_1(servers):
    r = requests.post(f"{servers['ok'].url}/v2/models/{MODEL}/infer", json=V2_BODY, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["data"] == EXPECTED_PREDICTIONS
    assert out["shape"] == [2]


def test_readiness_endpoints_and_errors(servers):
    url = servers["ok"].url
    assert requests.get(f"{url}/v1/models/{MODEL}", timeout=5).json() == {"name": MODEL, "ready": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/v1/models/other", timeout=5).status_code == 404
    bad = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [[1.0, 2.0]]}, timeout=5)
    assert bad.status_code == 400 and "4 features" in bad.text
    assert servers["ok"].ready()


def test_wrong_model_gives_wrong_classes(servers):
    v1 = _predict(servers["wrong"].url).json()["predictions"]
    v2 = requests.post(f"{servers['wrong'].url}/v2/models/{MODEL}/infer", json=V2_BODY, timeout=10).json()
    assert v1 != EXPECTED_PREDICTIONS
    assert set(v1) <= {0, 1, 2}  # real (wrong) Iris classes, not garbage
    assert v2["outputs"][0]["data"] == v1


def test_listens_on_loopback_only_and_no_grpc(servers):
    for proc in servers.values():
        listening = _listening_sockets(_group_members(proc.pid))
        assert listening == [("127.0.0.1", proc.port)], listening  # no 0.0.0.0/::, no gRPC (8081) port


def test_through_gateway_end_to_end(servers):
    with Gateway() as gw:
        gw.set_route(f"{MODEL}.default.example.com", servers["ok"].url)
        gw.set_route(f"{MODEL}.wrong.example.com", servers["wrong"].url)
        r = _predict(gw.url, headers={"Host": f"{MODEL}.default.example.com"})
        assert r.status_code == 200 and r.json() == {"predictions": EXPECTED_PREDICTIONS}
        assert r.headers["server"] == "istio-envoy" and "x-envoy-upstream-service-time" in r.headers
        r2 = requests.post(f"{gw.url}/v2/models/{MODEL}/infer", json=V2_BODY, timeout=10,
                           headers={"Host": f"{MODEL}.default.example.com:80"})
        assert r2.json()["outputs"][0]["data"] == EXPECTED_PREDICTIONS
        assert _predict(gw.url, headers={"Host": f"{MODEL}.wrong.example.com"}).json()["predictions"] != [1, 1]
        assert _predict(gw.url, headers={"Host": "unknown.example.com"}).status_code == 404


def test_stop_leaves_no_process_and_frees_port(servers):
    proc = servers["disposable"]
    pid, port, url = proc.pid, proc.port, proc.url
    assert _pid_alive(pid)
    started = time.monotonic()
    proc.stop()
    stopped_in = time.monotonic() - started
    proc.stop()  # idempotent
    assert not _pid_alive(pid) and not _group_members(pid)
    assert not proc.ready()
    assert stopped_in < 8, stopped_in
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v2/health/ready", timeout=2)
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


_ORPHAN_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from twin.modelserver import ModelServerProcess
    procs = [ModelServerProcess("atexit-a"), ModelServerProcess("orphan-b")]
    for p in procs:
        p.start()
    assert all(p.wait_ready(60) for p in procs), [p.output() for p in procs]
    print(procs[0].pid, procs[1].pid, flush=True)
    if sys.argv[1] == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)   # KeyboardInterrupt -> atexit stops both
        signal.pause()
    os._exit(0)                               # no atexit at all: the servers notice their parent is gone
""")


@pytest.mark.parametrize("how", ["interrupt", "hard-exit"])
def test_no_server_left_behind_when_parent_ends(how):
    script = _ORPHAN_SCRIPT.format(root=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, timeout=90)
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2, done.stdout + done.stderr
    if how == "interrupt":
        assert "KeyboardInterrupt" in done.stderr
        assert not any(_pid_alive(p) for p in pids)  # atexit stopped them before the parent exited
    else:
        assert all(_wait_gone(p, 10) for p in pids), [p for p in pids if _pid_alive(p)]
