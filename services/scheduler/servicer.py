"""The Scheduler gRPC service: Place, ReportLoad, ListWorkers."""

from __future__ import annotations

import logging
import math
import time

import grpc
from opentelemetry import trace

from services.scheduler import metrics
from services.scheduler.kv_ingest import KVStreamState, apply_batch
from services.scheduler.view import ClusterView
from services.scheduler.worker_speed import kv_transfer_seconds
from tessera.placement.decision import place_request
from tessera.placement.pairing import PairDecision
from tessera.placement.pipeline import Pipeline
from tessera.placement.prefix_index import PrefixIndex
from tessera.placement.snapshot import RequestInfo
from tessera.runtime.telemetry.log_context import request_context
from tessera.runtime.telemetry.tracing import incoming_context, tracer
from tessera.v1 import common_pb2 as pb
from tessera.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger("tessera.scheduler")


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(
        self, view: ClusterView, profiles: dict[str, Pipeline], default_profile: str, index: PrefixIndex | None = None
    ) -> None:
        self.view = view
        self.profiles = profiles
        self.default_profile = default_profile
        self.index = index if index is not None else PrefixIndex()
        self._tracer = tracer("tessera.scheduler")

    async def Place(self, request: scheduler_pb2.PlaceRequest, context: grpc.aio.ServicerContext):
        response = self._place(request, incoming_context(context.invocation_metadata()))
        if response.outcome == scheduler_pb2.PLACE_OUTCOME_UNKNOWN_PROFILE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, response.reason)
        return response

    async def PlaceStream(self, request_iterator, context: grpc.aio.ServicerContext):
        async for request in request_iterator:
            yield self._place(request, incoming_context(request.trace_context.items()))

    def _place(self, request: scheduler_pb2.PlaceRequest, parent) -> scheduler_pb2.PlaceResponse:
        """One placement decision, its outcome stated in the response."""
        with (
            self._tracer.start_as_current_span("scheduler.place", context=parent, kind=trace.SpanKind.SERVER) as span,
            request_context(request.request_id),  # on its log lines (TESSERA_LOG_FORMAT=json)
        ):
            pipeline = self.profiles.get(request.profile or self.default_profile)
            if pipeline is None:
                return scheduler_pb2.PlaceResponse(
                    request_id=request.request_id,
                    outcome=scheduler_pb2.PLACE_OUTCOME_UNKNOWN_PROFILE,
                    reason=f"unknown profile {request.profile!r}; loaded: {', '.join(self.profiles)}",
                )
            started = time.perf_counter()
            req = RequestInfo(
                request_id=request.request_id,
                model=request.model,
                prompt_tokens=request.prompt_tokens,
                max_tokens=request.max_tokens,
                exclude=frozenset(request.exclude_worker_ids),
                session_id=request.session_id,
                priority=request.priority,
                block_hashes=tuple(request.prompt_block_hashes),
                # Not a finite positive number: no objective. A NaN deadline would fail every
                # worker's saturation check and leave the request "saturated" forever.
                ttft_slo_s=request.ttft_slo_s if math.isfinite(request.ttft_slo_s) and request.ttft_slo_s > 0 else 0.0,
                over_fair_share=request.over_fair_share,
            )
            choice = self._choose(pipeline, req)
            metrics.PLACEMENT_SECONDS.observe(time.perf_counter() - started)
            response = scheduler_pb2.PlaceResponse(
                request_id=request.request_id, profile=pipeline.name, candidates=choice.candidates
            )
            if choice.decode is None:
                metrics.PLACEMENTS.labels(pipeline.name, "saturated" if choice.saturated else "none").inc()
                response.reason = choice.reason
                response.outcome = (
                    scheduler_pb2.PLACE_OUTCOME_SATURATED if choice.saturated else scheduler_pb2.PLACE_OUTCOME_NO_WORKER
                )
                span.set_attribute("tessera.placed", False)
                return response
            worker, prefill = choice.decode, choice.prefill
            if prefill is not None:
                self.view.placed(prefill.id, max(0, request.prompt_tokens - choice.prefix_hit_tokens))
                self.view.placed(worker.id, 0)
                response.prefill.worker_id = prefill.id
                response.prefill.address = prefill.address
                response.prefill.role = pb.ROLE_PREFILL
                span.set_attribute("tessera.prefill_worker_id", prefill.id)
            else:
                self.view.placed(worker.id, max(0, request.prompt_tokens - choice.prefix_hit_tokens))
            metrics.PLACEMENTS.labels(pipeline.name, "disaggregated" if prefill else "placed").inc()
            response.outcome = scheduler_pb2.PLACE_OUTCOME_PLACED
            response.worker.worker_id = worker.id
            response.worker.address = worker.address
            response.worker.score = choice.score
            rank = self.view.choose_rank(worker.id)
            if rank is not None:
                response.worker.data_parallel_rank = rank
            response.expected_cached_tokens = choice.prefix_hit_tokens
            metrics.EXPECTED_HIT_TOKENS.inc(choice.prefix_hit_tokens)
            span.set_attribute("tessera.worker_id", worker.id)
            span.set_attribute("tessera.expected_cached_tokens", choice.prefix_hit_tokens)
            return response

    def _choose(self, pipeline: Pipeline, req: RequestInfo) -> PairDecision:
        """The profile's decision (tessera.placement.decision, as the simulator makes it): one worker,
        or a prefill/decode pair."""
        workers = self.view.snapshots(req.model)
        transfer_s = kv_transfer_seconds(self.view.model_path(req.model))
        return place_request(req, workers, pipeline, transfer_s, time.monotonic(), self.index)

    async def ReportLoad(self, request_iterator, context: grpc.aio.ServicerContext):
        worker_id = None
        kv_state = KVStreamState()
        try:
            async for report in request_iterator:
                body = report.WhichOneof("body")
                if body == "hello":
                    if worker_id is None:
                        worker_id = report.hello.id
                        self.view.stream_opened(report.hello)
                        log.info("report stream from %s (%s) opened", worker_id, report.hello.address)
                elif body == "load" and worker_id is not None:
                    metrics.REPORTS.inc()
                    self.view.load_reported(worker_id, report.load)
                elif body == "kv_events" and worker_id is not None:
                    metrics.KV_EVENTS.inc(len(report.kv_events.events))
                    apply_batch(self.index, worker_id, report.kv_events, kv_state)
        except grpc.aio.AioRpcError:
            pass
        finally:
            if worker_id is not None:
                self.view.stream_closed(worker_id)
                log.info("report stream from %s closed", worker_id)
        return scheduler_pb2.ReportAck()

    async def ListWorkers(self, request: scheduler_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext):
        out = scheduler_pb2.ListWorkersResponse()
        for entry in list(self.view.workers.values()):
            if request.model and entry.identity.model != request.model:
                continue
            out.workers.add(
                identity=entry.identity,
                load=entry.load,
                healthy=entry.healthy,
                registered=entry.registered,
                stream_connected=entry.streams > 0,
                last_report_unix_ms=entry.last_report_unix_ms,
            )
        return out
