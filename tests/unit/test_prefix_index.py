"""The scheduler's prefix-cache index: precise (engine events) and approximate (routing history)."""

from __future__ import annotations

import random

from tessera.placement.block_hash import token_block_hashes
from tessera.placement.prefix_index import PrefixIndex

PROMPT = list(range(1000, 1256))  # 256 tokens: 16 canonical blocks
CANON = token_block_hashes(PROMPT, 16)


def store_blocks(index: PrefixIndex, worker: str, canon: list[int], block_tokens: int, blocks: int) -> list[int]:
    """Store the first `blocks` engine blocks; engine hashes here are just the canonical key of the block's end."""
    per = block_tokens // 16
    engine_hashes = []
    for b in range(blocks):
        keys = canon[b * per : (b + 1) * per]
        index.stored(worker, keys[-1], keys)
        engine_hashes.append(keys[-1])
    return engine_hashes


def test_match_reports_each_workers_cached_prefix_in_tokens():
    index = PrefixIndex()
    for w, size in (("a", 16), ("b", 32), ("c", 16)):
        index.add_worker(w, size)
    store_blocks(index, "a", CANON, 16, 10)  # 160 tokens
    store_blocks(index, "b", CANON, 32, 3)  # 96 tokens
    assert index.match(CANON) == {"a": 160, "b": 96}
    assert index.match(CANON, workers=["b", "c"]) == {"b": 96}
    other = token_block_hashes(list(range(5000, 5256)), 16)
    assert index.match(other) == {}


def test_a_gap_ends_the_match_as_it_ends_an_engines_prefix_lookup():
    index = PrefixIndex()
    index.add_worker("a", 16)
    hashes = store_blocks(index, "a", CANON, 16, 8)
    index.removed("a", [hashes[3]])  # block 3 evicted: blocks 4..7 are unreachable
    assert index.match(CANON) == {"a": 48}


def test_a_32_token_engine_only_counts_whole_blocks():
    index = PrefixIndex()
    index.add_worker("b", 32)
    hashes = store_blocks(index, "b", CANON, 32, 4)
    index.removed("b", [hashes[2]])
    assert index.match(CANON) == {"b": 64}
    assert index.match(CANON[:5]) == {"b": 64}  # a 80-token prompt still gets 2 whole blocks


def test_cleared_and_removed_workers_forget_everything():
    index = PrefixIndex()
    index.add_worker("a")
    index.add_worker("b")
    store_blocks(index, "a", CANON, 16, 16)
    store_blocks(index, "b", CANON, 16, 16)
    index.cleared("a")
    assert index.match(CANON) == {"b": 256}
    index.remove_worker("b")
    assert index.match(CANON) == {} and len(index) == 0
    index.add_worker("c")  # reuses b's slot without inheriting its blocks
    assert index.match(CANON) == {}


def test_shared_keys_survive_until_the_last_engine_block_holding_them_goes():
    index = PrefixIndex()
    index.add_worker("a")
    index.stored("a", 111, CANON[:1])
    index.stored("a", 222, CANON[:1])  # a second engine block with the same content
    index.removed("a", [111])
    assert index.match(CANON) == {"a": 16}
    index.removed("a", [222])
    assert index.match(CANON) == {}


def test_approximate_entries_expire_and_respect_capacity():
    index = PrefixIndex()
    index.add_worker("a")
    index.routed("a", CANON, now=0.0, ttl_s=10.0)
    assert index.match(CANON) == {"a": 256}
    other = token_block_hashes(list(range(7000, 7256)), 16)
    index.routed("a", other, now=20.0, ttl_s=10.0)  # the first prompt's entries expired
    assert index.match(CANON) == {} and index.match(other) == {"a": 256}
    index.routed("a", CANON, now=21.0, ttl_s=10.0, capacity_keys=20)  # only 20 keys fit: oldest go
    assert index.match(CANON) == {"a": 256} and index.match(other) == {}
    assert index.blocks_of("a") == 20


def test_lookup_at_scale_finds_exactly_the_workers_sharing_the_prefix():
    rng = random.Random(0)
    index = PrefixIndex()
    workers = [f"w{i}" for i in range(1024)]
    for w in workers:
        index.add_worker(w)
    # 1M canonical keys: 1024 workers x ~1000 keys, half of them in shared system prompts
    systems = [token_block_hashes([s * 100_000 + t for t in range(2048)], 16) for s in range(64)]
    for i, w in enumerate(workers):
        sys_keys = systems[i % 64]
        index.stored(w, hash((w, "sys")), sys_keys)
        private = [hash((w, j)) for j in range(1000 - len(sys_keys))]
        index.stored(w, hash((w, "priv")), private)
    assert len(index) > 800_000
    prompt = systems[5] + [rng.getrandbits(64) for _ in range(64)]
    hits = index.match(prompt)
    assert sorted(hits) == sorted(w for i, w in enumerate(workers) if i % 64 == 5)
    assert set(hits.values()) == {2048}
