"""Where the Iris model's S3 copy lives (AC-IRIS-S3): an S3-compatible store such as a DigitalOcean Space.

One dataclass, read from the KSTACK_S3_* environment of a run or handed over by the twin (its own S3 server), and
turned here into the objects KServe documents for S3 (docs/samples/storage/s3/s3_secret.yaml): a Secret carrying
the s3-* annotations (KServe reads them from the Secret; from the ServiceAccount only with IRSA) and the key pair,
and a ServiceAccount listing it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

ENV = {"endpoint": "KSTACK_S3_ENDPOINT", "region": "KSTACK_S3_REGION", "uri": "KSTACK_S3_URI",
       "access_key_id": "KSTACK_S3_ACCESS_KEY_ID", "secret_access_key": "KSTACK_S3_SECRET_ACCESS_KEY"}
USE_HTTPS_ENV = "KSTACK_S3_USEHTTPS"
SECRET_NAME = "kstack-s3"


@dataclass(frozen=True)
class S3Settings:
    # The bare host[:port], as KServe v0.11 builds "https://" + endpoint (a scheme here would double it):
    # <region>.digitaloceanspaces.com for a DigitalOcean Space.
    endpoint: str
    region: str
    uri: str                          # s3://bucket/path/to/model
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    use_https: bool = True

    @staticmethod
    def from_env(environ: Mapping[str, str] | None = None) -> "S3Settings | None":
        """The settings when every KSTACK_S3_* is set, else None (see missing_env)."""
        environ = os.environ if environ is None else environ
        if missing_env(environ):
            return None
        values = {name: environ[var] for name, var in ENV.items()}
        return S3Settings(**values, use_https=environ.get(USE_HTTPS_ENV, "1") != "0")

    def secrets(self) -> tuple[str, str]:
        """The values no output may show."""
        return self.access_key_id, self.secret_access_key

    def objects(self, namespace: str) -> list[dict]:
        """The Secret and ServiceAccount an InferenceService with serviceAccountName=SECRET_NAME reads S3 with."""
        annotations = {"serving.kserve.io/s3-endpoint": self.endpoint, "serving.kserve.io/s3-region": self.region,
                       "serving.kserve.io/s3-usehttps": "1" if self.use_https else "0"}
        return [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": SECRET_NAME, "namespace": namespace, "annotations": annotations},
                 "stringData": {"AWS_ACCESS_KEY_ID": self.access_key_id,
                                "AWS_SECRET_ACCESS_KEY": self.secret_access_key}},
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": SECRET_NAME, "namespace": namespace}, "secrets": [{"name": SECRET_NAME}]}]


def missing_env(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return [var for var in ENV.values() if not environ.get(var)]


def settings_for(handed_over: S3Settings | None) -> S3Settings | None:
    """The run's S3 store: the one KSTACK_S3_* names (what the user asked for wins), else the one the cluster
    provider handed over (the twin runs its own)."""
    return S3Settings.from_env() or handed_over
