"""Writes the Grafana dashboards in grafana/ from the panel list below (`--check`: fail if they differ).

The panels are data, kept here so every query is written once: Grafana reads the JSON,
tests/integration/test_observability.py runs each query against a live cluster, and
render_dashboard.py plots them. A legend that names ``{{accelerator}}`` marks a panel as per
worker: the test requires those series to carry ``accelerator`` and ``vendor``.

    python deploy/observability/build_dashboards.py          # rewrite grafana/*.json
    python deploy/observability/build_dashboards.py --check  # what the tests run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "grafana"

M = '{model=~"$model"}'
MP = '{model=~"$model", profile=~"$profile"}'
RATE = "$__rate_interval"
HW = "{{accelerator}} ({{vendor}})"  # per-worker legend: the test holds these panels to their labels


def quantiles(metric: str, by: str, labels: str = MP, legend: str = "{{model}} {{profile}}") -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{labels}[{RATE}])))",
            f"p{int(q * 100)} {legend}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


# (row, [(title, unit, description, [(query, legend), ...]), ...])
ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    (
        "Fleet by accelerator and vendor",
        [
            (
                "Workers by accelerator",
                "short",
                "Workers serving, counted from each worker's own tessera_worker_info.",
                [(f"count by (accelerator, vendor, model) (tessera_worker_info{M})", HW + " {{model}}")],
            ),
            (
                "Healthy workers (scheduler's view)",
                "short",
                "What placement can use: registered, reporting, not stalled or draining.",
                [
                    (
                        "sum by (accelerator, vendor, role) "
                        '(tessera_scheduler_workers{healthy="true", model=~"$model"})',
                        HW + " {{role}}",
                    )
                ],
            ),
            (
                "Output tokens/s by accelerator",
                "short",
                "Tokens generated per second, per worker hardware.",
                [
                    (
                        f"sum by (accelerator, vendor) (rate(tessera_worker_generation_tokens_total{M}[{RATE}]))",
                        HW,
                    )
                ],
            ),
            (
                "Requests running per worker",
                "short",
                "The engine's running batch on each worker.",
                [(f"tessera_worker_num_requests_running{M}", "{{worker}} " + HW)],
            ),
        ],
    ),
    (
        "Latency per model and profile (what clients see at the router)",
        [
            (
                "Time to first token",
                "s",
                "tessera_time_to_first_token_seconds (vLLM's vllm:time_to_first_token_seconds, at the router).",
                quantiles("tessera_time_to_first_token_seconds", "model, profile"),
            ),
            (
                "Time per output token (TPOT)",
                "s",
                "Per request: (last token - first token) / (tokens - 1), "
                "as vllm:request_time_per_output_token_seconds.",
                quantiles("tessera_request_time_per_output_token_seconds", "model, profile"),
            ),
            (
                "Inter-token latency (ITL)",
                "s",
                "Gap between consecutive streamed deltas, as vllm:inter_token_latency_seconds.",
                quantiles("tessera_inter_token_latency_seconds", "model, profile"),
            ),
            (
                "Engine time to first token by accelerator",
                "s",
                "Measured inside the workers: the hardware's share of TTFT (no router, no queue at the router).",
                quantiles("tessera_worker_time_to_first_token_seconds", "accelerator, vendor", M, HW),
            ),
        ],
    ),
    (
        "Queue, admissions and refusals",
        [
            (
                "Router queue and held requests",
                "short",
                "Waiting for a saturated model (admission queue), and held for a model's first worker.",
                [
                    (f"sum by (model) (tessera_router_queue_depth{M})", "queued {{model}}"),
                    (f"sum by (model) (tessera_router_held_requests{M})", "held {{model}}"),
                ],
            ),
            (
                "Arrivals, admissions from the queue, 429 refusals",
                "reqps",
                "Arrivals per second; requests admitted after waiting; refusals by reason (queue_full, deadline).",
                [
                    (f"sum by (model) (rate(tessera_router_requests_received_total{M}[{RATE}]))", "arrived {{model}}"),
                    (
                        f"sum by (model) (rate(tessera_router_queue_wait_seconds_count{M}[{RATE}]))",
                        "admitted from queue {{model}}",
                    ),
                    (
                        f"sum by (model, reason) (rate(tessera_router_rejected_total{M}[{RATE}]))",
                        "refused {{reason}} {{model}}",
                    ),
                ],
            ),
            (
                "Answers by status",
                "reqps",
                "Every answer by HTTP status (gRPC calls as their code): "
                "429 saturated, 503 no worker, 502 retries spent.",
                [(f"sum by (status) (rate(tessera_router_requests_total{M}[{RATE}]))", "{{status}}")],
            ),
            (
                "Waiting at each worker",
                "short",
                "Requests queued inside each worker's engine, as the scheduler sees them.",
                [(f"tessera_scheduler_worker_num_requests_waiting{M}", "{{worker}} " + HW)],
            ),
        ],
    ),
    (
        "KV cache and prefix hits",
        [
            (
                "KV-cache usage per worker",
                "percentunit",
                "Fraction of KV blocks in use (vllm:kv_cache_usage_perc).",
                [(f"tessera_worker_kv_cache_usage_perc{M}", "{{worker}} " + HW)],
            ),
            (
                "Prefix-cache hit rate by accelerator",
                "percentunit",
                "Prompt tokens served from the prefix cache over prompt tokens received "
                "(vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total).",
                [
                    (
                        f"sum by (accelerator, vendor) (rate(tessera_worker_cached_prompt_tokens_total{M}[{RATE}]))"
                        f" / sum by (accelerator, vendor) (rate(tessera_worker_prompt_tokens_total{M}[{RATE}]))",
                        HW,
                    )
                ],
            ),
            (
                "Cached tokens the scheduler expected",
                "short",
                "Prompt tokens per second the chosen workers were believed to hold (the scheduler's prefix index).",
                [(f"sum (rate(tessera_scheduler_expected_cached_tokens_total[{RATE}]))", "expected cached tokens/s")],
            ),
        ],
    ),
    (
        "Remote prefills and KV transfer",
        [
            (
                "Remote prefills by outcome",
                "reqps",
                "Disaggregated requests: KV transferred to the decode worker, or fallback (decode prefilled itself).",
                [(f"sum by (outcome) (rate(tessera_router_remote_prefills_total[{RATE}]))", "{{outcome}}")],
            ),
            (
                "Remote prefill time",
                "s",
                "Prefill step of disaggregated requests, from placement to the KV ready for the decode worker.",
                [
                    (
                        f"histogram_quantile({q}, "
                        f"sum by (le) (rate(tessera_router_remote_prefill_seconds_bucket[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ],
            ),
            (
                "Prompt tokens by role and accelerator",
                "short",
                "Prompt tokens per second each role takes in: what prefill workers compute is what they transfer.",
                [
                    (
                        f"sum by (role, accelerator, vendor) (rate(tessera_worker_prompt_tokens_total{M}[{RATE}]))",
                        "{{role}} " + HW,
                    )
                ],
            ),
        ],
    ),
    (
        "Autoscaler: plan, cost, SLO",
        [
            (
                "Plan against what runs",
                "short",
                "Instances per group: desired (the plan) and ready (registered in etcd). From the leader only.",
                [
                    (
                        "sum by (group, accelerator, vendor, state) "
                        '(tessera_autoscaler_group_replicas{state=~"desired|ready"})',
                        "{{group}} {{state}} " + HW,
                    )
                ],
            ),
            (
                "Cost per hour",
                "currencyUSD",
                "The plan's and the running fleet's hourly cost at the catalog's device prices.",
                [
                    ("sum by (state) (tessera_autoscaler_cost_per_hour_usd)", "{{state}}"),
                    (
                        'sum by (accelerator, vendor) (tessera_autoscaler_cost_per_hour_usd{state="ready"})',
                        "running " + HW,
                    ),
                ],
            ),
            (
                "TTFT SLO attainment",
                "percentunit",
                "Requests with a TTFT objective (x-slo-ttft-ms or the router's --ttft-slo-ms) whose first token "
                "came in time. The burn-rate alerts read the same counter (objective: 99%).",
                [
                    (
                        "sum by (model, profile) (rate(tessera_router_ttft_slo_requests_total"
                        f'{{met="true", model=~"$model", profile=~"$profile"}}[{RATE}]))'
                        f" / sum by (model, profile) (rate(tessera_router_ttft_slo_requests_total{MP}[{RATE}]))",
                        "{{model}} {{profile}}",
                    )
                ],
            ),
            (
                "etcd reachability",
                "short",
                "Loops (watch, registration, election) per service that cannot reach etcd: 0 when all is well.",
                [("sum by (job) (tessera_etcd_unreachable)", "{{job}}")],
            ),
        ],
    ),
]


def _variable(name: str, query: str) -> dict:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
    }


def dashboard() -> dict:
    panels: list[dict] = []
    y = 0
    pid = 1
    for row_title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        width = 24 // len(row)
        for i, (title, unit, description, queries) in enumerate(row):
            panels.append(
                {
                    "id": pid,
                    "type": "timeseries",
                    "title": title,
                    "description": description,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                    "targets": [
                        {"refId": chr(ord("A") + k), "expr": expr, "legendFormat": legend, "range": True}
                        for k, (expr, legend) in enumerate(queries)
                    ],
                }
            )
            pid += 1
        y += 8
    return {
        "uid": "tessera-overview",
        "title": "Tessera overview",
        "description": "Fleet, latency, admission, KV cache, disaggregation and autoscaling of a Tessera cluster "
        "(deploy/observability/build_dashboards.py writes this file).",
        "tags": ["tessera", "llm", "vllm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0},
                _variable("model", "label_values(tessera_router_requests_received_total, model)"),
                _variable("profile", "label_values(tessera_time_to_first_token_seconds_count, profile)"),
            ]
        },
        "panels": panels,
    }


def rendered() -> dict[Path, str]:
    return {OUT / "tessera-overview.json": json.dumps(dashboard(), indent=2) + "\n"}


def write_or_check(files: dict[Path, str], check: bool, script: str) -> int:
    """Write the generated files, or (check) exit 1 naming those that differ from what ``script`` writes."""
    stale = []
    for path, text in files.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale (run {script}):", *stale, file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a dashboard file differs from this script")
    args = parser.parse_args()
    return write_or_check(rendered(), args.check, "deploy/observability/build_dashboards.py")


if __name__ == "__main__":
    raise SystemExit(main())
