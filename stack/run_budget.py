"""How long a whole acceptance run of a profile may take on a CI runner, derived from the profile's phase budgets.

The nightly workflow's `timeout-minutes` per profile are these numbers (tests/test_workflows.py checks that the
workflow holds exactly them, so a changed budget cannot leave the workflow behind).

A run passes through each budgeted phase once (cluster, install, workloads, certificate, inference_service, predict);
the optional S3 variant of the Iris check waits once more for an InferenceService and a prediction. Around the run,
a fresh runner needs time to set up (checkout, Python, the pinned dependencies, the kind binary, the node image) and
to wrap up (sign-off, diagnostics, artifact upload).

    python -m stack.run_budget [PROFILE...]     # prints "PROFILE MINUTES" per profile (default: all shipped)
"""
from __future__ import annotations

import math
import sys

from stack.profile import Profile, ProfileError, available_profiles

SETUP_MINUTES = 10
WRAP_UP_MINUTES = 5
# Phases the optional S3 variant (test_iris_from_s3) waits through a second time.
S3_VARIANT_PHASES = ("inference_service", "predict")


def run_seconds(profile: Profile, timeout_scale: float = 1.0) -> float:
    """The longest a run's waits can take: every phase budget once, plus the S3 variant's, scaled like the run."""
    budgets = profile.budgets
    seconds = sum(budgets.values()) + sum(budgets.get(phase, 0) for phase in S3_VARIANT_PHASES)
    return seconds * timeout_scale


def job_timeout_minutes(profile: Profile, timeout_scale: float = 1.0) -> int:
    """The CI job's time limit in whole minutes: setup + the run's waits + wrap-up."""
    return SETUP_MINUTES + math.ceil(run_seconds(profile, timeout_scale) / 60) + WRAP_UP_MINUTES


def shipped_timeouts() -> dict[str, int]:
    """profile name -> job time limit, for every profile in profiles/."""
    return {name: job_timeout_minutes(Profile.load(name)) for name in available_profiles()}


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or available_profiles()
    for name in names:
        try:
            profile = Profile.load(name)
        except ProfileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{profile.name} {job_timeout_minutes(profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
