"""KV-cache blocks with a prefix cache and LRU eviction, as vLLM's block pool keeps them.

vLLM (v1) keeps every KV block in one pool. A block filled with a full block of
tokens gets a hash chained from its parent's, and stays findable by that hash
after its request finishes, until the space is needed: free blocks form a
queue, new allocations take from the head (least recently freed), and a
request that hits a cached block takes it back out of the queue. The
simulated engine mirrors that, so hit rates, evictions and the KV-cache
events a scheduler sees behave like the real engine's.

Blocks are small ints; nothing here knows about time or requests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class KVEvents:
    """What changed in the cache since the last drain, in engine order: the same
    information as vLLM's BlockStored / BlockRemoved events."""

    # (block hash, parent hash, origin): origin is what the engine passed along, e.g. (request, block index),
    # so a consumer can recover the block's tokens or content.
    stored: list[tuple[int, int | None, object]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)  # block hashes evicted

    def __bool__(self) -> bool:
        return bool(self.stored or self.removed)


class BlockPool:
    def __init__(self, num_blocks: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError("a KV cache needs at least one block")
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self._never_used = num_blocks  # blocks 0.._never_used-1 handed out lazily
        self._next_fresh = 0
        self._free: OrderedDict[int, None] = OrderedDict()  # freed blocks, least recently freed first
        self._ref: dict[int, int] = {}  # block -> requests holding it (absent: 0)
        self._hash_of: dict[int, int] = {}  # cached block -> its hash
        self._block_of: dict[int, int] = {}  # hash -> cached block
        self.events = KVEvents()
        self.record_events = False

    # -- capacity ----------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks that can be allocated now (never used, or free and maybe cached)."""
        return self._never_used + len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (vLLM's kv_cache_usage: evictable blocks count as free)."""
        return 1.0 - self.num_free / self.num_blocks

    @property
    def num_cached(self) -> int:
        return len(self._block_of)

    # -- prefix cache --------------------------------------------------------------------
    def cached_prefix(self, hashes: Sequence[int], max_blocks: int) -> list[int]:
        """The blocks holding the longest cached prefix of `hashes` (at most `max_blocks`)."""
        if not self.enable_prefix_caching:
            return []
        out = []
        for h in hashes[:max_blocks]:
            block = self._block_of.get(h)
            if block is None:
                break
            out.append(block)
        return out

    def evictable_among(self, blocks: list[int]) -> int:
        """How many of `blocks` sit in the free queue (taking them shrinks what can be allocated)."""
        return sum(1 for b in blocks if b in self._free)

    def touch(self, blocks: list[int]) -> None:
        """A request takes cached blocks: they leave the free queue and gain a holder."""
        for b in blocks:
            self._free.pop(b, None)
            self._ref[b] = self._ref.get(b, 0) + 1

    # -- allocation ------------------------------------------------------------------------
    def allocate(self, n: int) -> list[int]:
        """`n` blocks for one request; the caller checked num_free. Reusing a cached block evicts it."""
        if n > self.num_free:
            raise RuntimeError(f"asked for {n} KV blocks with {self.num_free} free")
        out = []
        for _ in range(n):
            if self._never_used:
                b = self._next_fresh
                self._next_fresh += 1
                self._never_used -= 1
            else:
                b, _ = self._free.popitem(last=False)
                h = self._hash_of.pop(b, None)
                if h is not None:
                    del self._block_of[h]
                    if self.record_events:
                        self.events.removed.append(h)
            self._ref[b] = 1
            out.append(b)
        return out

    def free(self, blocks: list[int]) -> None:
        """A request lets go of its blocks. Freed in reverse, as vLLM does, so a request's
        tail blocks are evicted before its head (the head is the likelier shared prefix)."""
        for b in reversed(blocks):
            left = self._ref.get(b, 0) - 1
            if left > 0:
                self._ref[b] = left
                continue
            self._ref.pop(b, None)
            self._free[b] = None

    def cache_block(self, block: int, block_hash: int, parent: int | None, origin: object = None) -> None:
        """A block has been filled with a full block of known content: make it findable.
        A second copy of content already cached stays private (vLLM does the same)."""
        if not self.enable_prefix_caching or block_hash in self._block_of or block in self._hash_of:
            return
        self._block_of[block_hash] = block
        self._hash_of[block] = block_hash
        if self.record_events:
            self.events.stored.append((block_hash, parent, origin))

    def drain_events(self) -> KVEvents:
        out, self.events = self.events, KVEvents()
        return out
