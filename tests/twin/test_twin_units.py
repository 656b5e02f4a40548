"""Parts of the twin that need no running twin."""
from __future__ import annotations

from twin.cluster import ensure_inotify_instances


def test_the_inotify_instance_limit_is_raised_where_it_is_low_and_left_where_it_is_not(tmp_path):
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    said = ensure_inotify_instances(limit, 1024)
    assert limit.read_text() == "1024\n" and said == ("raised fs.inotify.max_user_instances from 128 to 1024 "
                                                      "(several twins run at once)")
    limit.write_text("8192\n")
    assert ensure_inotify_instances(limit, 1024) is None and limit.read_text() == "8192\n"
    assert ensure_inotify_instances(tmp_path / "absent", 1024) is None


class _ReadOnlyLimit:
    """A limit file the kernel refuses to change (a container without CAP_SYS_ADMIN)."""

    def read_text(self) -> str:
        return "128\n"

    def write_text(self, text: str) -> None:
        raise PermissionError(13, "Permission denied")


def test_a_limit_that_cannot_be_raised_is_said_with_the_remedy():
    said = ensure_inotify_instances(_ReadOnlyLimit(), 1024)
    assert said.startswith("fs.inotify.max_user_instances is 128 and could not be raised")
    assert said.endswith("sysctl -w fs.inotify.max_user_instances=1024")


def test_a_stand_in_writes_an_object_only_when_its_lister_copy_differs_from_what_it_wants():
    from twin.standins.runtime import Kube, covers
    wanted = {"apiVersion": "v1", "kind": "Route", "metadata": {"name": "r", "labels": {"a": "1"}},
              "spec": {"traffic": [{"percent": 100}]}}
    defaulted = {"apiVersion": "v1", "kind": "Route", "metadata": {"name": "r", "uid": "u", "labels": {"a": "1", "b": "2"}},
                 "spec": {"traffic": [{"percent": 100, "latestRevision": True}]}, "status": {"url": "x"}}
    assert covers(defaulted, wanted)
    assert not covers({**defaulted, "spec": {"traffic": [{"percent": 50}]}}, wanted)
    assert not covers({**defaulted, "spec": {"traffic": [{"percent": 100}, {"percent": 0}]}}, wanted)
    assert not covers({**defaulted, "metadata": {"name": "r"}}, wanted)

    applied = []
    kube = Kube.__new__(Kube)
    kube.apply = lambda obj, manager: applied.append(obj) or obj
    assert kube.ensure(wanted, "m", defaulted) is defaulted and applied == []
    assert kube.ensure(wanted, "m", None) is wanted and applied == [wanted]
    kube.ensure(wanted, "m", {**defaulted, "spec": {}})
    assert len(applied) == 2


def test_the_autoscaler_stand_in_reads_config_autoscaler_as_knative_does():
    """Knative's defaultConfig (pkg/autoscaler/config/config.go) where a fresh install sets only `_example`; the
    twin's own short windows where its ConfigMap sets them."""
    from twin.standins.autoscaler import AutoscalerConfig
    fresh = AutoscalerConfig.from_map({"_example": "# defaults"})
    assert (fresh.enable_scale_to_zero, fresh.stable_window, fresh.scale_to_zero_grace_period) == (True, 60.0, 30.0)
    assert (fresh.container_concurrency_target_default, fresh.container_concurrency_target_percentage) == (100.0, 70.0)
    twin = AutoscalerConfig.from_map({"stable-window": "6s", "scale-to-zero-grace-period": "6s",
                                      "enable-scale-to-zero": "false"})
    assert (twin.stable_window, twin.scale_to_zero_grace_period, twin.enable_scale_to_zero) == (6.0, 6.0, False)
