"""Workloads for the simulator: public traces and synthetic generators, as plain requests.

Every workload is a list of SimRequest in arrival order. Prompts carry no
text, only lengths and prefix-identifying content ids (see block_hash.py), so
an hour of production traffic fits in memory and a prefix cache still sees
which prompts share what.

- Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`):
  no prefix information, every prompt is unique.
- Mooncake JSONL (`timestamp` ms, `input_length`, `output_length`, `hash_ids`
  one per 512-token block).
- shared prefix: G groups of prompts behind one long system prompt each.
- multi-turn chat: sessions whose next turn arrives a think time after the
  previous answer finished, its prompt being the whole conversation so far.
- diurnal day: a trace's request mix (prompt and answer lengths) arriving as a
  non-homogeneous Poisson process under a daily envelope (`diurnal`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

MOONCAKE_BLOCK_TOKENS = 512
SYNTHETIC_BLOCK_TOKENS = 16


@dataclass
class SimRequest:
    """One request of a workload.

    content_ids: prefix-identifying ids, one per `content_block_tokens`
    tokens of prompt (and output, where the next turn of a session reuses it);
    empty means the prompt shares nothing with any other.
    next_turn: the session's next request; it arrives `think_time_s` after this
    one finishes (its own arrival_s is ignored), which is how chat users behave.
    """

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    content_ids: tuple[int, ...] = ()
    content_block_tokens: int = SYNTHETIC_BLOCK_TOKENS
    session_id: str = ""
    next_turn: SimRequest | None = None
    think_time_s: float = 0.0

    def turns(self) -> int:
        n, r = 1, self
        while r.next_turn is not None:
            n, r = n + 1, r.next_turn
        return n


class WorkloadError(ValueError):
    """A trace file is missing, malformed or empty."""


def _parse_time(text: str) -> float:
    # Azure timestamps carry 7 fractional digits; datetime takes at most 6.
    head, _, frac = text.strip().partition(".")
    base = datetime.strptime(head, "%Y-%m-%d %H:%M:%S").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def azure_csv(path: str | Path) -> list[SimRequest]:
    """The Azure LLM inference trace (2023 code or conversation), arrival times from 0."""
    rows = []
    try:
        with open(path, newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                try:
                    rows.append((_parse_time(row["TIMESTAMP"]), int(row["ContextTokens"]), int(row["GeneratedTokens"])))
                except (KeyError, ValueError) as exc:
                    raise WorkloadError(
                        f"{path}: line {i + 2}: expected TIMESTAMP,ContextTokens,GeneratedTokens ({exc})"
                    ) from None
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise WorkloadError(f"{path}: no requests")
    rows.sort()
    t0 = rows[0][0]
    return [SimRequest(f"azure-{i}", t - t0, max(1, p), max(1, o)) for i, (t, p, o) in enumerate(rows)]


def mooncake_jsonl(path: str | Path) -> list[SimRequest]:
    """Mooncake's trace format; timestamps are milliseconds."""
    out = []
    try:
        with open(path) as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out.append(
                        SimRequest(
                            f"mooncake-{i}",
                            float(row["timestamp"]) / 1000.0,
                            max(1, int(row["input_length"])),
                            max(1, int(row["output_length"])),
                            tuple(int(h) for h in row.get("hash_ids", ())),
                            MOONCAKE_BLOCK_TOKENS,
                        )
                    )
                except (KeyError, ValueError, TypeError) as exc:
                    raise WorkloadError(f"{path}: line {i + 1}: {exc}") from None
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc}") from None
    if not out:
        raise WorkloadError(f"{path}: no requests")
    out.sort(key=lambda r: r.arrival_s)
    t0 = out[0].arrival_s
    for r in out:
        r.arrival_s -= t0
    return out


def _poisson_times(n: int, rate: float, rng: random.Random) -> list[float]:
    if rate <= 0:
        raise WorkloadError("a synthetic workload needs a positive request rate")
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def poisson_arrivals(requests: list[SimRequest], rate: float, seed: int = 0) -> list[SimRequest]:
    """The same requests, in the same order, arriving as a Poisson process at `rate` per second.

    One seed draws the same gaps at every rate, scaled by 1/rate, so a search over rates (the
    highest rate meeting an SLO: goodput) sees one set of requests under proportionally heavier
    load rather than a fresh sample at each step.
    """
    times = _poisson_times(len(requests), rate, random.Random(seed))
    return [dataclasses.replace(r, arrival_s=t) for r, t in zip(requests, times)]


def _ids(tag: object, count: int) -> tuple[int, ...]:
    return tuple(hash((tag, j)) for j in range(count))


def shared_prefix(
    groups: int = 32,
    prompts_per_group: int = 32,
    prefix_tokens: int = 2048,
    question_tokens: int = 256,
    output_tokens: int = 256,
    rate: float = 10.0,
    seed: int = 0,
) -> list[SimRequest]:
    """Groups sharing a system prompt, interleaved at random, Poisson arrivals at `rate` req/s."""
    rng = random.Random(seed)
    g_tok = SYNTHETIC_BLOCK_TOKENS
    order = [g for g in range(groups) for _ in range(prompts_per_group)]
    rng.shuffle(order)
    times = _poisson_times(len(order), rate, rng)
    out = []
    for i, (g, t) in enumerate(zip(order, times)):
        total = prefix_tokens + question_tokens
        shared = prefix_tokens // g_tok
        ids = _ids(("prefix", seed, g), shared) + _ids(("question", seed, i), math.ceil(total / g_tok) - shared)
        out.append(SimRequest(f"sp-{i}", t, total, output_tokens, ids, g_tok, session_id=f"group-{g}"))
    return out


def multi_turn(
    sessions: int = 64,
    turns: int = 5,
    system_tokens: int = 512,
    user_tokens: int = 128,
    output_tokens: int = 128,
    think_time_s: float = 5.0,
    rate: float = 1.0,
    seed: int = 0,
) -> list[SimRequest]:
    """Chat sessions: each turn's prompt is the conversation so far plus a new user message.

    All sessions share one system prompt; a session's history (its messages
    and the model's answers) is shared only by its own later turns.
    """
    rng = random.Random(seed)
    g_tok = SYNTHETIC_BLOCK_TOKENS
    starts = _poisson_times(sessions, rate, rng)
    out = []
    for s, t0 in enumerate(starts):
        head: SimRequest | None = None
        prev: SimRequest | None = None
        history = system_tokens
        for k in range(turns):
            prompt = history + user_tokens
            total = prompt + output_tokens
            ids = tuple(
                hash(("system", seed, j)) if (j + 1) * g_tok <= system_tokens else hash(("session", seed, s, j))
                for j in range(math.ceil(total / g_tok))
            )
            req = SimRequest(
                f"chat-{s}-{k}",
                t0,
                prompt,
                output_tokens,
                ids,
                g_tok,
                session_id=f"session-{s}",
                think_time_s=think_time_s,
            )
            if prev is None:
                head = req
            else:
                prev.next_turn = req
            prev = req
            history = total
        assert head is not None
        out.append(head)
    return out


# The daily envelopes of `diurnal`, each as the rate relative to the day's mean (mean 1 over a day).
#
# `azure2024-code` (the default) is measured: the code service's weekday load in the week-long
# Azure LLM inference trace of 2024 (AzurePublicDataset, AzureLLMInferenceTrace_code_1week.csv,
# CC-BY 4.0; the trace behind DynamoLLM, Stojkovic et al., HPCA 2025, arXiv:2408.00741). The trace
# itself is not reachable from here, so the values are read off the figure of invocations per
# minute that the dataset's own notebook publishes (analysis/AzureLLMInferenceDataset2024.ipynb,
# "Coding", 2024-05-10 to 05-17 UTC; benchmarks/digitise_azure2024_envelope.py does it): the
# plotted line's middle in each pixel column (7.2 minutes),
# averaged per UTC hour over Monday 13 to Thursday 16 May (below; divided by their mean in use). Check:
# the digitised week averages 1,685 invocations a minute, the trace's 16,803,695 rows over 7 days
# are 1,667. The weekday's hourly peak (19:00 UTC) is 9.9x its trough (08:00-09:00 UTC) and 2.26x
# its mean, so a fleet that followed it exactly would pay 0.44x one sized for the peak hour;
# Saturday and Sunday run at a third of a weekday and are left out (a weekday is the hard case).
AZURE2024_CODE_WEEKDAY = (  # invocations a minute, UTC hours 0 to 23
    1503, 1450, 1386, 1122, 893, 725, 632, 527, 497, 507, 549, 830,
    1522, 2606, 3686, 3918, 3754, 4329, 4824, 4908, 4508, 3315, 2386, 1825,
)  # fmt: skip
# `sinusoid`: one smooth cycle, `peak_to_trough` and `peak_hour` chosen by the caller (the
# envelope before the measured one: peak 14:00, peak-to-trough 3). `flat`: Poisson at the mean.
ENVELOPES = ("azure2024-code", "sinusoid", "flat")
# relative to the day's mean, once (the thinning loop evaluates the envelope for every draw)
_AZURE2024_RELATIVE = tuple(v / (sum(AZURE2024_CODE_WEEKDAY) / 24.0) for v in AZURE2024_CODE_WEEKDAY)
DIURNAL_PEAK_TO_TROUGH = 3.0
DIURNAL_PEAK_HOUR = 14.0
DAY_S = 86400.0


def _hourly(values: tuple[float, ...], hour: float) -> float:
    """Piecewise-linear through each hour's value at the hour's middle, wrapping at midnight (so the
    day's mean is the values' mean)."""
    x = (hour - 0.5) % 24.0
    i = int(x)
    frac = x - i
    return values[i] * (1.0 - frac) + values[(i + 1) % 24] * frac


def diurnal_envelope(
    t_s: float,
    envelope: str = "azure2024-code",
    peak_to_trough: float = DIURNAL_PEAK_TO_TROUGH,
    peak_hour: float = DIURNAL_PEAK_HOUR,
    day_s: float = DAY_S,
) -> float:
    """The rate at `t_s` seconds after midnight (UTC for the measured envelope) relative to the
    day's mean, for a day `day_s` long (less than 86,400: the day's shape compressed in time).
    `sinusoid`: `1 + a*cos(2*pi*(t - peak)/day)`, with `a = (r - 1)/(r + 1)` for a peak-to-trough
    ratio `r`."""
    hour = t_s / day_s * 24.0
    if envelope == "azure2024-code":
        return _hourly(_AZURE2024_RELATIVE, hour)
    if envelope == "flat":
        return 1.0
    if envelope != "sinusoid":
        raise WorkloadError(f"unknown diurnal envelope {envelope!r}: one of {', '.join(ENVELOPES)}")
    if peak_to_trough < 1:
        raise WorkloadError("a diurnal envelope's peak-to-trough ratio must be at least 1")
    a = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    return 1.0 + a * math.cos(2.0 * math.pi * (hour - peak_hour) / 24.0)


def envelope_peak(envelope: str = "azure2024-code", peak_to_trough: float = DIURNAL_PEAK_TO_TROUGH) -> float:
    """The envelope's highest value (relative to its mean). Refuses what diurnal_envelope refuses."""
    diurnal_envelope(0.0, envelope, peak_to_trough)
    if envelope == "azure2024-code":
        return max(_AZURE2024_RELATIVE)
    if envelope == "sinusoid":
        return 1.0 + (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    return 1.0


def diurnal(
    mix: list[SimRequest],
    mean_rps: float,
    duration_s: float = DAY_S,
    envelope: str = "azure2024-code",
    peak_to_trough: float = DIURNAL_PEAK_TO_TROUGH,
    peak_hour: float = DIURNAL_PEAK_HOUR,
    start_hour: float = 0.0,
    seed: int = 0,
    day_s: float = DAY_S,
) -> list[SimRequest]:
    """A day of requests: arrivals a non-homogeneous Poisson process of rate
    `mean_rps * diurnal_envelope(t)` (drawn by thinning a Poisson process at the peak rate), each
    request's prompt and answer lengths drawn with replacement from `mix` (e.g. the Azure 2023
    code hour), so the day has the trace's request shape and the envelope's rate, not the hour's
    bursts. `start_hour`: the clock time at t=0. `day_s`: the day's length, shorter to replay the
    day's shape faster (a quarter: six hours with the day's peak-to-trough at four times its pace,
    so a fleet several times larger fits the same simulation time). Pure and seeded: the same
    arguments give the same requests."""
    for name, value in (("mean rate", mean_rps), ("duration", duration_s), ("day length", day_s)):
        if not (math.isfinite(value) and value > 0):  # NaN passes every comparison: refuse it by name
            raise WorkloadError(f"a diurnal workload needs a positive, finite {name}, not {value}")
    if not math.isfinite(peak_to_trough):
        raise WorkloadError(f"a diurnal envelope's peak-to-trough ratio must be finite, not {peak_to_trough}")
    if not mix:
        raise WorkloadError("a diurnal workload needs a request mix to draw from")
    rng = random.Random(seed)
    peak = envelope_peak(envelope, peak_to_trough)
    top = mean_rps * peak
    out: list[SimRequest] = []
    t = rng.expovariate(top)
    while t < duration_s:
        clock = t + start_hour / 24.0 * day_s
        if rng.random() * peak < diurnal_envelope(clock, envelope, peak_to_trough, peak_hour, day_s):
            src = mix[rng.randrange(len(mix))]
            out.append(SimRequest(f"diurnal-{len(out)}", t, src.prompt_tokens, src.output_tokens))
        t += rng.expovariate(top)
    return out


def rescale(
    requests: list[SimRequest], rate_scale: float = 1.0, time_scale: float = 1.0, seed: int = 0
) -> list[SimRequest]:
    """Change a trace's load without changing its shape.

    time_scale stretches the timeline (0.5 replays an hour in 30 minutes: the same
    requests, twice the rate, bursts twice as sharp). rate_scale changes the number
    of requests over the same timeline: below 1 a random subset is kept, above 1
    each request is replayed that many times on average, the copies spread over
    the gap to the next arrival so they do not land in the same instant.
    """
    if rate_scale <= 0 or time_scale <= 0:
        raise WorkloadError("--rate-scale and --time-scale must be positive")
    rng = random.Random(seed)
    out: list[SimRequest] = []
    for i, r in enumerate(requests):
        gap = (requests[i + 1].arrival_s - r.arrival_s) if i + 1 < len(requests) else 0.0
        copies = int(rate_scale) + (1 if rng.random() < rate_scale - int(rate_scale) else 0)
        for c in range(copies):
            t = r.arrival_s + (rng.random() * gap if c else 0.0)
            rid = r.request_id if c == 0 else f"{r.request_id}-x{c}"
            out.append(dataclasses.replace(r, request_id=rid, arrival_s=t * time_scale))
    out.sort(key=lambda q: q.arrival_s)
    return out


def limit(
    requests: list[SimRequest], max_requests: int | None = None, duration_s: float | None = None
) -> list[SimRequest]:
    """The first `max_requests` requests and/or those arriving within `duration_s`."""
    out = requests if duration_s is None else [r for r in requests if r.arrival_s < duration_s]
    return out[:max_requests] if max_requests else out
