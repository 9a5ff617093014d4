"""The prefill half of a disaggregated request (prefill on one worker, decode on another).

The router asks the prefill worker for one token with vLLM's
``do_remote_decode`` flag: vLLM computes the prompt's KV cache, keeps it for a
decode worker to pull, and answers with the connector's parameters (where the
blocks are). The decode worker then gets the whole request with those
parameters and pulls the KV instead of recomputing it; the client sees one
stream from the decode worker. This is the flow of vLLM's and llm-d's
disaggregation proxies, driven here by the scheduler's choice of the pair.

A prefill that fails for any reason is not the client's problem: the decode
worker prefills the prompt itself (the request is slower, nothing is lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc

from services.router import metrics
from tessera.v1 import common_pb2 as pb
from tessera.v1 import scheduler_pb2, worker_pb2, worker_pb2_grpc

log = logging.getLogger("tessera.router")

# Long enough for a long prompt on a busy prefill worker, short enough that a
# hung one does not hold the request for long: the decode side can prefill too.
PREFILL_TIMEOUT_S = 60.0
REMOTE_DECODE = {"do_remote_decode": True, "do_remote_prefill": False}


def prefill_request(
    request_id: str, prompt_ids: list[int], resumed: list[int], sampling: pb.SamplingParams, priority: int
) -> worker_pb2.GenerateRequest:
    """The prefill worker's request: the same prompt, one token, and the connector's remote-decode flag."""
    one = pb.SamplingParams()
    one.CopyFrom(sampling)
    one.max_tokens = len(resumed) + 1  # the worker subtracts what was already produced
    one.ClearField("min_tokens")
    one.ClearField("stop")
    request = worker_pb2.GenerateRequest(
        request_id=request_id, prompt_token_ids=prompt_ids, sampling=one, priority=priority, resume_token_ids=resumed
    )
    request.kv_transfer.params.update(REMOTE_DECODE)
    return request


async def remote_prefill(
    stub: worker_pb2_grpc.WorkerStub,
    placement: scheduler_pb2.Placement,
    request: worker_pb2.GenerateRequest,
    metadata: Sequence[tuple[str, str]] = (),
) -> pb.KVTransferParams | None:
    """Run the prefill step; the parameters the decode worker needs, or None to prefill locally."""
    started = time.perf_counter()
    call = stub.Generate(request, metadata=metadata, timeout=PREFILL_TIMEOUT_S)
    failure = ""
    try:
        async for resp in call:
            if resp.finish_reason:
                if resp.HasField("kv_transfer") and resp.kv_transfer.params.fields:
                    metrics.PREFILLS.labels("transferred").inc()
                    metrics.PREFILLS_BY_WORKER.labels(placement.worker_id, "transferred").inc()
                    metrics.PREFILL_SECONDS.observe(time.perf_counter() - started)
                    return resp.kv_transfer
                failure = "the prefill worker returned no KV-transfer parameters (is its KV connector on?)"
                break
        else:
            failure = "stream ended without a finish"
    except grpc.aio.AioRpcError as exc:
        failure = f"{exc.code().name}: {exc.details()}"
    finally:
        if not call.done():
            call.cancel()
    metrics.PREFILLS.labels("fallback").inc()
    metrics.PREFILLS_BY_WORKER.labels(placement.worker_id, "fallback").inc()
    log.warning(
        "request %s: prefill on %s failed (%s); the decode worker prefills it",
        request.request_id,
        placement.worker_id,
        failure,
    )
    return None
