"""list / show / put / delete of YAML documents that services watch in etcd (placement profiles, SLO policies).

One implementation for every such command, so they all refuse a bad document
before storing it (what the watching services would refuse anyway), print the
same messages, and write the same way:

* **compare-and-swap**: a write goes through only if the key still has the
  revision it was based on (``tessera.runtime.etcd.documents``), so two
  concurrent edits never silently lose one. That revision is ``--if-revision``,
  else the ``# revision: N`` line ``show`` prints first (so ``show > f``, edit,
  ``put f`` is safe, as ``kubectl edit`` is), else the one read just before
  writing. A lost race exits with ``EXIT_CONFLICT`` and one line naming both
  revisions; nothing is written.
* **acknowledged**: after a write, the services that consume the document
  record whether they took it (``tessera.runtime.etcd.acks``); ``put`` waits up
  to ``--wait`` seconds for every running one and prints their verdicts. A
  refusal exits with ``EXIT_REFUSED``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT

EXIT_CONFLICT = 3  # someone else wrote the document since the revision this write was based on
EXIT_REFUSED = 4  # stored, but a running service refused it (it keeps the previous version)
DEFAULT_WAIT_S = 5.0
POLL_S = 0.1
REVISION_LINE = re.compile(rb"\A# revision: (\d+)[ \t]*\r?\n")


def add_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("action", choices=["list", "show", "put", "delete"], help="what to do")
    p.add_argument("target", nargs="?", help=f"show, delete: a {what} name; put: a YAML file")
    p.add_argument(
        "--etcd",
        default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT),
        help="etcd endpoints host:port[,host:port] (env TESSERA_ETCD)",
    )
    p.add_argument(
        "--if-revision",
        type=int,
        default=None,
        metavar="N",
        help=f"put, delete: only if the {what} is still at revision N (as `show` prints it; 0: only if it "
        "does not exist yet); default: the file's '# revision:' line, else the revision read just before writing",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="put: how long to wait for the running services to accept or refuse it (0: do not wait)",
    )
    etcd_tls.add_arguments(p)


def split_revision(text: bytes) -> tuple[int | None, bytes]:
    """The revision of a ``# revision: N`` first line (as ``show`` prints it) and the document without it."""
    m = REVISION_LINE.match(text)
    return (int(m.group(1)), text[m.end() :]) if m else (None, text)


def conflict_message(what: str, name: str, based_on: int, now: int) -> str:
    if based_on == 0:
        return f"conflict: {what} {name} already exists (revision {now}); pass --if-revision {now} to replace it"
    if now == 0:
        return f"conflict: {what} {name} was deleted after revision {based_on}; nothing was written"
    return (
        f"conflict: {what} {name} was changed (now revision {now}) since revision {based_on} that this write "
        f"was based on; nothing was written: show it, redo the edit and put again"
    )


async def _verdict(client, kind: str, key: str, revision: int, wait_s: float):
    """Poll the services' acknowledgements of ``revision`` until every running one answered or ``wait_s``."""
    from tessera.runtime.etcd import keys
    from tessera.runtime.etcd.acks import Ack, summarize

    deadline = time.monotonic() + wait_s
    while True:
        running = [kv.key.decode().rsplit("/", 1)[-1] for kv in await client.get_prefix(keys.services(kind).encode())]
        acks = [Ack.from_json(kv.value) for kv in await client.get_prefix(keys.acks_of(key).encode())]
        verdict = summarize(kind, running, acks, revision, wait_s)
        if verdict.complete or time.monotonic() >= deadline:
            return verdict
        await asyncio.sleep(POLL_S)


async def _put(client, args: argparse.Namespace, what: str, prefix: str, name_of, kind: str) -> int:
    from tessera.runtime.etcd import documents

    from_file, text = split_revision(Path(args.target).read_bytes())
    try:
        name = name_of(text)  # refuse here what every reader would refuse
    except ValueError as exc:
        print(f"{args.target}: {exc}", file=sys.stderr)
        return 2
    key = prefix + name
    current = await documents.read(client, key.encode())
    based_on = args.if_revision if args.if_revision is not None else from_file
    if based_on is None:
        based_on = current.revision if current else documents.ABSENT
    now = current.revision if current else documents.ABSENT
    if current is not None and current.value == text and based_on == now:
        revision = now  # nothing to write: report what the services said of the stored version
        print(f"{what} {name} unchanged at revision {revision}")
    else:
        swap = await documents.put_if(client, key.encode(), text, based_on)
        if not swap.ok:
            message = conflict_message(what, name, based_on, swap.revision)
            print(f"tessera {args.command} put: {message}", file=sys.stderr)
            return EXIT_CONFLICT
        revision = swap.revision
        print(f"stored {what} {name} at revision {revision}", flush=True)
    if args.wait <= 0:
        return 0
    verdict = await _verdict(client, kind, key, revision, args.wait)
    for line in verdict.lines:
        print(line, file=sys.stderr if line.startswith("refused") else sys.stdout)
    return EXIT_REFUSED if verdict.refused else 0


async def _run(args: argparse.Namespace, what: str, prefix: str, name_of: Callable[[bytes], str], kind: str) -> int:
    """`name_of(text)` parses a document and returns the name it is stored under; ValueError if bad."""
    from tessera.runtime.etcd import documents
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
        if args.action == "put":
            return await _put(client, args, what, prefix, name_of, kind)
        key = (prefix + args.target).encode()
        got = await documents.read(client, key)
        if got is None:
            print(f"no {what} {args.target!r} in etcd", file=sys.stderr)
            return 1
        if args.action == "show":
            print(f"# revision: {got.revision}")
            print(got.value.decode(), end="")
            return 0
        based_on = got.revision if args.if_revision is None else args.if_revision
        swap = await documents.delete_if(client, key, based_on)
        if not swap.ok:
            message = conflict_message(what, args.target, based_on, swap.revision)
            print(f"tessera {args.command} delete: {message}", file=sys.stderr)
            return EXIT_CONFLICT
        print(f"deleted {what} {args.target}")
        return 0
    finally:
        await connector.discard(client)


def run(args: argparse.Namespace, what: str, prefix: str, name_of: Callable[[bytes], str], kind: str) -> int:
    """Run the action; ``kind`` is the service that consumes these documents (its acks are read after a put)."""
    try:
        etcd_tls.configure(args)
        return asyncio.run(_run(args, what, prefix, name_of, kind))
    except (OSError, etcd_tls.EtcdTLSError) as exc:
        print(f"tessera {args.command}: {exc}", file=sys.stderr)
        return 1


class StoreConflict(Exception):
    """The document in etcd is not the one a command was started with, and it was not told to replace it."""


def store(endpoint: str, prefix: str, name: str, text: bytes, what: str, command: str, source: str) -> str:
    """Store one document a command starts a cluster with (`tessera up --slo-policy FILE`), without losing an edit.

    The write is compare-and-swap, as ``put``'s: a file with a ``# revision: N`` line (``show`` output)
    replaces revision N only; any other file is created if absent, left alone if etcd holds the same text,
    and else refused with ``StoreConflict``: the stored one was edited (``tessera slo put``) since, and a
    restarted ``up`` must not silently undo that. Returns a line saying what was done.
    """
    from tessera.runtime.etcd import documents
    from tessera.runtime.etcd.client import EtcdConnector

    from_file, body = split_revision(text)
    key = (prefix + name).encode()

    async def put() -> str:
        connector = EtcdConnector(endpoint)
        client = await connector.connect()
        try:
            current = await documents.read(client, key)
            now = current.revision if current else documents.ABSENT
            if current is not None and current.value == body and from_file in (None, now):
                return f"{what} {name} unchanged at revision {now}"
            based_on = documents.ABSENT if from_file is None else from_file
            swap = await documents.put_if(client, key, body, based_on)
            if swap.ok:
                return f"stored {what} {name} at revision {swap.revision}"
            if from_file is None:
                raise StoreConflict(
                    f"conflict: {what} {name} in etcd (revision {swap.revision}) differs from {source}; nothing "
                    f"was written: to keep the stored one start without {source}; to replace it, "
                    f"`tessera {command} put {source} --if-revision {swap.revision}` first"
                )
            raise StoreConflict(conflict_message(what, name, from_file, swap.revision))
        finally:
            await connector.discard(client)

    return asyncio.run(put())
