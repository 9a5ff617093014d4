"""The simulated engine's batching, prefix cache and preemption, against hand-worked cases."""

from __future__ import annotations

import pytest

from tessera.engine_model.batching import BatchingEngine, EngineConfig, EngineRequest
from tessera.placement.block_hash import content_block_hashes, token_block_hashes


def run_steps(engine: BatchingEngine, limit: int = 1000) -> list[tuple[list[tuple[int, int]], list[int]]]:
    """Run to completion; the batches as the performance model would price them."""
    batches = []
    for _ in range(limit):
        step = engine.schedule()
        if step.empty:
            return batches
        batches.append(step.batch())
        engine.complete(step)
    raise AssertionError("engine did not drain")


def test_chunked_prefill_then_one_token_per_step():
    engine = BatchingEngine(EngineConfig(num_blocks=64, block_size=16, max_num_batched_tokens=64))
    engine.add(EngineRequest("a", prompt_tokens=100, max_tokens=3))
    # 100-token prompt at a 64-token budget: 64, then 36 (which yields token 1), then two decodes.
    assert run_steps(engine) == [([(64, 0)], []), ([(36, 64)], []), ([], [100]), ([], [101])]


def test_decodes_go_first_and_new_prompts_fill_the_budget():
    engine = BatchingEngine(EngineConfig(num_blocks=64, block_size=16, max_num_batched_tokens=50))
    engine.add(EngineRequest("a", 40, 3))
    first = engine.schedule()
    assert first.batch() == ([(40, 0)], [])
    engine.complete(first)
    engine.add(EngineRequest("b", 80, 2))
    second = engine.schedule()
    # a decodes (1 token), b gets the remaining 49 tokens of the budget
    assert second.batch() == ([(49, 0)], [40])


def test_prefix_cache_hit_leaves_at_least_one_token_to_compute():
    engine = BatchingEngine(EngineConfig(num_blocks=64, block_size=16))
    hashes = token_block_hashes(list(range(64)), 16)
    assert len(hashes) == 4
    engine.add(EngineRequest("a", 64, 1, hashes))
    run_steps(engine)
    engine.add(EngineRequest("b", 64, 1, hashes))
    step = engine.schedule()
    # all 4 blocks are cached but the last token must be recomputed: hit 3 blocks = 48 tokens
    assert step.batch() == ([(16, 48)], [])
    assert step.requests[0].cached_prompt_tokens == 48
    assert (engine.prefix_queries, engine.prefix_hits) == (128, 48)


def test_shared_prefix_only_up_to_the_first_difference():
    engine = BatchingEngine(EngineConfig(num_blocks=64, block_size=16))
    a = token_block_hashes(list(range(80)), 16)
    b = token_block_hashes(list(range(40)) + [9999] + list(range(41, 80)), 16)
    assert a[:2] == b[:2] and a[2] != b[2] and a[3] != b[3]  # chained: later blocks differ too
    engine.add(EngineRequest("a", 80, 1, a))
    run_steps(engine)
    engine.add(EngineRequest("b", 80, 1, b))
    assert engine.schedule().batch() == ([(48, 32)], [])


def test_lru_evicts_the_least_recently_freed_blocks_first():
    # 8 blocks of 16 tokens; each request holds 3 blocks (48 prompt tokens + 1 output)
    engine = BatchingEngine(EngineConfig(num_blocks=8, block_size=16))
    h = {name: token_block_hashes([1000 * i + t for t in range(48)], 16) for i, name in enumerate("abc")}
    for name in "abc":
        engine.add(EngineRequest(name, 48, 1, h[name]))
        run_steps(engine)
    # a, b, c freed in that order; c needed 3 blocks of which only 2 were never used:
    # it evicted a's tail block (freed in reverse, so a's last block went first).
    assert engine.pool.cached_prefix(h["a"], 3) == engine.pool.cached_prefix(h["a"], 2)
    assert len(engine.pool.cached_prefix(h["a"], 3)) == 2
    assert len(engine.pool.cached_prefix(h["b"], 3)) == 3
    assert len(engine.pool.cached_prefix(h["c"], 3)) == 3


def test_preemption_recomputes_the_newest_request_and_both_finish():
    # 6 blocks of 16 tokens. Two requests of 32 prompt + 40 output need 5 blocks each at the end.
    engine = BatchingEngine(EngineConfig(num_blocks=6, block_size=16, max_num_batched_tokens=256))
    engine.add(EngineRequest("old", 32, 40))
    engine.add(EngineRequest("new", 32, 40))
    preempted = []
    finished = []
    for _ in range(500):
        step = engine.schedule()
        if step.empty:
            break
        preempted += [r.request_id for r in step.preempted]
        finished += [r.request_id for r in engine.complete(step).finished]
    assert preempted and set(preempted) == {"new"}
    assert finished == ["old", "new"]
    assert engine.pool.usage == 0.0


def test_sequence_limit_and_kv_usage():
    engine = BatchingEngine(EngineConfig(num_blocks=100, block_size=16, max_num_seqs=2))
    for i in range(3):
        engine.add(EngineRequest(f"r{i}", 20, 5))
    step = engine.schedule()
    assert len(step.requests) == 2 and engine.num_waiting == 1
    assert engine.kv_usage == pytest.approx(4 / 100)  # two requests x 2 blocks


def test_kv_events_report_stores_and_evictions():
    engine = BatchingEngine(EngineConfig(num_blocks=4, block_size=16))
    engine.pool.record_events = True
    ha = token_block_hashes(list(range(48)), 16)
    hb = token_block_hashes(list(range(100, 148)), 16)
    engine.add(EngineRequest("a", 48, 1, ha))
    step = engine.schedule()
    out = engine.complete(step)
    assert [(h, parent) for h, parent, _ in out.kv_events.stored] == [(ha[0], None), (ha[1], ha[0]), (ha[2], ha[1])]
    assert [origin[1] for _, _, origin in out.kv_events.stored] == [0, 1, 2]  # (request, block index)
    engine.add(EngineRequest("b", 48, 1, hb))
    out = engine.complete(engine.schedule())
    assert len(out.kv_events.stored) == 3
    assert out.kv_events.removed == [ha[2], ha[1]]  # 1 block never used, then a's tail first


def test_requests_that_cannot_fit_are_refused():
    engine = BatchingEngine(EngineConfig(num_blocks=4, block_size=16, max_model_len=100))
    with pytest.raises(ValueError, match="context"):
        engine.add(EngineRequest("long", 90, 20))
    with pytest.raises(ValueError, match="KV blocks"):
        engine.add(EngineRequest("big", 70, 10))
    engine.add(EngineRequest("ok", 10, 10))
    with pytest.raises(ValueError, match="already"):
        engine.add(EngineRequest("ok", 10, 10))


def test_abort_frees_blocks():
    engine = BatchingEngine(EngineConfig(num_blocks=10, block_size=16))
    engine.add(EngineRequest("a", 40, 10))
    engine.complete(engine.schedule())
    assert engine.kv_usage > 0
    engine.abort("a")
    assert engine.kv_usage == 0 and not engine.has_work


def test_content_hashes_map_trace_blocks_onto_engine_blocks():
    # Mooncake-style: one id per 512 tokens. Two prompts sharing the first id share 512/16 = 32 engine blocks.
    a = content_block_hashes((1, 2), 512, 1000, 16)
    b = content_block_hashes((1, 3), 512, 1000, 16)
    assert len(a) == 62
    common = sum(1 for x, y in zip(a, b) if x == y)
    assert common == 32
    assert content_block_hashes((), 512, 1000, 16) == []


def test_pending_prefill_counter_matches_a_recount_through_preemptions_and_hits():
    import random

    rng = random.Random(5)
    engine = BatchingEngine(EngineConfig(num_blocks=40, block_size=16, max_num_batched_tokens=128, max_num_seqs=8))
    shared = list(range(64))
    for i in range(60):
        prompt = (
            shared + [10_000 + i * 100 + t for t in range(rng.randint(1, 150))]
            if i % 2
            else [20_000 + i * 1000 + t for t in range(rng.randint(1, 200))]
        )
        engine.add(EngineRequest(f"r{i}", len(prompt), rng.randint(1, 60), token_block_hashes(prompt, 16)))
        for _ in range(rng.randint(0, 4)):
            step = engine.schedule()
            if not step.empty:
                engine.complete(step)
            if rng.random() < 0.05 and engine.running:
                engine.abort(engine.running[-1].request_id)
            recount = sum(
                max(0, r.num_tokens - r.num_computed) if r.num_tokens - r.num_computed > 1 else 0
                for r in list(engine.waiting) + engine.running
            )
            assert engine.pending_prefill_tokens == recount
    run_steps(engine)
    assert engine.pending_prefill_tokens == 0
