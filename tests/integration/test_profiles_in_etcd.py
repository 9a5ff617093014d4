"""Placement profiles live in etcd: schedulers seed the built-ins, reload edits at once, refuse bad ones."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from services.scheduler.profile_store import ProfileStore
from tessera.placement.pipeline import PROFILES_DIR, load_profile
from tessera.runtime.etcd.client import EtcdConnector
from tests.support.paths import REPO

ROOT = REPO


def _cli(*args: str, etcd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tessera.cli", "profile", *args, "--etcd", etcd],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


async def _wait(pred, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_profiles_are_seeded_reloaded_and_bad_ones_refused(local_etcd, tmp_path, caplog):
    profiles = {"least_loaded": load_profile("least_loaded")}
    changed: list[str] = []
    store = ProfileStore(EtcdConnector(local_etcd.endpoint), profiles, PROFILES_DIR, on_change=changed.append)
    await store.seed_builtins()
    store.start()
    try:
        await _wait(lambda: "tessera" in profiles and "cache_aware" in profiles)
        listed = _cli("list", etcd=local_etcd.endpoint).stdout.split()
        assert {"tessera", "least_loaded", "round_robin", "llmd", "dynamo"} <= set(listed)

        # an operator changes the weights: the running store switches without a restart
        edited = tmp_path / "ll.yaml"
        edited.write_text(
            "name: least_loaded\nfilters: [model, health]\nscorers:\n"
            "  - {name: queue_depth, weight: 7.0}\npicker: max_score\n"
        )
        out = _cli("put", str(edited), etcd=local_etcd.endpoint)
        assert out.returncode == 0, out.stderr
        await _wait(lambda: profiles["least_loaded"].scorers and profiles["least_loaded"].scorers[0][2] == 7.0)
        assert "least_loaded" in changed
        assert "weight: 7.0" in _cli("show", "least_loaded", etcd=local_etcd.endpoint).stdout

        # a broken profile is refused by the CLI, and by the scheduler if written behind its back
        broken = tmp_path / "bad.yaml"
        broken.write_text("name: least_loaded\nscorers: [no_such_scorer]\n")
        out = _cli("put", str(broken), etcd=local_etcd.endpoint)
        assert out.returncode == 2 and "unknown scorer" in out.stderr
        client = await store.connector.connect()
        await client.put(b"/tessera/v1/profiles/least_loaded", broken.read_bytes())
        await store.connector.discard(client)
        await _wait(lambda: "refused" in caplog.text)
        assert profiles["least_loaded"].scorers[0][2] == 7.0  # the previous version stays

        # seeding again does not overwrite what the operator stored
        await store.seed_builtins()
        await asyncio.sleep(0.3)
        assert profiles["least_loaded"].scorers[0][2] == 7.0
    finally:
        await store.close()
