"""The router's Prometheus metrics: what clients experience (names follow vLLM's where they mean the same)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tessera.runtime.telemetry import metric_names as names
from tessera.runtime.telemetry.metrics import LATENCY_BUCKETS

REQUESTS = Counter(
    names.ROUTER_REQUESTS, "Requests answered, by model, endpoint and HTTP status", ["model", "endpoint", "status"]
)
RECEIVED = Counter(
    names.ROUTER_RECEIVED,
    "Valid requests as they arrive, by model: the load the autoscaler forecasts (answers lag "
    "arrivals exactly when the fleet is short)",
    ["model"],
)
IN_FLIGHT = Gauge("tessera_router_requests_in_flight", "Requests being served")
# Latencies by model and placement profile ("default": the one the scheduler picks), as vLLM's
# vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds,
# vllm:request_time_per_output_token_seconds and vllm:e2e_request_latency_seconds, seen by the client.
TTFT = Histogram(
    names.TIME_TO_FIRST_TOKEN,
    "Time from request arrival to the first token",
    ["model", "profile"],
    buckets=LATENCY_BUCKETS,
)
ITL = Histogram(
    names.INTER_TOKEN_LATENCY,
    "Time between consecutive streamed deltas",
    ["model", "profile"],
    buckets=LATENCY_BUCKETS,
)
TPOT = Histogram(
    names.TIME_PER_OUTPUT_TOKEN,
    "Per request: time from the first token to the last over the tokens after the first (TPOT)",
    ["model", "profile"],
    buckets=LATENCY_BUCKETS,
)
E2E = Histogram(
    names.E2E_REQUEST_LATENCY,
    "Time from request arrival to its last token",
    ["model", "profile"],
    buckets=LATENCY_BUCKETS,
)
TTFT_SLO = Counter(
    names.TTFT_SLO_REQUESTS,
    "Requests with a time-to-first-token objective (x-slo-ttft-ms or --ttft-slo-ms) that got their first "
    "token, by whether it came within the objective: SLO attainment and its error-budget burn",
    ["model", "profile", "met"],
)
PROMPT_TOKENS = Counter(names.PROMPT_TOKENS, "Prompt tokens of served requests", ["model"])
# Powers of 2^(1/4) from 16 to 2^17 tokens: the autoscaler reads the p90 and p99 prompt length from it
# (a long prompt alone decides whether an instance meets a p99 TTFT target), to within a bucket (19%).
PROMPT_LENGTH_BUCKETS = tuple(round(16 * 2 ** (i / 4)) for i in range(53))
PROMPT_LENGTH = Histogram(
    names.REQUEST_PROMPT_TOKENS,
    "Prompt length of requests as they arrive (tokens)",
    ["model"],
    buckets=PROMPT_LENGTH_BUCKETS,
)
# Every length up to 8 tokens, then powers of 2^(1/4) to 2^15: the autoscaler reads the p90 answer
# length from it, and the answers' spread (the short ones most) sets the p99 TPOT of a mix
# (tessera/planning/load.py, LoadMix.output_lengths).
ANSWER_LENGTH_BUCKETS = tuple(sorted({round(2 ** (i / 4)) for i in range(61)}))
ANSWER_LENGTH = Histogram(
    names.REQUEST_GENERATION_TOKENS,
    "Tokens generated per answered request",
    ["model"],
    buckets=ANSWER_LENGTH_BUCKETS,
)
GENERATION_TOKENS = Counter(names.GENERATION_TOKENS, "Tokens generated for clients", ["model"])
RETRIES = Counter("tessera_router_retries_total", "Requests moved to another worker after a failure", ["when"])
TOKENIZE_SECONDS = Histogram(
    "tessera_router_tokenize_seconds",
    "Time to render and tokenize a prompt",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
)
QUEUE_DEPTH = Gauge(
    "tessera_router_queue_depth", "Requests waiting for a saturated model (admission control)", ["model"]
)
QUEUE_WAIT = Histogram(
    "tessera_router_queue_wait_seconds",
    "Time admitted requests waited in the queue",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
REJECTED = Counter(
    "tessera_router_rejected_total", "Requests refused with 429 by admission control", ["model", "reason"]
)
PLACE_SECONDS = Histogram(
    "tessera_router_place_seconds",
    "Round trip of the scheduler's Place call",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0),
)
PREFILLS = Counter(
    "tessera_router_remote_prefills_total",
    "Disaggregated requests' prefill step: 'transferred' (the decode worker got the KV) or "
    "'fallback' (the prefill worker failed; the decode worker prefilled itself)",
    ["outcome"],
)
for _outcome in ("transferred", "fallback"):
    PREFILLS.labels(_outcome)  # exported at 0 from the start: "none yet" is a value, not a missing series
PREFILLS_BY_WORKER = Counter(
    "tessera_router_remote_prefills_by_worker_total",
    "The same prefill steps by the prefill worker that ran them (which prefill workers the scheduler pairs)",
    ["prefill_worker", "outcome"],
)
PREFILL_SECONDS = Histogram(
    "tessera_router_remote_prefill_seconds",
    "Time of the prefill step of disaggregated requests",
    buckets=LATENCY_BUCKETS,
)
HELD = Gauge(
    names.ROUTER_HELD,
    "Requests waiting for a model's first worker (scale from zero): demand the autoscaler plans for",
    ["model"],
)
# Keys, tenants and limits (services/router/auth.py); tenant "" is a caller without a valid key.
TENANT_REFUSED = Counter(
    "tessera_router_tenant_refused_total",
    "Requests refused at the gate, by tenant and reason (unauthenticated, forbidden, rate_limited, "
    "limiter_unavailable)",
    ["tenant", "reason"],
)
TENANT_CHARGED_TOKENS = Counter(
    "tessera_router_tenant_charged_tokens_total",
    "Tokens charged to tenants with limits at admission (prompt + max_tokens)",
    ["tenant"],
)


ADMISSION_REASONS = ("queue_full", "deadline", "gave_up")


def model_seen(model: str) -> None:
    """Export a model's queue and refusal series at 0 as soon as it is served.

    A series that appears only with its first refusal makes ``rate()`` blind to that refusal
    and leaves dashboards and alerts with "no data" when the truth is "none".
    """
    QUEUE_DEPTH.labels(model)
    QUEUE_WAIT.labels(model)
    HELD.labels(model)
    RECEIVED.labels(model)
    for reason in ADMISSION_REASONS:
        REJECTED.labels(model, reason)
