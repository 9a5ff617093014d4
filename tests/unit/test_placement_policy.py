"""The placement pipeline, as pure code: filters, weighted scorers, picker, profiles."""

from __future__ import annotations

import collections

import pytest

from tessera.placement.pipeline import ProfileError, build_pipeline, load_profile
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot


def worker(wid: str, **kw) -> WorkerSnapshot:
    base = dict(address=f"{wid}:1", model="m", kv_block_size=16, kv_capacity_blocks=1000, max_model_len=4096)
    base.update(kw)
    return WorkerSnapshot(id=wid, **base)


def req(**kw) -> RequestInfo:
    base = dict(request_id="r", model="m", prompt_tokens=100, max_tokens=100)
    base.update(kw)
    return RequestInfo(**base)


def test_least_loaded_prefers_the_shorter_queue():
    p = load_profile("least_loaded", seed=1)
    busy, idle = worker("busy", num_waiting=5, num_running=8), worker("idle", num_waiting=0, num_running=1)
    assert p.place(req(), [busy, idle]).worker.id == "idle"


def test_kv_pressure_breaks_queue_ties():
    p = load_profile("least_loaded", seed=1)
    full, free = worker("full", kv_cache_usage=0.95), worker("free", kv_cache_usage=0.10)
    assert p.place(req(), [full, free]).worker.id == "free"


def test_filters_remove_unfit_workers_and_say_why():
    p = load_profile("least_loaded", seed=1)
    workers = [
        worker("other-model", model="x"),
        worker("sick", healthy=False),
        worker("draining", draining=True),
        worker("prefill-only", role="prefill"),
        worker("short", max_model_len=128),
    ]
    decision = p.place(req(prompt_tokens=200, max_tokens=10), workers)
    assert decision.worker is None
    assert decision.reason  # names the filter that emptied the set
    ok = worker("ok")
    assert p.place(req(prompt_tokens=200, max_tokens=10), workers + [ok]).worker.id == "ok"


def test_retry_excludes_the_failed_worker():
    p = load_profile("least_loaded", seed=1)
    a, b = worker("a"), worker("b", num_waiting=3)
    assert p.place(req(exclude=frozenset({"a"})), [a, b]).worker.id == "b"


def test_prompt_larger_than_the_whole_kv_cache_is_filtered():
    p = load_profile("least_loaded", seed=1)
    tiny_cache = worker("tiny", kv_capacity_blocks=2)  # 32 tokens
    assert p.place(req(prompt_tokens=100), [tiny_cache]).worker is None


def test_ties_are_broken_at_random_so_equal_workers_share_load():
    p = load_profile("least_loaded", seed=7)
    workers = [worker(f"w{i}") for i in range(4)]
    counts = collections.Counter(p.place(req(), workers).worker.id for _ in range(400))
    assert set(counts) == {"w0", "w1", "w2", "w3"}
    assert min(counts.values()) > 60


def test_unknown_names_in_a_profile_are_rejected_clearly():
    with pytest.raises(ProfileError, match="unknown scorer 'nope'"):
        build_pipeline({"name": "x", "scorers": [{"name": "nope", "weight": 1}]})
    with pytest.raises(ProfileError, match="unknown filter"):
        build_pipeline({"name": "x", "filters": ["bogus"]})
    with pytest.raises(ProfileError, match="no placement profile"):
        load_profile("does-not-exist")


def test_a_long_prompt_goes_where_it_stalls_fewer_decodes_and_a_short_one_is_left_alone():
    from tessera.placement.scorers import prefill_interference
    from tessera.placement.snapshot import PlacementContext

    speed = {"prefill_tokens_per_s": 20000.0, "decode_base_s": 0.01, "decode_step_s": 0.012}
    busy, quiet = worker("busy", num_running=30, **speed), worker("quiet", num_running=3, **speed)
    long = RequestInfo("r1", "m", prompt_tokens=8000)
    busy_score, quiet_score = prefill_interference(long, [busy, quiet], PlacementContext())
    assert quiet_score == 1.0 and busy_score < 0.2  # 31 stalled streams against 4
    # Cached on the busy worker, the prompt leaves little to prefill there: no opinion either way.
    cached = PlacementContext(prefix_hits={"busy": 7900})
    assert prefill_interference(long, [busy, quiet], cached) == [1.0, 1.0]
    short = RequestInfo("r2", "m", prompt_tokens=300)
    assert prefill_interference(short, [busy, quiet], PlacementContext()) == [1.0, 1.0]


def test_requests_are_spread_over_an_instances_data_parallel_ranks():
    from services.scheduler.view import ClusterView
    from tessera.v1 import common_pb2 as pb

    view = ClusterView()
    view.registered(pb.WorkerIdentity(id="moe", model="m", data_parallel_ranks=[0, 1, 2, 3]))
    view.registered(pb.WorkerIdentity(id="dense", model="m"))
    ranks = [view.choose_rank("moe") for _ in range(8)]
    assert collections.Counter(ranks) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert view.choose_rank("dense") is None  # a single-rank instance is not pinned


def test_the_least_loaded_rank_by_the_workers_own_per_rank_report_gets_the_request():
    from services.scheduler.view import ClusterView
    from services.worker.engine import EngineLoad
    from services.worker.load import LoadTracker
    from tessera.v1 import common_pb2 as pb

    tracker = LoadTracker(ranks=[0, 1])
    for i in range(6):
        tracker.started(f"r{i}", 100, rank=0)  # rank 0 is busy, rank 1 idle
    tracker.engine_stats(EngineLoad(num_running=6, kv_cache_usage=0.5, data_parallel_rank=0))
    tracker.engine_stats(EngineLoad(num_running=0, kv_cache_usage=0.0, data_parallel_rank=1))
    report = tracker.report(1)
    assert report.num_running == 6 and [r.num_running for r in report.ranks] == [6, 0]

    view = ClusterView()
    view.registered(pb.WorkerIdentity(id="moe", model="m", data_parallel_ranks=[0, 1]))
    view.load_reported("moe", report)
    assert [view.choose_rank("moe") for _ in range(5)] == [1, 1, 1, 1, 1]  # until rank 1 catches up


def test_a_tenant_over_its_fair_share_does_not_get_a_workers_last_free_slot():
    p = load_profile("tessera", seed=1)
    nearly_full = worker("w", max_num_seqs=8, num_running=7)
    assert p.place(req(over_fair_share=True), [nearly_full]).saturated  # the last slot is kept...
    assert p.place(req(), [nearly_full]).worker.id == "w"  # ...for a tenant below its share
    assert p.place(req(), [worker("w", max_num_seqs=8, num_running=8)]).saturated
    assert p.place(req(over_fair_share=True), [worker("w", max_num_seqs=8, num_running=6)]).worker.id == "w"
    tiny = worker("w", max_num_seqs=2, num_running=1)  # too few slots to keep one back
    assert p.place(req(over_fair_share=True), [tiny]).worker.id == "w"
