"""Joining a client's trace context, and the GenAI attributes a request's span gets (no processes)."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

from tessera.runtime.telemetry import genai
from tessera.runtime.telemetry.logging import setup_logging
from tessera.runtime.telemetry.tracing import client_context, metadata_values
from tessera.v1 import common_pb2 as pb

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _headers(**values: str):
    return lambda name: [values[name]] if name in values else []


def _parent(ctx) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def test_a_valid_traceparent_and_tracestate_become_the_parent():
    sc = _parent(client_context(_headers(traceparent=f"00-{TRACE}-{SPAN}-01", tracestate="congo=t61rcWkgMzE")))
    assert (f"{sc.trace_id:032x}", f"{sc.span_id:016x}") == (TRACE, SPAN)
    assert sc.is_remote and sc.trace_flags.sampled and sc.trace_state.to_header() == "congo=t61rcWkgMzE"


def test_an_unsampled_caller_stays_unsampled():
    assert not _parent(client_context(_headers(traceparent=f"00-{TRACE}-{SPAN}-00"))).trace_flags.sampled


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01-extra",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01" + " " * 600,
    ],
)
def test_a_malformed_traceparent_leaves_no_parent(value):
    assert not _parent(client_context(_headers(traceparent=value))).is_valid


@pytest.mark.parametrize("tracestate", ["=,=,", "k=v," * 3000], ids=["invalid", "over 8192 characters"])
def test_a_malformed_tracestate_is_dropped_but_the_parent_kept(caplog, tracestate):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("test")  # what every service runs; then pytest's log capture is put back
    root.handlers[:] = handlers
    root.setLevel(level)
    with caplog.at_level(logging.WARNING):
        sc = _parent(client_context(_headers(traceparent=f"00-{TRACE}-{SPAN}-01", tracestate=tracestate)))
    assert sc.is_valid and not sc.trace_state
    assert not caplog.records  # a client's bad header is not this service's problem to log


def test_baggage_from_a_client_is_not_taken():
    ctx = client_context(lambda name: {"baggage": ["tenant=admin"]}.get(name, []))
    assert not _parent(ctx).is_valid and "baggage" not in str(dict(ctx))


def test_grpc_metadata_values_skip_binary_values():
    values = metadata_values([("traceparent", f"00-{TRACE}-{SPAN}-01"), ("x-bin", b"\x00"), ("authorization", "k")])
    assert values("traceparent") == [f"00-{TRACE}-{SPAN}-01"] and values("x-bin") == [] and values("tracestate") == []


def test_request_attributes_hold_only_what_the_request_set():
    sampling = pb.SamplingParams(max_tokens=16, temperature=0.7, top_p=0.9, stop=["\n"])
    assert genai.request_attributes(genai.CHAT, "m", sampling) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "tessera",
        "gen_ai.system": "tessera",
        "gen_ai.request.model": "m",
        "gen_ai.request.max_tokens": 16,
        "gen_ai.request.temperature": 0.7,  # as sent, not float32's 0.699999988
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.stop_sequences": ["\n"],
    }
    assert genai.REQUEST_TEMPERATURE not in genai.request_attributes(genai.CHAT, "m", pb.SamplingParams())
    assert genai.request_attributes(genai.CHAT, "m", pb.SamplingParams(temperature=0))[genai.REQUEST_TEMPERATURE] == 0


def test_a_stream_without_a_finish_reports_error():
    attrs = genai.response_attributes("cmpl-1", "m", None, 10, 3, 0)
    assert attrs[genai.RESPONSE_FINISH_REASONS] == ["error"] and attrs[genai.USAGE_OUTPUT_TOKENS] == 3


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.7:50051", {"server.address": "10.0.0.7", "server.port": 50051}),
        ("[::1]:8000", {"server.address": "::1", "server.port": 8000}),
        ("worker-0.svc:9000", {"server.address": "worker-0.svc", "server.port": 9000}),
        ("unix:/tmp/sock", {}),
        ("nohost", {}),
    ],
)
def test_server_attributes(address, expected):
    assert genai.server_attributes(address) == expected


def test_a_failover_is_a_retry_before_the_first_token_and_a_resume_after():
    assert genai.failover_event("w1", "w2", "UNAVAILABLE", 0, 2)[0] == "tessera.retry"
    name, attrs = genai.failover_event("w1", "w2", "silent", 50, 2)
    assert name == "tessera.resume"
    assert attrs["tessera.failed_worker_id"] == "w1" and attrs["tessera.worker_id"] == "w2"
    assert attrs["tessera.resumed_tokens"] == 50
