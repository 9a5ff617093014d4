"""Registration, discovery and leader election against a real etcd, including its restarts."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.election import LeaderElection
from tessera.runtime.etcd.registration import LeasedKey
from tessera.runtime.etcd.watch import PrefixMirror


async def eventually(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_registration_is_seen_by_watchers_and_vanishes_with_its_lease(local_etcd):
    conn = EtcdConnector(local_etcd.endpoint)
    mirror = PrefixMirror(conn, "/tessera/v1/workers/")
    mirror.start()
    key = LeasedKey(conn, "/tessera/v1/workers/w1", b"v1", ttl=2)
    key.start()
    await eventually(lambda: mirror.items.get("/tessera/v1/workers/w1") == b"v1", 5, "registration")
    key.update(b"v2")
    await eventually(lambda: mirror.items.get("/tessera/v1/workers/w1") == b"v2", 5, "update")
    # A process that dies stops refreshing: simulate by cancelling without revoking.
    key._stopping = True
    key._task.cancel()
    await eventually(lambda: "/tessera/v1/workers/w1" not in mirror.items, 6, "lease expiry")
    await mirror.close()


async def test_clean_close_removes_the_key_at_once(local_etcd):
    conn = EtcdConnector(local_etcd.endpoint)
    mirror = PrefixMirror(conn, "/tessera/v1/services/")
    mirror.start()
    key = LeasedKey(conn, "/tessera/v1/services/router/r1", b"x", ttl=30)
    key.start()
    await eventually(lambda: mirror.items, 5, "registration")
    await key.close()
    await eventually(lambda: not mirror.items, 2, "removal well before the 30 s TTL")
    await mirror.close()


@pytest.mark.parametrize("wipe", [False, True], ids=["restart", "restart-with-data-loss"])
async def test_etcd_restart_keeps_the_last_view_then_catches_up(local_etcd, wipe):
    conn = EtcdConnector(local_etcd.endpoint)
    mirror = PrefixMirror(conn, "/tessera/v1/workers/", resync_grace_s=2.0)
    mirror.start()
    a = LeasedKey(conn, "/tessera/v1/workers/a", b"a", ttl=2)
    dies = LeasedKey(conn, "/tessera/v1/workers/dies", b"d", ttl=2)
    a.start()
    dies.start()
    await eventually(lambda: len(mirror.items) == 2, 5, "first registrations")

    local_etcd.kill()
    if wipe:
        shutil.rmtree(local_etcd.data_dir)
    dies._stopping = True  # its owner dies during the outage
    dies._task.cancel()
    await asyncio.sleep(3)  # longer than the lease TTL
    assert set(mirror.items) == {"/tessera/v1/workers/a", "/tessera/v1/workers/dies"}, "the view survives the outage"

    local_etcd.start()
    b = LeasedKey(conn, "/tessera/v1/workers/b", b"b", ttl=2)
    b.start()
    deadline = asyncio.get_running_loop().time() + 8
    while asyncio.get_running_loop().time() < deadline:
        assert "/tessera/v1/workers/a" in mirror.items, "a live registration must never blink out"
        await asyncio.sleep(0.05)
    assert set(mirror.items) == {"/tessera/v1/workers/a", "/tessera/v1/workers/b"}, "the dead one is gone, b is new"
    for k in (a, b):
        await k.close()
    await mirror.close()


async def test_exactly_one_leader_and_failover(local_etcd):
    conn = EtcdConnector(local_etcd.endpoint)
    first = LeaderElection(conn, "/tessera/v1/election/test", "first", ttl=2)
    second = LeaderElection(conn, "/tessera/v1/election/test", "second", ttl=2)
    first.start()
    await eventually(lambda: first.is_leader, 5, "first to lead")
    second.start()
    for _ in range(20):  # never two leaders
        await asyncio.sleep(0.1)
        assert not (first.is_leader and second.is_leader)
    assert not second.is_leader and second.leader_id == "first"
    # The leader dies without a goodbye: the follower takes over after the TTL.
    first._task.cancel()
    await eventually(lambda: not first.is_leader, 3, "the dead leader to stop trusting its lease")
    await eventually(lambda: second.is_leader, 6, "failover")
    await second.close()
