"""The worker's Prometheus metrics (vLLM's own ``vllm:`` metrics are served alongside).

Names follow vLLM's (``vllm:num_requests_running`` is ``tessera_worker_num_requests_running``).
Labels common to every series (worker, model, role, accelerator, vendor) are added at exposition
(``start_metrics_server(labels=...)``), not declared here.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tessera.runtime.telemetry.metrics import LATENCY_BUCKETS

INFO = Gauge(
    "tessera_worker_info",
    "1 per worker: its engine, devices and tensor parallelism (the fleet, counted by accelerator and vendor)",
    ["engine", "accelerator_count", "tensor_parallel"],
)
REQUESTS = Counter("tessera_worker_requests_total", "Requests finished, by finish reason", ["finish_reason"])
RUNNING = Gauge("tessera_worker_num_requests_running", "Requests in the engine's running batch")
WAITING = Gauge("tessera_worker_num_requests_waiting", "Requests queued in the engine")
KV_USAGE = Gauge("tessera_worker_kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1)")
TOKENS_IN_FLIGHT = Gauge("tessera_worker_tokens_in_flight", "Prompt plus generated tokens of unfinished requests")
PROMPT_TOKENS = Counter("tessera_worker_prompt_tokens_total", "Prompt tokens received")
CACHED_PROMPT_TOKENS = Counter(
    "tessera_worker_cached_prompt_tokens_total", "Prompt tokens served from the prefix cache"
)
GENERATION_TOKENS = Counter("tessera_worker_generation_tokens_total", "Tokens generated")
TTFT = Histogram(
    "tessera_worker_time_to_first_token_seconds", "Engine-side time to first token", buckets=LATENCY_BUCKETS
)
E2E = Histogram("tessera_worker_e2e_request_latency_seconds", "Engine-side request latency", buckets=LATENCY_BUCKETS)
STEP_TIME_SCALE = Gauge(
    "tessera_worker_step_time_scale",
    "Measured / predicted step time learnt from the requests served, by phase (0: not learnt yet)",
    ["phase"],
)
STALLED = Gauge(
    "tessera_worker_engine_stalled", "1 while the engine holds requests but has produced no token for the stall timeout"
)
KV_PULLS_FAILED = Counter(
    "tessera_worker_kv_pulls_failed_total",
    "KV caches this (decode) worker could not pull from a prefill worker: a refused handshake or a failed "
    "transfer; each prompt was recomputed here",
)
