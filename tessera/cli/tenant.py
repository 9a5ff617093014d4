"""``tessera tenant``: list, show, store and delete the tenants routers authenticate API keys against.

``put NAME`` creates a tenant or changes only the fields given; ``--new-key`` adds a fresh
``sk-...`` key and prints it once (etcd keeps only its SHA-256, so it cannot be shown again).
Routers watching etcd apply every change at once.

Writes are compare-and-swap on the etcd revision, as ``tessera slo|profile put`` do
(``tessera.cli.etcd_documents``): ``show`` prints ``# revision: N`` first, and
``put``/``delete --if-revision N`` go through only if the tenant is still at N
(0: only if it does not exist yet), else exit ``EXIT_CONFLICT`` naming both
revisions. Without ``--if-revision`` a ``put`` is a patch of the fields given, so
a lost race is retried on the newer record (the other writer's change is kept, the
given fields are applied on top); only a tenant that keeps changing ends in a conflict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from tessera.cli.etcd_documents import EXIT_CONFLICT, conflict_message
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT

RETRIES = 5  # patches re-applied on a newer record before giving up

_FLAGS = {
    "allow_priority": "its clients may set `priority` (up to --max-priority)",
    "allow_slo_header": "its clients may send the x-slo-ttft-ms header",
    "allow_profile_header": "its clients may send the x-tessera-profile header",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show", "put", "delete"], help="what to do")
    p.add_argument("name", nargs="?", help="show, put, delete: the tenant's name")
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
        help="put, delete: only if the tenant is still at revision N (as `show` prints it; 0: only if it does "
        "not exist yet), else exit 3; default: put patches the newest record, delete the one just read",
    )
    put = p.add_argument_group("put (fields not given keep their value; a new tenant starts unlimited, all off)")
    put.add_argument("--new-key", action="store_true", help="add a generated sk-... key and print it (only once)")
    put.add_argument("--revoke-keys", action="store_true", help="remove every key the tenant has (before --new-key)")
    put.add_argument("--models", default=None, metavar="A,B", help="models it may use ('' for every model)")
    put.add_argument("--rpm", type=int, default=None, help="requests per minute across all routers (0: unlimited)")
    put.add_argument("--tpm", type=int, default=None, help="prompt + max_tokens tokens per minute (0: unlimited)")
    put.add_argument("--max-priority", type=int, default=None, help="the highest priority its clients may ask for")
    for name, help_text in _FLAGS.items():
        put.add_argument(
            "--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None, help=help_text
        )


def _summary(record) -> str:
    limits = f"rpm={record.rpm or 'unlimited'} tpm={record.tpm or 'unlimited'}"
    models = ",".join(record.models) or "all models"
    rights = [n for n in _FLAGS if getattr(record, n)]
    return f"{record.name}\tkeys={len(record.key_sha256)}\t{limits}\t{models}\t{' '.join(rights) or '-'}"


def _patched(current: bytes | None, args: argparse.Namespace):
    """The record after this command's changes (raises ValueError if the result is invalid) and any new key."""
    from tessera.runtime.etcd.records import TenantRecord, hash_api_key, new_api_key

    record = TenantRecord.from_json(current) if current is not None else TenantRecord(name=args.name)
    if args.revoke_keys:
        record.key_sha256 = []
    new_key = new_api_key() if args.new_key else ""
    if new_key:
        record.key_sha256.append(hash_api_key(new_key))
    if args.models is not None:
        record.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in ("rpm", "tpm", "max_priority", *_FLAGS):
        if getattr(args, name) is not None:
            setattr(record, name, getattr(args, name))
    return TenantRecord(**vars(record)), new_key  # validate the result


async def _put(client, args: argparse.Namespace) -> int:
    from tessera.runtime.etcd import documents, keys

    key = keys.tenant(args.name).encode()
    based_on = args.if_revision
    for _ in range(RETRIES):  # read, change, write unless someone else wrote in between
        current = await documents.read(client, key)
        now = current.revision if current else documents.ABSENT
        if based_on is not None and now != based_on:
            print(f"tessera tenant put: {conflict_message('tenant', args.name, based_on, now)}", file=sys.stderr)
            return EXIT_CONFLICT
        try:
            record, new_key = _patched(current.value if current else None, args)
        except (ValueError, TypeError) as exc:
            print(f"tessera tenant put: {exc}", file=sys.stderr)
            return 2
        swap = await documents.put_if(client, key, record.to_json(), now)
        if swap.ok:
            print(f"stored tenant {_summary(record)} at revision {swap.revision}; routers apply it now")
            if new_key:
                print("API key (shown once: etcd keeps only its SHA-256):")
                print(new_key)
            elif not record.key_sha256:
                print(f"tenant {args.name} has no key yet: add one with --new-key", file=sys.stderr)
            return 0
        if based_on is not None:  # written between our read and our write: the caller's base is gone
            print(
                f"tessera tenant put: {conflict_message('tenant', args.name, based_on, swap.revision)}",
                file=sys.stderr,
            )
            return EXIT_CONFLICT
    print(
        f"tessera tenant put: conflict: tenant {args.name} changed {RETRIES} times while this write was "
        "applied; nothing was written: try again",
        file=sys.stderr,
    )
    return EXIT_CONFLICT


async def _run(args: argparse.Namespace) -> int:
    from tessera.runtime.etcd import documents, keys
    from tessera.runtime.etcd.client import EtcdConnector
    from tessera.runtime.etcd.records import TenantRecord

    connector = EtcdConnector(args.etcd)
    client = await connector.connect()
    try:
        if args.action == "list":
            for kv in await client.get_prefix(keys.TENANTS.encode()):
                try:
                    print(_summary(TenantRecord.from_json(kv.value)))
                except (ValueError, TypeError) as exc:
                    print(f"{kv.key.decode().removeprefix(keys.TENANTS)}\tbroken record: {exc}")
            return 0
        if not args.name:
            print(f"tessera tenant {args.action}: name the tenant", file=sys.stderr)
            return 2
        if args.action == "put":
            return await _put(client, args)
        key = keys.tenant(args.name).encode()
        got = await documents.read(client, key)
        if got is None:
            print(f"no tenant {args.name!r} in etcd", file=sys.stderr)
            return 1
        if args.action == "delete":
            based_on = got.revision if args.if_revision is None else args.if_revision
            swap = await documents.delete_if(client, key, based_on)
            if not swap.ok:
                message = conflict_message("tenant", args.name, based_on, swap.revision)
                print(f"tessera tenant delete: {message}", file=sys.stderr)
                return EXIT_CONFLICT
            print(f"deleted tenant {args.name}; its keys stop working now")
        else:
            print(f"# revision: {got.revision}")
            print(json.dumps(json.loads(got.value), indent=2))
        return 0
    finally:
        await connector.discard(client)


def run_main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except OSError as exc:
        print(f"tessera tenant: {exc}", file=sys.stderr)
        return 1
