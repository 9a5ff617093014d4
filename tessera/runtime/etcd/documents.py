"""Compare-and-swap on one etcd key: the writes of documents that people edit (profiles, SLO policies).

A document is read with its ``mod_revision`` and written back only if the key
still has that revision, in one etcd transaction (as etcdctl's ``txn`` and
Kubernetes' ``resourceVersion`` do), so two people editing the same document
never silently overwrite each other: the second write fails and says which
revision it raced with. Revision 0 means "the key does not exist" (etcd's
``create_revision == 0``), which is also how built-in documents are seeded
without overwriting a customised one.
"""

from __future__ import annotations

from dataclasses import dataclass

import aetcd

ABSENT = 0  # the revision of a key that does not exist


@dataclass(frozen=True)
class Stored:
    value: bytes
    revision: int  # the key's mod_revision: the etcd revision of its last write


@dataclass(frozen=True)
class Swap:
    """What a conditional write did: ``ok``, and the key's revision now (the new one, or the one it raced with)."""

    ok: bool
    revision: int


async def read(client: aetcd.Client, key: bytes) -> Stored | None:
    got = await client.get(key)
    return None if got is None else Stored(got.value, got.mod_revision)


def _unchanged_since(client: aetcd.Client, key: bytes, revision: int):
    tx = client.transactions
    return tx.create(key) == 0 if revision == ABSENT else tx.mod(key) == revision


def _revision_of(ranged: list) -> int:
    """The mod_revision in a transaction's get response (a list of (value, Get)); ABSENT if empty."""
    return ranged[0][1].mod_revision if ranged else ABSENT


async def put_if(client: aetcd.Client, key: bytes, value: bytes, revision: int) -> Swap:
    """Write ``value`` only if ``key`` is still at ``revision`` (ABSENT: only if it does not exist)."""
    tx = client.transactions
    ok, responses = await client.transaction(
        compare=[_unchanged_since(client, key, revision)],
        success=[tx.put(key, value), tx.get(key)],
        failure=[tx.get(key)],
    )
    return Swap(ok, _revision_of(responses[-1]))


async def delete_if(client: aetcd.Client, key: bytes, revision: int) -> Swap:
    """Delete ``key`` only if it is still at ``revision``; the revision reported on success is ABSENT."""
    tx = client.transactions
    ok, responses = await client.transaction(
        compare=[_unchanged_since(client, key, revision)], success=[tx.delete(key)], failure=[tx.get(key)]
    )
    return Swap(ok, ABSENT if ok else _revision_of(responses[-1]))


async def create(client: aetcd.Client, key: bytes, value: bytes) -> bool:
    """Put-if-absent: write ``value`` unless ``key`` exists (whatever its value); whether it wrote."""
    return (await put_if(client, key, value, ABSENT)).ok
