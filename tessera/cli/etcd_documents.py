"""list / show / put of YAML documents that services watch in etcd (placement profiles, SLO policies).

One implementation for every such command, so they all refuse a bad document
before storing it (what the watching services would refuse anyway) and print
the same messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT


def add_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("action", choices=["list", "show", "put", "delete"], help="what to do")
    p.add_argument("target", nargs="?", help=f"show, delete: a {what} name; put: a YAML file")
    p.add_argument(
        "--etcd",
        default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT),
        help="etcd endpoints host:port[,host:port] (env TESSERA_ETCD)",
    )
    etcd_tls.add_arguments(p)


async def _run(args: argparse.Namespace, what: str, prefix: str, name_of: Callable[[bytes], str], readers: str) -> int:
    """`name_of(text)` parses a document and returns the name it is stored under; ValueError if bad."""
    from tessera.runtime.etcd.client import EtcdConnector

    connector = EtcdConnector(args.etcd)
    client = await connector.connect()
    try:
        if args.action == "list":
            for kv in await client.get_prefix(prefix.encode()):
                print(kv.key.decode().removeprefix(prefix))
            return 0
        if not args.target:
            print(
                f"tessera {args.command} {args.action}: name the {'YAML file' if args.action == 'put' else what}",
                file=sys.stderr,
            )
            return 2
        if args.action in ("show", "delete"):
            got = await client.get((prefix + args.target).encode())
            if got is None:
                print(f"no {what} {args.target!r} in etcd", file=sys.stderr)
                return 1
            if args.action == "delete":
                await client.delete((prefix + args.target).encode())
                print(f"deleted {what} {args.target}")
            else:
                print(got.value.decode(), end="")
            return 0
        text = Path(args.target).read_bytes()
        try:
            name = name_of(text)  # refuse here what every reader would refuse
        except ValueError as exc:
            print(f"{args.target}: {exc}", file=sys.stderr)
            return 2
        await client.put((prefix + name).encode(), text)
        print(f"stored {what} {name}; {readers} reload it now")
        return 0
    finally:
        await connector.discard(client)


def run(args: argparse.Namespace, what: str, prefix: str, name_of: Callable[[bytes], str], readers: str) -> int:
    try:
        etcd_tls.configure(args)
        return asyncio.run(_run(args, what, prefix, name_of, readers))
    except (OSError, etcd_tls.EtcdTLSError) as exc:
        print(f"tessera {args.command}: {exc}", file=sys.stderr)
        return 1


def store(endpoint: str, prefix: str, name: str, text: bytes) -> None:
    """Put one document (for commands that start a cluster with it, like `tessera up --slo-policy`)."""
    from tessera.runtime.etcd.client import EtcdConnector

    async def put() -> None:
        connector = EtcdConnector(endpoint)
        client = await connector.connect()
        try:
            await client.put((prefix + name).encode(), text)
        finally:
            await connector.discard(client)

    asyncio.run(put())
