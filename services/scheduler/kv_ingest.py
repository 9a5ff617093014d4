"""Engine KV-cache events from a worker's report stream into the prefix index.

Engines hash blocks their own way (vLLM: SHA-256 or its builtin hash, at 16 or
32 tokens a block); the index speaks canonical 16-token hashes of token ids,
which the router computes from prompts. Each stored block's token ids are
re-hashed here, chained from its parent's canonical hash, so every engine's
blocks land under the keys routers ask about. A block whose parent is unknown
cannot be reached by any prompt lookup (prefix matching stops before it) and
is skipped.
"""

from __future__ import annotations

import logging

from tessera.placement.block_hash import CANONICAL_BLOCK_TOKENS, token_block_hashes
from tessera.placement.prefix_index import PrefixIndex
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.scheduler.kv")


class KVStreamState:
    """Per report stream: the next sequence number expected."""

    def __init__(self) -> None:
        self.next_seq = 0
        self.gaps = 0


def apply_batch(index: PrefixIndex, worker_id: str, batch: pb.KVEventBatch, state: KVStreamState) -> None:
    if batch.seq != state.next_seq:
        # Events went missing: what the index believes of this worker is unreliable. Forget it;
        # the worker's next stream starts with a full snapshot.
        state.gaps += 1
        log.warning(
            "KV events from %s: expected batch %d, got %d; forgetting its cache until it resyncs",
            worker_id,
            state.next_seq,
            batch.seq,
        )
        index.cleared(worker_id)
    state.next_seq = batch.seq + 1
    for ev in batch.events:
        kind = ev.WhichOneof("event")
        if kind == "stored":
            _stored(index, worker_id, ev.stored)
        elif kind == "removed":
            index.removed(worker_id, ev.removed.block_hashes)
        elif kind == "cleared":
            index.cleared(worker_id)


def _stored(index: PrefixIndex, worker_id: str, stored: pb.BlockStored) -> None:
    size = stored.block_size or CANONICAL_BLOCK_TOKENS
    if size % CANONICAL_BLOCK_TOKENS:
        return  # engines with odd block sizes cannot be indexed canonically
    parent_canonical = 0
    if stored.has_parent:
        keys = index.canonical_of(worker_id, stored.parent_block_hash)
        if not keys:
            return
        parent_canonical = keys[-1]
    tokens = list(stored.token_ids)
    for i, engine_hash in enumerate(stored.block_hashes):
        block = tokens[i * size : (i + 1) * size]
        if len(block) < size:
            return
        block_keys = token_block_hashes(block, CANONICAL_BLOCK_TOKENS, parent=parent_canonical)
        index.stored(worker_id, engine_hash, block_keys)
        parent_canonical = block_keys[-1]
