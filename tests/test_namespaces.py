"""Test namespaces carry the run's label `kstack.io/run`; its value must be a valid label value whatever the run's
work directory is called (tempfile.mkdtemp's random part may end in '_', which a real API server rejects)."""
from __future__ import annotations

import re
import string
import tempfile

import pytest

from fixtures import namespaces
from fixtures.namespaces import NamespaceFactory
from stack.kube import Kube

# k8s.io/apimachinery IsValidLabelValue: at most 63 characters of this form.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


@pytest.mark.parametrize("name", ["kstack-run-abcdefg_", "kstack-run-a_______", "kstack-run-_abc_def", "_",
                                  "kstack-run-" + "x" * 80 + "_", "__..--", "kstack run/ü"])
def test_run_label_is_a_valid_label_value(name):
    assert valid_label_value(namespaces.run_label(name)), namespaces.run_label(name)


def test_run_label_of_every_possible_mkdtemp_name_is_valid_and_tells_runs_apart():
    # mkdtemp's random part: 8 characters of tempfile._RandomNameSequence.characters (lower case, digits, '_').
    chars = tempfile._RandomNameSequence.characters
    assert "_" in chars
    names = {f"kstack-run-{a}{b}{c}" for a in chars for b in "_a" for c in string.ascii_lowercase[:2] + "_"}
    labels = {namespaces.run_label(n) for n in names}
    assert all(valid_label_value(v) for v in labels)
    assert len(labels) == len(names)


@pytest.mark.twin
def test_a_run_whose_work_directory_ends_in_underscore_creates_valid_namespaces(tmp_path):
    from stack.profile import Profile
    from twin import Twin
    with Twin(Profile.load("seed"), preinstalled=False, workdir=tmp_path / "twin") as twin:
        kube = Kube(twin.kubeconfig_path, twin.context)
        factory = NamespaceFactory(kube, "kstack-run-abcdefg_")
        name = factory.make("labels")
        labels = kube.get("v1", "Namespace", name)["metadata"]["labels"]
        assert valid_label_value(labels["kstack.io/run"]), labels
        factory.cleanup(keep=False)
