"""The autoscaler's reconciliation, as pure code."""

from __future__ import annotations

import pytest

from services.autoscaler.desired import DesiredStateError, WorkerGroup, load_desired
from services.autoscaler.reconcile import Observed, reconcile


def g(name="tiny", replicas=2) -> WorkerGroup:
    return WorkerGroup(name=name, model="tiny", replicas=replicas)


def test_missing_workers_are_started():
    actions = reconcile([g(replicas=2)], [Observed("a", "tiny", registered=True, owned=True, alive=True)])
    assert [a.kind for a in actions] == ["start"]


def test_dead_registered_worker_is_replaced_before_its_lease_expires():
    # Registered in etcd still, but our actuator saw the process die.
    observed = [
        Observed("a", "tiny", registered=True, owned=True, alive=False),
        Observed("b", "tiny", registered=True, owned=True, alive=True),
    ]
    assert [a.kind for a in reconcile([g(replicas=2)], observed)] == ["start"]


def test_starting_workers_count_so_nothing_is_launched_twice():
    observed = [
        Observed("a", "tiny", registered=False, owned=True, alive=True),
        Observed("b", "tiny", registered=True, owned=False, alive=True),
    ]
    assert reconcile([g(replicas=2)], observed) == []


def test_extras_are_stopped_unready_and_newest_first_and_only_our_own():
    observed = [
        Observed("old", "tiny", registered=True, owned=True, alive=True, started_at=1),
        Observed("new", "tiny", registered=True, owned=True, alive=True, started_at=2),
        Observed("starting", "tiny", registered=False, owned=True, alive=True, started_at=3),
        Observed("foreign", "tiny", registered=True, owned=False, alive=True, started_at=0),
    ]
    stops = [a.instance for a in reconcile([g(replicas=2)], observed)]
    assert stops == ["starting", "new"]


def test_groups_no_longer_desired_are_stopped():
    actions = reconcile([], [Observed("a", "gone", registered=True, owned=True, alive=True)])
    assert [(a.kind, a.instance) for a in actions] == [("stop", "a")]


def test_desired_file_is_validated(tmp_path):
    good = tmp_path / "d.yaml"
    good.write_text("groups:\n  - {name: tiny, model: tiny, replicas: 2, engine_args: {max_model_len: 512}}\n")
    assert load_desired(str(good))[0].engine_args == {"max_model_len": 512}
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - {name: Tiny_Model, model: tiny}\n")
    with pytest.raises(DesiredStateError, match="group name"):
        load_desired(str(bad))
    bad.write_text("groups:\n  - {name: tiny, model: tiny, replica: 2}\n")
    with pytest.raises(DesiredStateError, match="unknown group field"):
        load_desired(str(bad))
