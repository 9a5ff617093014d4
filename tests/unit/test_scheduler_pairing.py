"""The scheduler's Place servicer on workers as they register: pairs follow the descriptors they publish."""

from __future__ import annotations

from services.scheduler.servicer import SchedulerServicer
from services.scheduler.view import ClusterView
from tessera.placement.pipeline import load_profile
from tessera.v1 import common_pb2 as pb
from tessera.v1 import scheduler_pb2

SPEED = {"prefill_tokens_per_s": 40_000.0, "decode_base_s": 0.008, "decode_step_s": 0.010}


def descriptor(kv_cache_dtype: str) -> pb.KVCompatibility:
    return pb.KVCompatibility(
        engine="vllm",
        engine_version="0.32.0",
        model="/models/llama",
        dtype="bfloat16",
        kv_cache_dtype=kv_cache_dtype,
        block_size=16,
        attention_backend="TRITON_ATTN",
        tensor_parallel=1,
        kv_connector="NixlConnector",
        num_kv_heads=8,
    )


def identity(wid: str, role: int, kv_cache_dtype: str | None, accelerator: str = "h100-sxm") -> pb.WorkerIdentity:
    ident = pb.WorkerIdentity(
        id=wid, address=f"{wid}:1", model="m", role=role, accelerator=accelerator, kv_block_size=16, max_num_seqs=256
    )
    if kv_cache_dtype is not None:
        ident.kv_compat.CopyFrom(descriptor(kv_cache_dtype))
    return ident


def servicer(*identities: pb.WorkerIdentity, profile: str = "tessera_disagg") -> SchedulerServicer:
    # every worker equally fast: what tells them apart is their KV format
    view = ClusterView(speed_of=lambda ident: SPEED)
    for ident in identities:
        view.registered(ident)
    pipe = load_profile(profile, seed=0)
    return SchedulerServicer(view, {pipe.name: pipe}, pipe.name)


def place(s: SchedulerServicer, i: int) -> scheduler_pb2.PlaceResponse:
    return s._place(scheduler_pb2.PlaceRequest(request_id=f"r{i}", model="m", prompt_tokens=4000, max_tokens=64), None)


def test_the_servicer_pairs_only_the_prefill_worker_whose_kv_the_decode_worker_reads():
    s = servicer(
        identity("dec", pb.ROLE_DECODE, "float8_e4m3fn"),
        identity("mi300", pb.ROLE_PREFILL, "float8_e4m3fnuz", accelerator="mi300x"),
        identity("old", pb.ROLE_PREFILL, None),  # a worker that publishes no descriptor
        identity("ok", pb.ROLE_PREFILL, "float8_e4m3fn"),
    )
    chosen = {place(s, i).prefill.worker_id for i in range(12)}
    assert chosen == {"ok"}


def test_with_no_compatible_prefill_worker_the_decode_worker_prefills_itself():
    s = servicer(
        identity("dec", pb.ROLE_DECODE, "float8_e4m3fn"),
        identity("mi300", pb.ROLE_PREFILL, "float8_e4m3fnuz", accelerator="mi300x"),
    )
    r = place(s, 0)
    assert r.outcome == scheduler_pb2.PLACE_OUTCOME_PLACED and r.worker.worker_id == "dec"
    assert not r.prefill.worker_id
