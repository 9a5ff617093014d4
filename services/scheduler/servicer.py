"""The Scheduler gRPC service: Place, ReportLoad, ListWorkers."""

from __future__ import annotations

import logging
import time

import grpc
from opentelemetry import trace

from tessera.telemetry.tracing import incoming_context, tracer
from tessera.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.scheduler import metrics
from services.scheduler.policy.pipeline import Pipeline
from services.scheduler.policy.snapshot import RequestInfo
from services.scheduler.kv_ingest import KVStreamState, apply_batch
from services.scheduler.prefix_index import PrefixIndex
from services.scheduler.view import ClusterView

log = logging.getLogger("tessera.scheduler")


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, view: ClusterView, profiles: dict[str, Pipeline], default_profile: str,
                 index: PrefixIndex | None = None) -> None:
        self.view = view
        self.profiles = profiles
        self.default_profile = default_profile
        self.index = index if index is not None else PrefixIndex()
        self._tracer = tracer("tessera.scheduler")

    async def Place(self, request: scheduler_pb2.PlaceRequest, context: grpc.aio.ServicerContext):
        response = self._place(request, incoming_context(context.invocation_metadata()))
        if response is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self._unknown_profile(request))
        return response

    async def PlaceStream(self, request_iterator, context: grpc.aio.ServicerContext):
        async for request in request_iterator:
            response = self._place(request, incoming_context(request.trace_context.items()))
            if response is None:
                response = scheduler_pb2.PlaceResponse(request_id=request.request_id,
                                                       reason=self._unknown_profile(request))
            yield response

    def _unknown_profile(self, request: scheduler_pb2.PlaceRequest) -> str:
        return f"unknown profile {request.profile!r}; loaded: {', '.join(self.profiles)}"

    def _place(self, request: scheduler_pb2.PlaceRequest, parent) -> scheduler_pb2.PlaceResponse | None:
        """One placement decision; None when the request names an unknown profile."""
        with self._tracer.start_as_current_span("scheduler.place", context=parent, kind=trace.SpanKind.SERVER) as span:
            pipeline = self.profiles.get(request.profile or self.default_profile)
            if pipeline is None:
                return None
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
                ttft_slo_s=request.ttft_slo_s,
            )
            decision = pipeline.place(req, self.view.snapshots(request.model), time.monotonic(), self.index)
            metrics.PLACEMENT_SECONDS.observe(time.perf_counter() - started)
            response = scheduler_pb2.PlaceResponse(request_id=request.request_id, profile=pipeline.name,
                                                   candidates=decision.candidates)
            if decision.worker is None:
                metrics.PLACEMENTS.labels(pipeline.name, "saturated" if decision.saturated else "none").inc()
                response.reason = decision.reason
                response.saturated = decision.saturated
                span.set_attribute("tessera.placed", False)
                return response
            worker = decision.worker
            self.view.placed(worker.id, max(0, request.prompt_tokens - decision.prefix_hit_tokens))
            metrics.PLACEMENTS.labels(pipeline.name, "placed").inc()
            response.worker.worker_id = worker.id
            response.worker.address = worker.address
            response.worker.score = decision.scores.get(worker.id, 0.0)
            response.expected_cached_tokens = decision.prefix_hit_tokens
            metrics.EXPECTED_HIT_TOKENS.inc(decision.prefix_hit_tokens)
            span.set_attribute("tessera.worker_id", worker.id)
            span.set_attribute("tessera.expected_cached_tokens", decision.prefix_hit_tokens)
            return response

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
