"""The kind binary download, against a stub HTTP server on 127.0.0.1: an HTTP error answer is one clear error naming
the URL and the status (never hashed and reported as a checksum mismatch); a good answer is verified and cached."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading

import pytest

from fixtures import kind as kind_mod
from fixtures.preflight import PreflightError
from stack import retry
from stack.profile import Profile

BINARY = b"\x7fELF stub kind binary"


class Releases:
    """A stub of github.com/kubernetes-sigs/kind/releases/download: path -> (status, body); counts requests."""

    def __init__(self):
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []

    def handler(self):
        releases = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                releases.requests.append(self.path)
                status, body = releases.answers.get(self.path, (404, b"Not Found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler


@contextlib.contextmanager
def releases_server():
    releases = Releases()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), releases.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield releases, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def releases(monkeypatch, tmp_path):
    monkeypatch.setenv("KSTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(retry.time, "sleep", lambda s: None)   # the retries' backoff, not what is tested
    with releases_server() as (stub, base):
        monkeypatch.setattr(kind_mod, "KIND_RELEASES", base)
        yield stub, base


def _paths(profile: Profile) -> tuple[str, str]:
    binary = f"/{profile.kind['version']}/kind-{kind_mod.platform_tag()}"
    return binary, binary + ".sha256sum"


@pytest.mark.parametrize("status", [404, 403, 429, 503])
def test_an_http_error_on_the_binary_is_one_clear_error_naming_url_and_status(releases, status):
    stub, base = releases
    profile = Profile.load("seed")
    binary, checksum = _paths(profile)
    stub.answers[binary] = (status, b"<html>rate limited or not found</html>")
    stub.answers[checksum] = (200, f"{hashlib.sha256(BINARY).hexdigest()}  kind\n".encode())
    with pytest.raises(PreflightError) as e:
        kind_mod.ensure_kind_binary(profile, [])
    assert f"{base}{binary}" in e.value.problem and f"HTTP {status}" in e.value.problem
    assert "sha256" not in e.value.problem
    assert "--kind-bin" in e.value.remedy and "network" in e.value.remedy
    assert not (kind_mod.cache_dir() / "kind").exists() or not any((kind_mod.cache_dir() / "kind").iterdir())


def test_an_http_error_on_the_checksum_file_is_named_too(releases):
    stub, base = releases
    profile = Profile.load("seed")
    binary, checksum = _paths(profile)
    stub.answers[binary] = (200, BINARY)
    stub.answers[checksum] = (404, b"Not Found")
    with pytest.raises(PreflightError) as e:
        kind_mod.ensure_kind_binary(profile, [])
    assert f"{base}{checksum}" in e.value.problem and "HTTP 404" in e.value.problem


def test_transient_answers_are_retried_a_bounded_number_of_times(releases):
    stub, _ = releases
    profile = Profile.load("seed")
    binary, _ = _paths(profile)
    stub.answers[binary] = (503, b"busy")
    retries = retry.RetryLog()
    with pytest.raises(PreflightError, match="HTTP 503"):
        kind_mod.ensure_kind_binary(profile, [], retries)
    assert 1 < stub.requests.count(binary) <= 4
    # each retry is recorded in the run's log (the download layer), one fewer than the requests
    assert retries.count("download") == stub.requests.count(binary) - 1
    assert all(r.reason == "HTTP 503" for r in retries.entries)


def test_a_good_download_is_verified_against_the_published_checksum_and_cached(releases):
    stub, base = releases
    profile = Profile.load("seed")
    binary, checksum = _paths(profile)
    stub.answers[binary] = (200, BINARY)
    stub.answers[checksum] = (200, f"{hashlib.sha256(BINARY).hexdigest()}  kind-linux-amd64\n".encode())
    downloads: list[dict] = []
    path = kind_mod.ensure_kind_binary(profile, downloads)
    assert path.read_bytes() == BINARY and path.stat().st_mode & 0o111
    assert downloads == [{"url": f"{base}{binary}", "sha256": hashlib.sha256(BINARY).hexdigest(), "pinned": False}]
    kind_mod.ensure_kind_binary(profile, [])
    assert stub.requests.count(binary) == 1, "the second call used the cache"


def test_a_real_checksum_mismatch_is_still_reported_as_such(releases):
    stub, _ = releases
    profile = Profile.load("seed")
    binary, checksum = _paths(profile)
    stub.answers[binary] = (200, BINARY)
    stub.answers[checksum] = (200, ("0" * 64 + "  kind\n").encode())
    with pytest.raises(PreflightError, match="expected 0000"):
        kind_mod.ensure_kind_binary(profile, [])


def test_the_readme_says_what_is_verified_of_an_unpinned_kind_binary():
    """A profile without `binary_sha256` trusts the checksum published beside the binary: the README says so, and
    what that does not protect against, for as long as a shipped profile has no pin."""
    from pathlib import Path
    unpinned = [n for n in ("seed", "latest", "latest-standard") if not Profile.load(n).kind.get("binary_sha256")]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    if unpinned:
        assert "checked only against the `.sha256sum` file published beside it in the same release" in readme
        assert "catches a corrupt or partial download but not a release replaced at its source" in readme
