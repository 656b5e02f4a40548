"""Redaction: Secret data, kubeconfig credentials, secret-looking env values and registered values never survive."""
from __future__ import annotations

from stack.redact import REDACTED, redact_object, register_secret, scrub


def test_secret_data_and_last_applied_are_redacted():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": '{"data": {"k": "c2VjcmV0"}}'}},
        "data": {"tls.key": "c2VjcmV0"}, "stringData": {"AWS_SECRET_ACCESS_KEY": "plain"}}
    out = redact_object(secret)
    assert out["data"] == {"tls.key": REDACTED} and out["stringData"] == {"AWS_SECRET_ACCESS_KEY": REDACTED}
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == REDACTED
    assert secret["data"]["tls.key"] == "c2VjcmV0", "the original is not modified"


def test_env_values_that_look_secret_and_registered_values():
    register_secret("AKIAEXAMPLEVALUE1234")
    pod = {"kind": "Pod", "spec": {"containers": [{"env": [
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}, {"name": "MODE", "value": "AKIAEXAMPLEVALUE1234 used"},
        {"name": "REGION", "value": "ams3"}]}]}}
    env = redact_object(pod)["spec"]["containers"][0]["env"]
    assert env[0]["value"] == REDACTED
    assert env[1]["value"] == f"{REDACTED} used"
    assert env[2]["value"] == "ams3"


def test_scrub_removes_private_keys_and_bearer_tokens():
    text = "Authorization: Bearer abc.def\n-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----"
    out = scrub(text)
    assert "abc.def" not in out and "MHc" not in out


def test_kubeconfig_users_are_redacted():
    cfg = {"kind": "Config", "users": [{"name": "u", "user": {"token": "t0k3n", "client-key-data": "a2V5"}}]}
    assert redact_object(cfg)["users"][0]["user"] == {"token": REDACTED, "client-key-data": REDACTED}


def test_exported_files_are_scrubbed_in_place(tmp_path, monkeypatch):
    """python -m stack.redact DIR --env NAME: what CI runs on exported cluster logs before it uploads them."""
    from stack.redact import main
    monkeypatch.setenv("KSTACK_TEST_PLANTED", "planted-value-7f3e")
    (tmp_path / "pods").mkdir()
    (tmp_path / "pods" / "storage-initializer.log").write_text("key planted-value-7f3e used\n")
    (tmp_path / "clean.log").write_text("nothing to hide\n")
    (tmp_path / "image.bin").write_bytes(b"\xff\xfeplanted-value-7f3e")
    assert main([str(tmp_path), "--env", "KSTACK_TEST_PLANTED", "--env", "KSTACK_TEST_UNSET"]) == 0
    assert (tmp_path / "pods" / "storage-initializer.log").read_text() == f"key {REDACTED} used\n"
    assert (tmp_path / "clean.log").read_text() == "nothing to hide\n"
    assert main([str(tmp_path / "absent")]) == 2
