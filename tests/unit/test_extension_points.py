"""The places ARCHITECTURE.md says to extend: vendors (vendors.yaml + a probe), placement parts (registries and
entry points), and the one actuator interface."""

from __future__ import annotations

import sys
import time

import pytest

from services.autoscaler.actuator import Actuator
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.local_actuator import LocalActuator
from services.autoscaler.local_processes import Instance
from tessera.engine_model.catalog.vendors import vendor_names
from tessera.placement import scorers
from tessera.placement.pipeline import ProfileError, build_pipeline
from tessera.placement.registry import Registry
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot
from tessera.runtime import devices
from tessera.v1 import common_pb2 as pb


def test_every_vendor_in_the_table_has_a_device_probe_and_no_probe_lacks_a_vendor():
    assert set(devices.probes()) == set(vendor_names())
    assert list(devices.probes())[-1] == "cpu"  # the fallback is tried last


def test_the_vendor_can_be_forced_and_a_cpu_box_is_a_cpu(monkeypatch):
    monkeypatch.delenv("TESSERA_VENDOR", raising=False)
    assert devices.detect_vendor() == "cpu"  # this machine: no GPU, no /dev/tenstorrent
    assert devices.detect_accelerator("cpu") == ("cpu", 1)
    monkeypatch.setenv("TESSERA_VENDOR", "amd")
    assert devices.detect_vendor() == "amd"


@pytest.mark.parametrize(
    ("name", "key"),
    [("NVIDIA H100 80GB HBM3", "h100"), ("AMD Instinct MI300X", "mi300x"), ("NVIDIA A100-SXM4-80GB", "a100")],
)
def test_device_names_become_catalog_style_keys(name, key):
    assert devices.accelerator_key(name) == key


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """An installed distribution (a dist-info on sys.path) that declares a scorer under the entry-point group."""
    pkg = tmp_path / "acme_scorers.py"
    pkg.write_text("def fewest_running(req, workers, ctx):\n    return [1.0 / (1 + w.num_running) for w in workers]\n")
    info = tmp_path / "acme_scorers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-scorers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[tessera.placement.scorers]\nacme_fewest_running = acme_scorers:fewest_running\n"
        "prefix_cache = acme_scorers:fewest_running\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # A fresh registry for the scorers, so the entry points are read again in this test.
    fresh = Registry[scorers.Scorer]("scorer", "tessera.placement.scorers")
    for name in scorers.SCORERS.names():
        fresh.register(name)(scorers.SCORERS.get(name))
    monkeypatch.setattr(scorers, "SCORERS", fresh)
    monkeypatch.setattr(sys.modules["tessera.placement.pipeline"], "SCORERS", fresh)
    return fresh


def test_a_scorer_from_another_package_is_found_by_its_entry_point(plugin_package):
    pipeline = build_pipeline({"name": "p", "scorers": [{"name": "acme_fewest_running", "weight": 1.0}]}, seed=0)
    busy = WorkerSnapshot("busy", "a", "m", num_running=5)
    idle = WorkerSnapshot("idle", "b", "m", num_running=0)
    assert pipeline.place(RequestInfo("r", "m", prompt_tokens=10), [busy, idle]).worker.id == "idle"
    # A plugin cannot replace a built-in part of the same name.
    assert plugin_package.get("prefix_cache") is scorers.prefix_cache


def test_an_unknown_part_names_what_exists():
    with pytest.raises(ProfileError, match="unknown scorer 'nope'; known: .*prefix_cache"):
        build_pipeline({"name": "p", "scorers": ["nope"]})


class Launcher:
    """The local actuator's process launcher, in memory: workers that die when told to."""

    def __init__(self) -> None:
        self.instances_: dict[str, Instance] = {}
        self.launched = 0

    def launch(self, group: WorkerGroup) -> Instance:
        self.launched += 1
        inst = Instance(f"{group.name}-{self.launched}", group.name, True, time.time())
        self.instances_[inst.id] = inst
        return inst

    def crash(self, instance_id: str) -> None:
        self.instances_[instance_id].alive = False
        self.instances_[instance_id].exit_code = 1

    async def stop(self, instance_id: str) -> None:
        self.instances_[instance_id].alive = False

    def instances(self) -> list[Instance]:
        return list(self.instances_.values())

    def forget(self, instance_id: str) -> None:
        self.instances_.pop(instance_id, None)

    async def shutdown(self) -> None:
        pass


async def test_the_local_actuator_replaces_a_dead_worker_at_once_and_backs_off_a_crash_loop():
    launcher, registered = Launcher(), {}
    local = LocalActuator(launcher, registered)
    assert isinstance(local, Actuator)
    group = WorkerGroup(name="g", model="tiny", replicas=1)
    await local.converge([group])
    # It registered and served, then died: replaced on the next round, before its lease would expire.
    registered["g-1"] = pb.WorkerIdentity(id="g-1", group="g")
    local.worker_registered("g-1", registered["g-1"])
    launcher.crash("g-1")
    done = await local.converge([group])
    assert [a.kind for a in done.actions] == ["restart", "start"] and launcher.launched == 2
    # The replacement dies before registering: the next start waits (1 s, then 2 s, ...).
    launcher.crash("g-2")
    await local.converge([group])
    assert launcher.launched == 2
    # A worker registered by another autoscaler (the previous leader) counts: nothing is started twice.
    registered["foreign"] = pb.WorkerIdentity(id="foreign", group="g")
    assert (await local.converge([group])).replicas == {"g": 1} and launcher.launched == 2
