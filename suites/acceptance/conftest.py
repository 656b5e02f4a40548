"""Fixtures the acceptance modules share: the Iris InferenceService, deployed once per worker for every module that
needs it (inference, monitoring, security), in a namespace of its own."""
from __future__ import annotations

import allure
import pytest

from stack.diagnostics import collect
from stack.deadline import Deadline
from suites.acceptance.iris import deploy_and_wait, isvc_manifest


@pytest.fixture(scope="package")
def iris(profile, kube, stack, namespace_factory, run_options, phase):
    """The Iris InferenceService, deployed once (per worker) for every module that uses it, in a namespace of its own."""
    factory = namespace_factory()
    ns = factory.make("iris")
    try:
        with phase.over(Deadline(run_options.budget("inference_service"), "inference_service")) as budget:
            isvc, seconds = deploy_and_wait(kube, profile, ns, isvc_manifest(profile, ns), budget)
    except BaseException:
        control_plane = profile.components["kserve"].inventory.get("namespaces", [])
        for att in collect(kube, [ns, *control_plane], [], None):
            allure.attach(att.body, name=att.name, attachment_type=allure.attachment_type.TEXT)
        factory.cleanup(keep=run_options.keep_on_failure)
        raise
    allure.dynamic.parameter("time_to_ready_seconds", round(seconds, 1))
    state = {"isvc": isvc, "ready_seconds": seconds, "namespace": ns, "failed": False}
    yield state
    factory.cleanup(keep=run_options.keep_on_failure and state["failed"])
