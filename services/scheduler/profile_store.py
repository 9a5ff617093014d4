"""Placement profiles kept in etcd and reloaded live.

Every scheduler watches /tessera/v1/profiles/: an operator (or `tessera
profile put`) writes a profile's YAML there and every scheduler switches to
it within a watch round trip, without a restart. A profile that does not
parse or names unknown parts is refused with one log line and the previous
version stays in force. Each verdict (loaded, or refused and why) is recorded
for the profile's etcd revision (``tessera.runtime.etcd.acks``), which is how
`tessera profile put` tells its user whether the schedulers took the edit.
Built-in profiles (tessera/placement/profiles) are written on start only where
the key does not exist yet (one create-only transaction each), so a restart
never overwrites a customised built-in and the YAML in etcd is always the one
source of truth a user can read back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import yaml

from tessera.placement.pipeline import Pipeline, ProfileError, build_pipeline
from tessera.runtime.etcd import documents, keys
from tessera.runtime.etcd.acks import Acknowledger
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.watch import PrefixMirror

log = logging.getLogger("tessera.scheduler.profiles")


def parse_profile(text: bytes | str, seed: int | None = None) -> Pipeline:
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"not YAML: {str(exc).splitlines()[0]}") from None
    return build_pipeline(spec, seed)


class ProfileStore:
    """`profiles` (name -> Pipeline) kept in step with etcd; `on_change(name)` after each reload."""

    def __init__(
        self,
        connector: EtcdConnector,
        profiles: dict[str, Pipeline],
        builtin_dir: Path,
        on_change: Callable[[str], None] | None = None,
        acks: Acknowledger | None = None,
    ) -> None:
        self.connector = connector
        self.profiles = profiles
        self.builtin_dir = builtin_dir
        self.on_change = on_change
        self.acks = acks
        self.versions: dict[str, bytes] = {}
        self.mirror = PrefixMirror(connector, keys.PROFILES, on_change=self._changed)

    async def seed_builtins(self) -> None:
        """Write each built-in profile to etcd unless a profile of that name is there already."""
        client = None
        try:
            client = await self.connector.connect()
            for path in sorted(self.builtin_dir.glob("*.yaml")):
                if await documents.create(client, keys.profile(path.stem).encode(), path.read_bytes()):
                    log.info("built-in profile %s stored in etcd", path.stem)
        except Exception as exc:  # noqa: BLE001 - serving goes on with the built-ins in memory
            log.warning("could not store the built-in profiles in etcd: %s", exc)
        finally:
            await self.connector.discard(client)

    def start(self) -> None:
        self.mirror.start()

    async def close(self) -> None:
        await self.mirror.close()

    def _changed(self, key: str, value: bytes | None) -> None:
        name = key.rsplit("/", 1)[-1]
        if value is None:
            log.info("profile %s deleted from etcd; the loaded version stays until the scheduler restarts", name)
            return
        refusal = self._load(key, name, value)
        if refusal:
            log.warning("profile %s in etcd refused (%s); keeping the previous version", name, refusal)
        if self.acks is not None:
            self.acks.record(key, self.mirror.revisions.get(key, 0), not refusal, refusal)

    def _load(self, key: str, name: str, value: bytes) -> str:
        """Switch to this version of the profile; why not, or "" once it is in force."""
        if self.versions.get(name) == value:
            return ""
        try:
            pipeline = parse_profile(value)
        except ProfileError as exc:
            return str(exc)
        if pipeline.name != name:
            return f"it is named {pipeline.name!r} but stored under {key}; the name must match the key"
        old = self.profiles.get(name)
        self.profiles[name] = pipeline
        self.versions[name] = value
        log.info("profile %s %s from etcd", name, "reloaded" if old is not None else "loaded")
        if self.on_change:
            self.on_change(name)
        return ""
