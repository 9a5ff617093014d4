"""Which workers hold which prompt prefixes in their KV cache.

Keys are *canonical* chained hashes of 16-token blocks of token ids (the
router computes them once per prompt, tessera.placement.block_hash), whatever block
size a worker's engine uses: a worker with 32-token blocks that caches a block
is entered under both of its 16-token halves. One lookup then serves a
heterogeneous fleet.

Each key maps to a bitmask of worker slots (a Python int), so a lookup is a
walk down the prompt's hashes AND-ing masks: workers drop out where their
cached prefix ends, and the walk stops when none is left. Cost grows with the
matched prefix, not with the number of workers or blocks indexed.

Two ways in:
- precise: engine KV-cache events (stored / removed / cleared), keyed by the
  engine's own block hash so removals find their canonical keys;
- approximate: `routed()` records what was sent where, with an expiry, for
  engines that publish no events (llm-d's approximate prefix cache does this).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from tessera.placement.block_hash import CANONICAL_BLOCK_TOKENS

__all__ = ["CANONICAL_BLOCK_TOKENS", "PrefixIndex"]


class PrefixIndex:
    def __init__(self) -> None:
        self._holders: dict[int, int] = {}  # canonical hash -> bitmask of worker slots
        self._slot: dict[str, int] = {}  # worker id -> slot
        self._worker_at: dict[int, str] = {}  # slot -> worker id
        self._free_slots: list[int] = []
        self._next_slot = 0
        self._blocks: dict[str, dict[int, tuple[int, ...]]] = {}  # worker -> engine hash -> canonical keys
        self._refs: dict[str, dict[int, int]] = {}  # worker -> canonical key -> engine blocks holding it
        self._block_tokens: dict[str, int] = {}
        # approximate mode: worker -> canonical key -> expiry, oldest first
        self._routed: dict[str, OrderedDict[int, float]] = {}

    # -- workers ---------------------------------------------------------------------------
    def add_worker(self, worker_id: str, block_tokens: int = CANONICAL_BLOCK_TOKENS) -> None:
        if worker_id in self._slot:
            self._block_tokens[worker_id] = block_tokens
            return
        if block_tokens % CANONICAL_BLOCK_TOKENS:
            raise ValueError(f"block size {block_tokens} is not a multiple of {CANONICAL_BLOCK_TOKENS}")
        self._slot[worker_id] = self._free_slots.pop() if self._free_slots else self._next_slot
        if self._slot[worker_id] == self._next_slot:
            self._next_slot += 1
        self._worker_at[self._slot[worker_id]] = worker_id
        self._blocks[worker_id] = {}
        self._refs[worker_id] = {}
        self._block_tokens[worker_id] = block_tokens

    def remove_worker(self, worker_id: str) -> None:
        if worker_id not in self._slot:
            return
        self.cleared(worker_id)
        slot = self._slot.pop(worker_id)
        del self._worker_at[slot]
        self._free_slots.append(slot)
        del self._blocks[worker_id], self._refs[worker_id], self._block_tokens[worker_id]
        self._routed.pop(worker_id, None)

    @property
    def workers(self) -> list[str]:
        return list(self._slot)

    def blocks_of(self, worker_id: str) -> int:
        """Canonical keys indexed for a worker (precise and approximate)."""
        return len(self._refs.get(worker_id, ())) + len(self._routed.get(worker_id, ()))

    def __len__(self) -> int:
        return len(self._holders)

    # -- precise: engine events ---------------------------------------------------------------
    def stored(self, worker_id: str, engine_hash: int, canonical: Sequence[int]) -> None:
        """The engine cached one block, covering these canonical keys."""
        blocks = self._blocks.get(worker_id)
        if blocks is None or engine_hash in blocks:
            return
        keys = tuple(canonical)
        blocks[engine_hash] = keys
        refs = self._refs[worker_id]
        bit = 1 << self._slot[worker_id]
        for k in keys:
            n = refs.get(k, 0)
            refs[k] = n + 1
            if n == 0:
                self._holders[k] = self._holders.get(k, 0) | bit

    def removed(self, worker_id: str, engine_hashes: Iterable[int]) -> None:
        blocks = self._blocks.get(worker_id)
        if blocks is None:
            return
        refs = self._refs[worker_id]
        bit = 1 << self._slot[worker_id]
        for h in engine_hashes:
            for k in blocks.pop(h, ()):
                n = refs.get(k, 0) - 1
                if n > 0:
                    refs[k] = n
                    continue
                refs.pop(k, None)
                if k not in self._routed.get(worker_id, ()):
                    self._drop(k, bit)

    def cleared(self, worker_id: str) -> None:
        """The engine dropped its whole cache (or a resynchronisation starts over)."""
        blocks = self._blocks.get(worker_id)
        if blocks is None:
            return
        bit = 1 << self._slot[worker_id]
        for k in list(self._refs[worker_id]):
            self._drop(k, bit)
        for k in self._routed.pop(worker_id, {}):
            self._drop(k, bit)
        blocks.clear()
        self._refs[worker_id].clear()

    def canonical_of(self, worker_id: str, engine_hash: int) -> tuple[int, ...] | None:
        """The canonical keys of a block the worker stored (to continue a hash chain from its parent)."""
        return self._blocks.get(worker_id, {}).get(engine_hash)

    def _drop(self, key: int, bit: int) -> None:
        mask = self._holders.get(key, 0) & ~bit
        if mask:
            self._holders[key] = mask
        else:
            self._holders.pop(key, None)

    # -- approximate: what was routed where ---------------------------------------------------
    def routed(
        self, worker_id: str, canonical: Sequence[int], now: float, ttl_s: float, capacity_keys: int = 0
    ) -> None:
        """Assume the worker caches what it was just sent, until `now + ttl_s`, keeping at most
        `capacity_keys` keys per worker (its KV capacity), oldest dropped first."""
        if worker_id not in self._slot:
            return
        table = self._routed.setdefault(worker_id, OrderedDict())
        bit = 1 << self._slot[worker_id]
        expiry = now + ttl_s
        for k in canonical:
            if k in table:
                table.move_to_end(k)
            else:
                self._holders[k] = self._holders.get(k, 0) | bit
            table[k] = expiry
        while table and (next(iter(table.values())) <= now or (capacity_keys and len(table) > capacity_keys)):
            k, _ = table.popitem(last=False)
            if k not in self._refs[worker_id]:
                self._drop(k, bit)

    # -- lookup --------------------------------------------------------------------------------
    def match(self, canonical: Sequence[int], workers: Iterable[str] | None = None) -> dict[str, int]:
        """Tokens of the prompt's prefix each worker holds, rounded down to its block size.

        Only workers with a non-zero match appear; `workers` restricts the answer.
        """
        slots = self._slot
        if workers is None:
            alive = (1 << self._next_slot) - 1
        else:
            alive = 0
            for w in workers:
                s = slots.get(w)
                if s is not None:
                    alive |= 1 << s
        depth: dict[int, int] = {}  # slot -> canonical blocks matched
        i = 0
        holders = self._holders
        for i, key in enumerate(canonical):
            if not alive:
                break
            mask = holders.get(key, 0)
            dropped = alive & ~mask
            if dropped:
                if i:  # a worker dropping at the first block matched nothing
                    self._record(dropped, i, depth)
                alive &= mask
        else:
            i = len(canonical)
        if alive:
            self._record(alive, i, depth)
        out: dict[str, int] = {}
        for slot, blocks in depth.items():
            if blocks:
                w = self._worker_at[slot]
                tokens = blocks * CANONICAL_BLOCK_TOKENS
                tokens -= tokens % self._block_tokens[w]
                if tokens:
                    out[w] = tokens
        return out

    @staticmethod
    def _record(mask: int, blocks: int, depth: dict[int, int]) -> None:
        while mask:
            low = mask & -mask
            depth[low.bit_length() - 1] = blocks
            mask ^= low
