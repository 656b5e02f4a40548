"""Go durations as cert-manager and Knative write them, parsed once for the suite and the twin (stack/durations.py)."""
from __future__ import annotations

import datetime

import pytest

from stack.durations import go_seconds
from twin.pki import PKIError, parse_duration


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("1m30s", 90), ("2160h", 2160 * 3600), ("500ms", 0.5),
                                           ("0s", 0), ("0", 0), ("1.5h", 5400)])
def test_go_durations(text, seconds):
    assert go_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["60", "-1s", "1d", "1m x", "", "s"])
def test_what_go_refuses_is_refused(text):
    with pytest.raises(ValueError):
        go_seconds(text)


def test_the_twins_certificates_read_the_same_durations_with_cert_managers_error():
    assert parse_duration("720h", datetime.timedelta(0)) == datetime.timedelta(days=30)
    assert parse_duration(None, datetime.timedelta(hours=1)) == datetime.timedelta(hours=1)
    with pytest.raises(PKIError, match='time: invalid duration "30d"'):
        parse_duration("30d", datetime.timedelta(0))
