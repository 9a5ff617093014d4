"""Names of the metrics one service exports and another reads: one place, so they cannot drift.

The autoscaler plans from what the routers export (services/autoscaler/load_observer.py
scrapes these), and dashboards and alerts use the same names. Histograms are exported with
the ``_bucket``, ``_sum`` and ``_count`` suffixes Prometheus adds; ``BUCKET`` names the first.
"""

from __future__ import annotations

# The router: what clients experience (names follow vLLM's where the meaning is the same).
ROUTER_REQUESTS = "tessera_router_requests_total"
ROUTER_RECEIVED = "tessera_router_requests_received_total"
ROUTER_HELD = "tessera_router_held_requests"
PROMPT_TOKENS = "tessera_prompt_tokens_total"
GENERATION_TOKENS = "tessera_generation_tokens_total"
TIME_TO_FIRST_TOKEN = "tessera_time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "tessera_inter_token_latency_seconds"
E2E_REQUEST_LATENCY = "tessera_e2e_request_latency_seconds"
TIME_PER_OUTPUT_TOKEN = "tessera_request_time_per_output_token_seconds"
TTFT_SLO_REQUESTS = "tessera_router_ttft_slo_requests_total"
REQUEST_PROMPT_TOKENS = "tessera_request_prompt_tokens"
REQUEST_GENERATION_TOKENS = "tessera_request_generation_tokens"  # as vLLM's vllm:request_generation_tokens


def bucket(histogram: str) -> str:
    """The series name of a histogram's cumulative buckets."""
    return histogram + "_bucket"
