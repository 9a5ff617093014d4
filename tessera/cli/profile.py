"""``tessera profile``: list, show and store the placement profiles schedulers load from etcd."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from tessera.etcd.client import DEFAULT_ENDPOINT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show", "put"])
    p.add_argument("target", nargs="?", help="show: a profile name; put: a YAML file")
    p.add_argument("--etcd", default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT))


async def _run(args: argparse.Namespace) -> int:
    from services.scheduler.policy.pipeline import ProfileError
    from services.scheduler.profile_store import parse_profile
    from tessera.etcd import keys
    from tessera.etcd.client import EtcdConnector

    connector = EtcdConnector(args.etcd)
    client = await connector.connect()
    try:
        if args.action == "list":
            for kv in await client.get_prefix(keys.PROFILES.encode()):
                print(kv.key.decode().removeprefix(keys.PROFILES))
            return 0
        if not args.target:
            print(f"tessera profile {args.action}: name the {'profile' if args.action == 'show' else 'YAML file'}",
                  file=sys.stderr)
            return 2
        if args.action == "show":
            got = await client.get(keys.profile(args.target).encode())
            if got is None:
                print(f"no profile {args.target!r} in etcd", file=sys.stderr)
                return 1
            print(got.value.decode(), end="")
            return 0
        text = Path(args.target).read_bytes()
        try:
            pipeline = parse_profile(text)     # refuse here what every scheduler would refuse
        except ProfileError as exc:
            print(f"{args.target}: {exc}", file=sys.stderr)
            return 2
        await client.put(keys.profile(pipeline.name).encode(), text)
        print(f"stored profile {pipeline.name}; schedulers reload it now")
        return 0
    finally:
        await connector.discard(client)


def run_main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except OSError as exc:
        print(f"tessera profile: {exc}", file=sys.stderr)
        return 1
