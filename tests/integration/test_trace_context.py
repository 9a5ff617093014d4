"""A caller's W3C trace context is joined, and the request's span reads as an OpenTelemetry GenAI span.

Real etcd, scheduler, router and two simulated workers export to an OTLP collector. A request sent
with a `traceparent` (HTTP header, or gRPC metadata) must come back as router, scheduler and worker
spans on the caller's trace, the router's root span a child of the caller's span and carrying
gen_ai.usage.* equal to the usage the client was given. A malformed `traceparent` is ignored (the
request gets a trace of its own), never an error. A worker killed mid-stream shows as a
`tessera.resume` event naming both workers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import uuid

import grpc
import httpx
import pytest

from tessera.v1 import common_pb2, router_pb2
from tests.support.harness import wait_for
from tests.support.models import TINY
from tests.support.otlp_collector import OtlpCollector, ReceivedSpan
from tests.support.sim_cluster import SimCluster

SERVICES = {"tessera-router", "tessera-scheduler", "tessera-worker"}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    collector = OtlpCollector().start()
    c = SimCluster(
        tmp_path_factory.mktemp("trace-context"),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"},
    )
    c.collector = collector
    try:
        c.wait_ready()
        wait_for(  # the router too: its HTTP and gRPC ports open together
            lambda: httpx.get(c.base_url + "/health", timeout=2).json()["models"].get(TINY) == len(c.workers),
            30,
            what="the router to see both workers",
        )
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()
        collector.stop()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _root(c: SimCluster, request_id: str) -> ReceivedSpan | None:
    """The router's span for a request (ended: exported once the response is complete)."""
    return next(
        (
            s
            for s in c.collector.snapshot()
            if s.service == "tessera-router" and s.attributes.get("tessera.request_id") == request_id
        ),
        None,
    )


def _whole_trace(c: SimCluster, request_id: str) -> tuple[ReceivedSpan, dict[str, ReceivedSpan]]:
    def found():
        root = _root(c, request_id)
        if root is None:
            return None
        same = [s for s in c.collector.snapshot() if s.trace_id == root.trace_id]
        return (root, {s.name: s for s in same}) if SERVICES <= {s.service for s in same} else None

    return wait_for(found, 15, what=f"spans of {request_id} from router, scheduler and worker")


def _assert_joined(root: ReceivedSpan, spans: dict[str, ReceivedSpan], trace_id: str, parent: str) -> None:
    assert (root.trace_id, root.parent_span_id) == (trace_id, parent)  # a child of the caller's span
    stream = spans["router.worker_stream"]
    assert stream.parent_span_id == root.span_id
    assert spans["worker.generate"].parent_span_id == stream.span_id
    assert spans["scheduler.place"].parent_span_id == spans["router.place"].span_id
    assert spans["router.place"].parent_span_id == root.span_id


def _assert_usage(root: ReceivedSpan, usage: dict, finish: str, response_id: str, operation: str) -> None:
    a = root.attributes
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == [finish]
    assert a["gen_ai.response.id"] == response_id
    assert a["gen_ai.operation.name"] == operation
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "tessera"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == TINY


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_http_request_joins_the_callers_trace(traced, stream):
    traceparent, trace_id, parent = _traceparent()
    rid = uuid.uuid4().hex
    body = {
        "model": TINY,
        "messages": [{"role": "user", "content": "trace me"}],
        "max_tokens": 7,
        "temperature": 0.7,
        "top_p": 0.9,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(
        traced.base_url + "/v1/chat/completions",
        headers={"traceparent": traceparent, "tracestate": "vendor=opaque", "x-request-id": rid},
        json=body,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    if stream:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        usage, rid_out = chunks[-1]["usage"], chunks[0]["id"]
        finish = next(
            c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
        )
    else:
        out = r.json()
        usage, rid_out, finish = out["usage"], out["id"], out["choices"][0]["finish_reason"]

    root, spans = _whole_trace(traced, rid)
    assert root.name == "router.v1.chat.completions"
    _assert_joined(root, spans, trace_id, parent)
    _assert_usage(root, usage, finish, rid_out, "chat")
    a = root.attributes
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"], a["gen_ai.request.top_p"]) == (7, 0.7, 0.9)
    assert a.get("gen_ai.request.stream", False) is stream
    assert a["server.port"] == traced.http_port and a["http.response.status_code"] == 200
    worker = spans["router.worker_stream"].attributes
    assert worker["server.port"] > 0 and worker["tessera.worker_id"] in traced.workers


def test_a_grpc_request_joins_the_callers_trace(traced):
    traceparent, trace_id, parent = _traceparent()
    rid = uuid.uuid4().hex
    messages = list(
        traced.stub.Generate(
            router_pb2.RouterGenerateRequest(
                model=TINY, text="trace me", request_id=rid, sampling=common_pb2.SamplingParams(max_tokens=5)
            ),
            metadata=(("traceparent", traceparent),),
            timeout=60,
        )
    )
    last = messages[-1]
    usage = {"prompt_tokens": last.usage.prompt_tokens, "completion_tokens": last.usage.completion_tokens}
    finish = common_pb2.FinishReason.Name(last.finish_reason).removeprefix("FINISH_REASON_").lower()

    root, spans = _whole_trace(traced, rid)
    assert root.name == "router.grpc_generate"
    _assert_joined(root, spans, trace_id, parent)
    _assert_usage(root, usage, finish, rid, "text_completion")
    assert root.attributes["gen_ai.request.max_tokens"] == 5


_, _T, _S = _traceparent()
MALFORMED = {
    "garbage": "not-a-traceparent",
    "zero trace id": f"00-{'0' * 32}-{_S}-01",
    "uppercase hex": f"00-{_T.upper()}-{_S}-01",
    "version 00 with more fields": f"00-{_T}-{_S}-01-extra",
    "version ff": f"ff-{_T}-{_S}-01",
    "64 KB": f"00-{_T}-{_S}-01" + "x" * 65536,
}


def test_a_malformed_traceparent_is_ignored_over_http_and_grpc(traced):
    for what, value in MALFORMED.items():
        rid = uuid.uuid4().hex
        r = httpx.post(
            traced.base_url + "/v1/completions",
            headers={"traceparent": value, "x-request-id": rid},
            json={"model": TINY, "prompt": "trace me", "max_tokens": 2},
            timeout=60,
        )
        assert r.status_code == 200, (what, r.status_code, r.text)
        root = wait_for(lambda rid=rid: _root(traced, rid), 15, what=f"the span of the request with {what}")
        assert root.parent_span_id == "" and root.trace_id != _T, what  # a trace of its own
    rid = uuid.uuid4().hex
    out = list(
        traced.stub.Generate(
            router_pb2.RouterGenerateRequest(
                model=TINY, text="trace me", request_id=rid, sampling=common_pb2.SamplingParams(max_tokens=2)
            ),
            metadata=(("traceparent", MALFORMED["zero trace id"]), ("tracestate", "=,=,")),
            timeout=60,
        )
    )
    assert out[-1].usage.completion_tokens == 2
    root = wait_for(lambda: _root(traced, rid), 15, what="the span of the gRPC request")
    assert root.parent_span_id == ""


def test_a_worker_killed_mid_stream_shows_as_a_resume_event(traced):
    """Runs last: it kills one of the two workers."""
    traceparent, trace_id, _ = _traceparent()
    rid = uuid.uuid4().hex
    tokens, victim = 0, ""
    try:
        for msg in traced.stub.Generate(
            router_pb2.RouterGenerateRequest(
                model=TINY,
                text="hello " * 50,
                request_id=rid,
                sampling=common_pb2.SamplingParams(max_tokens=600, ignore_eos=True),
            ),
            metadata=(("traceparent", traceparent),),
            timeout=120,
        ):
            tokens += len(msg.delta.token_ids)
            if not victim and tokens >= 50:
                victim = msg.worker_id
                os.kill(traced.workers[victim].proc.pid, signal.SIGKILL)
    except grpc.RpcError as exc:
        pytest.fail(f"the stream failed: {exc}\n{traced.logs()}")
    assert tokens == 600 and victim
    other = next(w for w in traced.workers if w != victim)

    root = wait_for(lambda: _root(traced, rid), 15, what="the resumed request's span")
    assert root.trace_id == trace_id and root.attributes["gen_ai.usage.output_tokens"] == 600
    [event] = [e for e in root.events if e.name in ("tessera.resume", "tessera.retry")]
    assert event.name == "tessera.resume"
    a = event.attributes
    assert (a["tessera.failed_worker_id"], a["tessera.worker_id"]) == (victim, other)
    assert 50 <= a["tessera.resumed_tokens"] < 600 and a["tessera.attempt"] == 2
    assert a["tessera.reason"].startswith(("UNAVAILABLE", "CANCELLED", "stream ended")), a["tessera.reason"]
    attempts = sorted(
        (s for s in traced.collector.snapshot() if s.trace_id == trace_id and s.name == "router.worker_stream"),
        key=lambda s: s.attributes["tessera.attempt"],
    )
    assert [s.attributes["tessera.worker_id"] for s in attempts] == [victim, other]
    assert attempts[0].status_code == 2 and attempts[1].status_code == 0  # the failed attempt is marked
    assert attempts[1].attributes["tessera.resumed_tokens"] == a["tessera.resumed_tokens"]
