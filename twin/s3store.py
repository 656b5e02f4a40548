"""The twin's S3-compatible store, standing in for a DigitalOcean Space: moto's server (PyPI moto, server mode).

`python -m twin.s3store HOST:PORT MODEL_FILE WRONG_MODEL_FILE SETTINGS_FD` runs inside the twin's network namespace
on the node's address, where the model Pods' storage initializer reaches it as it would reach an S3 endpoint. It turns
IAM authentication on (moto's INITIAL_NO_AUTH_ACTION_COUNT: requests are unauthenticated only while the store is set
up), creates one user with its own key pair and a read policy, one bucket with the Iris model (and, beside it, a
wrong model, which the settings handed over under predict-wrong point to), then writes the settings a user would hold
(endpoint, region, URI, key pair) to the pipe SETTINGS_FD and serves until SIGTERM. A request with a wrong secret is
refused (403), a missing bucket or key is a 404, as on a real store.

A real DigitalOcean Space cannot be reached from here (no internet); moto speaks the S3 REST API that KServe's own
storage code (boto3) uses, so the download path exercised is the real one up to the endpoint.
"""
from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stack.s3 import S3Settings
from twin.processes import stop_process

BUCKET = "kstack-models"
KEY = "iris/model.joblib"
WRONG_KEY = "iris-wrong/model.joblib"   # predict-wrong: a model that answers wrongly, at a URI of its own
REGION = "fra1"                     # a DigitalOcean Spaces region slug: the signing scope the store checks
PORT = 31900
SETUP_ACTIONS = 6                   # create_user, put_user_policy, create_access_key, create_bucket, 2 put_object
START_SECONDS = 60.0


class S3StoreError(RuntimeError):
    pass


class S3Store:
    """The store process of one twin: started in its namespace, stopped with it."""

    def __init__(self, netns, host: str, model_file: Path, wrong_model_file: Path, workdir: Path):
        self.netns, self.host = netns, host
        self.model_file, self.wrong_model_file = Path(model_file), Path(wrong_model_file)
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.settings: S3Settings | None = None

    def start(self) -> S3Settings:
        """Start the store and read the settings it reports on a pipe once it serves (never written to disk)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        try:
            with open(self.workdir / "s3store.log", "ab") as log:
                self.proc = self.netns.spawn([sys.executable, "-m", "twin.s3store", f"{self.host}:{PORT}",
                                              str(self.model_file), str(self.wrong_model_file), str(write_end)],
                                             env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(write_end,))
            os.close(write_end)
            write_end = -1
            data = b""
            deadline = time.monotonic() + START_SECONDS
            while True:        # until the store closes its end (EOF): it has served its settings, or died
                ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(read_end, 65536) if ready else None
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read_end)
            if write_end != -1:
                os.close(write_end)
        if not data:
            tail = (self.workdir / "s3store.log").read_text(errors="replace").strip().splitlines()[-3:]
            self.stop()
            raise S3StoreError(f"the twin's S3 store did not start within {START_SECONDS:.0f}s: "
                               f"{' | '.join(tail) or 'no output'}")
        self.settings = S3Settings(**json.loads(data))
        return self.settings

    def stop(self) -> None:
        stop_process(self.proc, grace=10, group=False)
        self.proc = None


def serve(address: str, model_file: Path, wrong_model_file: Path, settings_fd: int) -> int:
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
    import boto3
    from moto.server import ThreadedMotoServer

    host, _, port = address.rpartition(":")
    server = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
    server.start()
    endpoint = f"{host}:{port}"

    def client(service: str, key_id: str = "setup", secret: str = "setup"):
        return boto3.client(service, endpoint_url=f"http://{endpoint}", region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    iam = client("iam")
    iam.create_user(UserName="kstack-reader")
    iam.put_user_policy(UserName="kstack-reader", PolicyName="read-models", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket",
                                                                              "s3:HeadBucket"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName="kstack-reader")["AccessKey"]
    store = client("s3", key["AccessKeyId"], key["SecretAccessKey"])
    store.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    store.put_object(Bucket=BUCKET, Key=KEY, Body=Path(model_file).read_bytes())
    store.put_object(Bucket=BUCKET, Key=WRONG_KEY, Body=Path(wrong_model_file).read_bytes())
    settings = {"endpoint": endpoint, "region": REGION, "uri": f"s3://{BUCKET}/{KEY.rsplit('/', 1)[0]}",
                "access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "use_https": False}
    with os.fdopen(settings_fd, "w") as out:        # to the twin, on the pipe it gave (see S3Store.start)
        json.dump(settings, out)
    print(f"s3 store: serving {settings['uri']} on http://{endpoint} (region {REGION})", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


def wrong(settings: S3Settings, fault: str) -> S3Settings:
    """The settings a user got wrong, for the s3-* faults: the check must name each cause; under predict-wrong, the
    URI of a model that answers wrongly."""
    from dataclasses import replace
    if fault == "s3-wrong-credentials":
        return replace(settings, secret_access_key=secrets.token_urlsafe(30))
    if fault == "s3-no-bucket":
        return replace(settings, uri=settings.uri.replace(f"s3://{BUCKET}/", "s3://kstack-no-such-bucket/", 1))
    if fault == "s3-wrong-key":
        return replace(settings, uri=f"s3://{BUCKET}/no-such-model")
    if fault == "predict-wrong":
        return replace(settings, uri=f"s3://{BUCKET}/{WRONG_KEY.rsplit('/', 1)[0]}")
    return settings


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))
