"""The S3 settings of AC-IRIS-S3: read from KSTACK_S3_*, turned into the objects KServe documents for S3."""
from __future__ import annotations

from stack.s3 import S3Settings, missing_env, settings_for

ENV = {"KSTACK_S3_ENDPOINT": "fra1.digitaloceanspaces.com", "KSTACK_S3_REGION": "fra1",
       "KSTACK_S3_URI": "s3://models/iris", "KSTACK_S3_ACCESS_KEY_ID": "DO00KSTACKEXAMPLE",
       "KSTACK_S3_SECRET_ACCESS_KEY": "kstack-example-secret"}


def test_settings_need_every_variable_and_name_the_missing_ones():
    assert S3Settings.from_env({k: v for k, v in ENV.items() if k != "KSTACK_S3_URI"}) is None
    assert missing_env({k: v for k, v in ENV.items() if k != "KSTACK_S3_URI"}) == ["KSTACK_S3_URI"]
    settings = S3Settings.from_env(ENV)
    assert settings.endpoint == "fra1.digitaloceanspaces.com" and settings.use_https
    assert not S3Settings.from_env({**ENV, "KSTACK_S3_USEHTTPS": "0"}).use_https


def test_the_secret_carries_kservess_annotations_and_the_service_account_lists_it():
    """KServe reads the s3-* annotations from the Secret (from the ServiceAccount only with IRSA), and builds
    "https://" + the endpoint in v0.11: the endpoint stays a bare host."""
    secret, sa = S3Settings.from_env(ENV).objects("ns")
    assert secret["metadata"]["annotations"] == {"serving.kserve.io/s3-endpoint": "fra1.digitaloceanspaces.com",
                                                 "serving.kserve.io/s3-region": "fra1",
                                                 "serving.kserve.io/s3-usehttps": "1"}
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "DO00KSTACKEXAMPLE",
                                    "AWS_SECRET_ACCESS_KEY": "kstack-example-secret"}
    assert sa["secrets"] == [{"name": secret["metadata"]["name"]}] and sa["metadata"]["namespace"] == "ns"


def test_the_key_pair_never_shows_in_a_repr():
    text = repr(S3Settings.from_env(ENV))
    assert "kstack-example-secret" not in text and "DO00KSTACKEXAMPLE" not in text


def test_what_the_user_sets_wins_over_what_the_cluster_handed_over(monkeypatch):
    twin = S3Settings("10.0.0.2:31900", "fra1", "s3://kstack-models/iris", "key", "secret", use_https=False)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert settings_for(twin) is twin
    assert settings_for(None) is None
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert settings_for(twin).endpoint == "fra1.digitaloceanspaces.com"
