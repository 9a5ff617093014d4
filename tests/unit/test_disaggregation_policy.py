"""The prefill/decode pairing policy, as pure code: which decode worker, and whether and where to prefill."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.perf.comm import kv_transfer_estimator, kv_transfer_time
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.placement.disaggregation import DisaggConfig
from tessera.placement.kv_compat import KVCompat
from tessera.placement.pairing import place_pair
from tessera.placement.pipeline import PROFILES_DIR, ProfileError, build_pipeline, load_profile
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot

# One engine build on every worker unless a test says otherwise: pairs may form.
COMPAT = KVCompat("vllm", "0.32.0", "m", "bfloat16", "bfloat16", 16, "LBHNC", "FLASH_ATTN", 1, "NixlConnector", 8)


def worker(wid: str, role: str, **kw) -> WorkerSnapshot:
    base = dict(
        address=f"{wid}:1",
        model="m",
        role=role,
        accelerator="h100-sxm",
        kv_block_size=16,
        kv_capacity_blocks=10_000,
        max_model_len=32_768,
        max_num_seqs=256,
        prefill_tokens_per_s=40_000.0,
        decode_base_s=0.008,
        decode_step_s=0.010,
        kv_compat=COMPAT,
    )
    base.update(kw)
    return WorkerSnapshot(id=wid, **base)


def req(prompt: int, **kw) -> RequestInfo:
    return RequestInfo(
        request_id=kw.pop("request_id", "r"),
        model="m",
        prompt_tokens=prompt,
        max_tokens=kw.pop("max_tokens", 128),
        **kw,
    )


def flat(seconds: float = 0.01):
    return lambda p, d, tokens: seconds


def pair(request, workers, transfer=None, profile="tessera_disagg", config=None):
    pipe = load_profile(profile, seed=0)
    return place_pair(request, workers, pipe, pipe.prefill_pipeline, config or pipe.disaggregation, transfer or flat())


def test_short_prompt_is_prefilled_where_it_decodes():
    d = pair(req(200), [worker("p", "prefill"), worker("d", "decode")])
    assert d.decode.id == "d" and d.prefill is None and d.transfer_s == 0.0
    assert "uncached" in d.reason


def test_long_prompt_goes_to_a_prefill_worker():
    d = pair(req(4000), [worker("p", "prefill"), worker("d", "decode")], transfer=flat(0.02))
    assert (d.decode.id, d.prefill.id) == ("d", "p")
    assert d.transfer_s == pytest.approx(0.02) and d.reason == ""


def test_prefill_workers_never_decode_and_mixed_workers_serve_whole_requests():
    workers = [worker("p1", "prefill"), worker("p2", "prefill"), worker("d", "decode"), worker("m", "mixed")]
    pipe, seen = load_profile("tessera_disagg", seed=0), set()
    for i in range(20):
        d = place_pair(req(4000, request_id=f"r{i}"), workers, pipe, pipe.prefill_pipeline, pipe.disaggregation, flat())
        seen.add(d.decode.id)
        if d.decode.id == "d":
            assert d.prefill.id in ("p1", "p2")
        else:
            assert d.decode.id == "m" and d.prefill is None and "mixed" in d.reason
    assert seen == {"d", "m"}


def test_faster_prefill_worker_is_preferred():
    slow, fast = (
        worker("slow", "prefill", prefill_tokens_per_s=13_000.0),
        worker("fast", "prefill", prefill_tokens_per_s=90_000.0),
    )
    d = pair(req(8000), [slow, fast, worker("d", "decode")])
    assert d.prefill.id == "fast"


def test_prefill_worker_with_the_prompt_cached_is_preferred():
    pipe = load_profile("tessera_disagg", seed=0)
    workers = [worker("p1", "prefill"), worker("p2", "prefill"), worker("d1", "decode"), worker("d2", "decode")]
    hashes = tuple(range(400))  # 6400 tokens of shared prefix
    first = place_pair(
        req(6400, block_hashes=hashes), workers, pipe, pipe.prefill_pipeline, pipe.disaggregation, flat()
    )
    # a second prompt with the same prefix, steered away from the first decode worker
    second = place_pair(
        req(
            8000, request_id="r2", block_hashes=hashes + tuple(range(1000, 1100)), exclude=frozenset({first.decode.id})
        ),
        workers,
        pipe,
        pipe.prefill_pipeline,
        pipe.disaggregation,
        flat(),
    )
    assert second.prefill.id == first.prefill.id and second.prefix_hit_tokens == 6400


def test_cheaper_to_reach_prefill_worker_is_preferred_at_equal_speed():
    far, near = worker("far", "prefill"), worker("near", "prefill")

    def transfer(p, d, tokens):
        return 0.5 if p.id == "far" else 0.02

    for i in range(5):
        assert pair(req(8000, request_id=f"r{i}"), [far, near, worker("d", "decode")], transfer).prefill.id == "near"


def test_transfer_cost_outweighs_speed_only_when_it_should():
    fast_far = worker("fast_far", "prefill", prefill_tokens_per_s=40_000.0)
    slow_near = worker("slow_near", "prefill", prefill_tokens_per_s=20_000.0)
    workers = [fast_far, slow_near, worker("d", "decode")]

    # 8000 tokens: fast ready at 0.2 s + transfer, slow at 0.4 s + 0.01 s
    def expensive(p, d, tokens):
        return 1.0 if p.id == "fast_far" else 0.01

    def cheap(p, d, tokens):
        return 0.02 if p.id == "fast_far" else 0.01

    assert pair(req(8000), workers, expensive).prefill.id == "slow_near"
    assert pair(req(8000), workers, cheap).prefill.id == "fast_far"
    ignore = DisaggConfig(transfer_weight=0.0)
    assert pair(req(8000), workers, expensive, config=ignore).prefill.id == "fast_far"


def test_saturated_prefill_side_falls_back_to_local_prefill():
    busy = worker("p", "prefill", num_running=200, num_waiting=56)  # every batch slot taken
    d = pair(req(8000), [busy, worker("d", "decode")])
    assert d.decode.id == "d" and d.prefill is None and "saturation" in d.reason


def test_no_prefill_workers_means_local_prefill():
    d = pair(req(8000), [worker("a", "mixed"), worker("b", "mixed")])
    assert d.decode is not None and d.prefill is None and d.reason == "no prefill workers"


def test_disabled_means_local_prefill():
    d = pair(req(8000), [worker("p", "prefill"), worker("d", "decode")], config=DisaggConfig(enabled=False))
    assert d.prefill is None and d.reason == "disaggregation disabled"


def test_prompt_mostly_cached_on_the_decode_worker_stays_there():
    pipe = load_profile("tessera_disagg", seed=0)
    workers = [worker("p", "prefill"), worker("d", "decode")]
    hashes = tuple(range(500))
    first = place_pair(
        req(8000, block_hashes=hashes), workers, pipe, pipe.prefill_pipeline, pipe.disaggregation, flat()
    )
    assert first.prefill is not None
    # the decode worker holds the prompt's KV after the copy (its routing record says so): a longer
    # prompt two thirds cached there computes its last 4000 tokens there rather than copy 12000
    longer = hashes + tuple(range(1000, 1250))
    again = place_pair(
        req(12000, request_id="r2", block_hashes=longer),
        workers,
        pipe,
        pipe.prefill_pipeline,
        pipe.disaggregation,
        flat(),
    )
    assert again.prefill is None and "cached on the decode worker" in again.reason
    assert again.prefix_hit_tokens == 8000


def test_no_decode_worker_reports_why_and_saturation_queues():
    none = pair(req(8000), [worker("p", "prefill")])
    assert none.decode is None and none.prefill is None and not none.saturated
    full = pair(req(8000), [worker("p", "prefill"), worker("d", "decode", num_running=256)])
    assert full.decode is None and full.saturated


def test_on_a_mixed_cluster_the_profile_places_as_its_decode_side_alone():
    workers = [worker(f"w{i}", "mixed", num_running=i * 7 % 5, num_waiting=i % 3) for i in range(8)]
    spec = yaml.safe_load((PROFILES_DIR / "tessera_disagg.yaml").read_text())
    a = build_pipeline({k: v for k, v in spec.items() if k != "disaggregation"}, seed=3)
    b = build_pipeline(spec, seed=3)
    for i in range(20):
        r = req(3000 + i * 100, request_id=f"r{i}")
        assert (
            place_pair(r, workers, b, b.prefill_pipeline, b.disaggregation, flat()).decode.id
            == a.place(r, workers).worker.id
        )


def test_profile_section_is_parsed_and_checked():
    p = build_pipeline(
        {"name": "x", "filters": ["serves_whole_requests"], "disaggregation": {"min_prompt_tokens": 1024}}
    )
    assert p.disaggregation == DisaggConfig(min_prompt_tokens=1024)
    assert p.prefill_pipeline is not None and p.prefill_pipeline.name == "x/prefill"
    assert build_pipeline({"name": "plain"}).disaggregation is None
    for bad in (
        {"min_prompt": 1},
        {"max_cached_fraction": 2.0},
        {"enabled": "yes"},
        [1],
        {"prefill": {"scorers": ["nope"]}},
    ):
        with pytest.raises(ProfileError, match="disaggregation"):
            build_pipeline({"name": "x", "disaggregation": bad})


def test_transfer_estimator_reads_the_catalog():
    arch = ModelArch.llama3_8b()
    est = kv_transfer_estimator(arch, {"p": 2, "d": 4})
    p, d = worker("p", "prefill", accelerator="h100"), worker("d", "decode", accelerator="a100-80gb-sxm")
    h100, a100 = accelerators.find("h100"), accelerators.find("a100")
    assert est(p, d, 8192) == pytest.approx(kv_transfer_time(arch, 8192, h100, a100, src_devices=2, dst_devices=4))
    # the slower end's link sets the pace; two lanes halve the time
    assert est(p, d, 8192) < kv_transfer_time(arch, 8192, h100, a100)
    assert est(worker("x", "prefill", accelerator="no-such-part"), d, 8192) > est(p, d, 8192)


# -- the default profile pairs where it pays, and only with workers that can read each other's KV --------


def test_default_profile_pairs_a_long_prompt_when_the_decode_worker_is_busy():
    busy = worker("d", "decode", num_running=32)
    d = pair(req(4000), [worker("p", "prefill"), busy], profile="tessera")
    assert d.decode.id == "d" and d.prefill is not None and d.prefill.id == "p"


def test_default_profile_prefills_locally_when_the_pair_would_only_add_the_copy():
    # an idle decode worker prefills as fast as the prefill worker; the transfer and the extra step only add
    d = pair(req(4000), [worker("p", "prefill"), worker("d", "decode")], profile="tessera")
    assert d.decode.id == "d" and d.prefill is None and "local prefill predicted cheaper" in d.reason


def test_the_pay_check_weighs_the_stall_of_running_decodes_against_the_copy():
    from tessera.placement.pairing import local_and_pair_seconds

    dec = worker("d", "decode", num_running=4)
    local, paired = local_and_pair_seconds(req(4000), dec, 0, kv_ready_s=0.12, interference_weight=1.0)
    # 4000 tokens at 40k tokens/s: 0.1 s, plus two steps of a 4-sequence batch; four streams stall 0.1 s each
    assert local == pytest.approx(0.1 + 2 * dec.step_seconds(4) + 4 * 0.1)
    assert paired == pytest.approx(0.12 + dec.step_seconds(5))
    alone, _ = local_and_pair_seconds(req(4000), dec, 0, kv_ready_s=0.12, interference_weight=0.0)
    assert alone < paired < local  # weighing only this request's TTFT, local wins


def test_default_profile_on_mixed_workers_places_as_without_the_disaggregation_section():
    spec = yaml.safe_load((PROFILES_DIR / "tessera.yaml").read_text())
    assert spec["disaggregation"]["only_when_it_pays"] is True
    plain = build_pipeline({k: v for k, v in spec.items() if k != "disaggregation"}, seed=3)
    with_section = build_pipeline(spec, seed=3)
    fleet = [worker(f"m{i}", "mixed", num_running=i * 5, num_waiting=i % 3, kv_cache_usage=i / 10) for i in range(6)]
    for n, prompt in enumerate((100, 900, 3000, 12000, 40, 5000)):
        r = req(prompt, request_id=f"r{n}")
        a = plain.place(r, fleet)
        b = place_pair(r, fleet, with_section, with_section.prefill_pipeline, with_section.disaggregation, flat())
        assert b.prefill is None and b.decode.id == a.worker.id


def test_prefill_workers_whose_kv_the_decode_worker_cannot_read_are_never_chosen():
    fnuz = dataclasses.replace(COMPAT, kv_cache_dtype="float8_e4m3fnuz")
    fn = dataclasses.replace(COMPAT, kv_cache_dtype="float8_e4m3fn")
    f32 = dataclasses.replace(COMPAT, dtype="float32", kv_cache_dtype="float32")
    dec = worker("d", "decode", kv_compat=fn)
    fast_mi300 = worker("mi300", "prefill", kv_compat=fnuz, prefill_tokens_per_s=90_000.0)
    fast_f32 = worker("f32", "prefill", kv_compat=f32, prefill_tokens_per_s=90_000.0)
    slow_ok = worker("ok", "prefill", kv_compat=fn, prefill_tokens_per_s=20_000.0, num_waiting=3)
    for i in range(20):
        d = pair(req(4000, request_id=f"r{i}"), [fast_mi300, fast_f32, slow_ok, dec])
        assert d.prefill is not None and d.prefill.id == "ok"
    alone = pair(req(4000), [fast_mi300, fast_f32, dec])
    assert alone.prefill is None and "can hand KV" in alone.reason and "differs" in alone.reason


def test_one_decision_function_for_single_workers_and_pairs():
    from tessera.placement.decision import place_request

    single = load_profile("least_loaded", seed=0)
    d = place_request(
        req(4000), [worker("p", "prefill"), worker("a", "mixed", num_waiting=2), worker("b", "mixed")], single, flat()
    )
    assert d.decode.id == "b" and d.prefill is None and d.score > 0
    paired = load_profile("tessera_disagg", seed=0)
    d = place_request(req(4000), [worker("p", "prefill"), worker("d", "decode")], paired, flat())
    assert d.decode.id == "d" and d.prefill.id == "p" and d.transfer_s == 0.01
