"""How many requests per second one instance sustains while meeting the TTFT and TPOT targets.

The planner needs one number per instance type: the largest per-instance rate at which the
type still meets both percentile targets for this request shape. It comes from the
performance model's step times (tessera.engine_model.perf.step_timer.StepTimer, the roofline the simulator
prices every step with) and a small analytic model of vLLM's continuous batching:

- **decode**: a request holds a decode slot for `output_mean` steps, so by Little's law the
  mean batch is m = rate * output_mean * step(m), solved as a fixed point. The batch is
  Poisson (M/G/inf), so its p-th percentile m_p = m + z*sqrt(m) must fit `max_num_seqs` and
  the KV cache, and one step at m_p must stay within the TPOT target.
- **prefill**: prompts queue for a server that works through a full token budget per step
  (short prompts packed together, long ones chunked, each chunk behind the prompt before it);
  TTFT_p = the percentile of the G/G/1 wait (service variance from the prompt-length spread)
  plus the request's own prompt computed alone (over the prompt lengths,
  queueing.response_at_percentile) plus the handoff to the decode instance (the KV transfer
  and its first step, passed in by the planner).
- **mixed**: both share each step, and chunked prefill interferes with decode. Every step
  carries the decodes (cost step(m)) plus prompt tokens at a marginal cost c_p each, so the
  mean step is step(m) / (1 - rate*n*c_p). A request's TPOT is its decode step plus the prompt
  work of the requests arriving during its life (a Poisson count, at its percentile) spread
  over its output tokens; its TTFT is the prefill queue above, where a full step moves
  budget - m prompt tokens, plus the step already running when it arrives.

TTFT is the percentile of a sum of independent parts; for TPOT, percentiles (of the batch and of
the prompt work beside it) are taken one at a time and added, which errs on the safe side. Pooling across
instances is ignored (each instance is sized for its own share of Poisson traffic), also on
the safe side. Correction factors (corrections.Factors) scale prompt-work and decode-step
times. Results are cached per (type, quantised request shape, targets, factors, handoff):
they are pure functions of those, and the per-instance rate does not depend on the fleet's
load, so one entry serves every interval with a similar request shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.startup import StartupTimes
from tessera.planning.corrections import Factors
from tessera.planning.fleet import EngineKey, InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.queueing import count_at_percentile, erlang_c, response_at_percentile, time_at_tail, z_score
from tessera.planning.slo_policy import SloTargets

StepTime = Callable[..., float]  # StepTimer: (prefill=[(new, cached)], decode=[context]) -> seconds

# why one more request per second would break the SLO, in the order they are reported
TTFT, TPOT, KV, MAX_SEQS, SATURATED = "ttft", "tpot", "kv_cache", "max_num_seqs", "saturated"
_ORDER = (SATURATED, KV, MAX_SEQS, TTFT, TPOT)
_GRID = math.log(1.02)  # request shapes are quantised to 2% steps for the cache


@dataclass(frozen=True, eq=False)
class PlannedEngine:
    """What the capacity model needs of one (accelerator, tp) engine: its step times and vLLM limits."""

    accelerator: Accelerator
    tp: int
    arch: ModelArch
    timer: StepTime
    kv_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int
    dp: int = 1  # DP ranks: max_num_seqs and max_num_batched_tokens are the ranks' together
    startup: StartupTimes | None = None  # cold start and wake from sleep mode (None: not known)


@dataclass(frozen=True)
class Prediction:
    """Latency percentiles one instance would show at a per-instance rate, and what it breaks."""

    rate_rps: float
    ttft_s: float
    tpot_s: float
    batch: float  # mean concurrent decodes
    prefill_busy: float  # share of time the prompt server is busy (0 on decode instances)
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class Capacity:
    """The most requests per second one instance of `itype` serves within the SLOs, what binds it
    (TTFT, TPOT, KV, MAX_SEQS, SATURATED, or "fit"), the prediction there, and a phrase saying why."""

    itype: InstanceType
    rate_rps: float
    binding: str
    at_capacity: Prediction | None
    detail: str


@dataclass(frozen=True)
class _Shape:
    """The request shape as the formulas use it (tokens)."""

    new: float  # mean prompt tokens computed (not found in the prefix cache)
    cached: float
    prompts: tuple[tuple[float, float, float], ...]  # (computed, cached, share) per LoadMix.input_lengths bin
    output: float
    context: float  # mean decode context
    footprint: float  # KV tokens one sequence holds at its end
    scv: float  # squared coefficient of variation of prompt work
    answers: tuple[tuple[float, float], ...] = ()  # (answer tokens, share): LoadMix.output_lengths

    @property
    def new_sq(self) -> float:
        """E[n^2]/E[n] of the computed prompt tokens: the length whose attention cost per token is the mean."""
        return self.new * (1.0 + self.scv)

    @classmethod
    def of(cls, load: LoadMix, targets: SloTargets) -> _Shape:
        reuse = load.prefix_reuse
        new = max(1.0, load.input_mean * (1 - reuse))
        computed = [(n, max(1.0, n * (1 - reuse)), share) for n, share in load.input_lengths()]
        prompts = tuple((c, max(n - c, 0.0), share) for n, c, share in computed)
        return cls(
            new,
            max(load.input_mean - new, 0.0),
            prompts,
            load.output_mean,
            load.input_mean + load.output_mean / 2,
            load.input_mean + load.output_mean,
            load.input_scv(),
            load.output_lengths() if load.output_p90 > 0 else (),
        )


class _Steps:
    """Step times of one engine for one request shape, memoised by integer batch size.

    Fractional batches interpolate linearly between neighbours, so the rate search sees a
    continuous, monotone curve."""

    def __init__(self, engine: PlannedEngine, shape: _Shape, factors: Factors) -> None:
        self.e, self.shape, self.f = engine, shape, factors
        self._decode: dict[int, float] = {}
        self._prefill: dict[int, float] = {}
        self._chunks: dict[tuple[int, int, int], float] = {}  # (batch, chunk, prefix) -> seconds

    def _decode_int(self, b: int) -> float:
        if b not in self._decode:
            self._decode[b] = self.e.timer(decode=[int(self.shape.context)] * b) if b > 0 else 0.0
        return self._decode[b]

    def decode(self, batch: float) -> float:
        """Seconds of a decode-only step with `batch` sequences (at least one), times the tpot factor."""
        b = max(batch, 1.0)
        lo = math.floor(b)
        frac = b - lo
        t = self._decode_int(lo) if frac == 0 else (1 - frac) * self._decode_int(lo) + frac * self._decode_int(lo + 1)
        return t * self.f.tpot

    def room(self, batch: float) -> int:
        """Prompt tokens a step can carry beside `batch` decodes (vLLM's token budget)."""
        return self.e.max_num_batched_tokens - math.ceil(batch)

    def prompt_token_cost(self, batch: float) -> float:
        """Marginal seconds per prompt token when prompts fill a step beside `batch` decodes:
        short prompts packed together up to the budget, a long one chunked. Times the ttft factor.

        The prompts are taken E[n^2]/E[n] long, not E[n]: attention work grows as n^2, so that is
        the length whose per-token cost is the mean per-token cost of prompts of varied length.
        A prompt longer than the room is chunked, and a chunk attends over every token before it:
        token for token, a prompt's chunks attend over half of it on average, so the chunk priced
        sits behind a prefix of (that length - chunk) / 2 beside the cached one. Priced at the
        cached prefix alone, Mooncake's prompts (15k tokens, 29k in E[n^2]/E[n]) cost a third
        less than they do: the model gave one MI300X 2.5 req/s where the simulator's queue
        already ran away (issue 18)."""
        b = math.ceil(batch)
        if self.room(b) < 1:  # the batch alone fills the token budget: no prompt token fits beside it
            return math.inf
        if b not in self._prefill:
            room = self.room(b)
            chunk = int(min(self.shape.new_sq, room))
            k = max(1, room // max(chunk, 1))
            behind = int(self.shape.cached + (self.shape.new_sq - chunk) / 2.0)
            base = self._decode_int(b)
            full = self.e.timer(prefill=[(chunk, behind)] * k, decode=[int(self.shape.context)] * b)
            self._prefill[b] = (full - base) / (chunk * k)
        return self._prefill[b] * self.f.ttft

    def lone_prompts(self, batch: float) -> list[tuple[float, float]]:
        """(seconds, share) for each prompt length of the shape: the time to compute it with
        nothing queued, chunk by chunk beside `batch` decodes (each chunk behind the prompt before
        it); without decodes the step overhead is paid per chunk. Chunks are timed once per
        (chunk, prefix): without prefix reuse the lengths share their leading full chunks."""
        room, b = self.room(batch), math.ceil(batch)
        ctx = [int(self.shape.context)] * b
        own_step = self.decode(b) if b else 0.0
        out = []
        for new_f, cached_f, share in self.shape.prompts:
            done, total = 0, 0.0
            new, cached = int(math.ceil(new_f)), int(cached_f)
            while done < new:
                chunk = min(room, new - done)
                key = (b, chunk, cached + done)
                if key not in self._chunks:
                    alone = self.e.timer(prefill=[(chunk, cached + done)], decode=ctx) - self._decode_int(b)
                    self._chunks[key] = alone
                total += self._chunks[key] * self.f.ttft + own_step
                done += chunk
            out.append((total, share))
        return out


def _violations(checks: Sequence[tuple[str, bool]]) -> tuple[str, ...]:
    bad = {name for name, broken in checks if broken}
    return tuple(name for name in _ORDER if name in bad)


def _saturated(rate: float) -> Prediction:
    return Prediction(rate, math.inf, math.inf, math.inf, 1.0, (SATURATED,))


def _decode_batch(rate: float, steps: _Steps, busy: Callable[[float], float]) -> float | None:
    """Little's law fixed point m = rate * output * mean_step(m); None if it runs away."""
    limit = 4.0 * steps.e.max_num_seqs
    m = rate * steps.shape.output * steps.decode(1.0)
    for _ in range(60):
        step = busy(m)
        if not math.isfinite(step):
            return None
        nxt = rate * steps.shape.output * step
        if nxt > limit:
            return None
        if abs(nxt - m) <= 1e-6 * max(1.0, m):
            return nxt
        m = nxt
    return m


def _limits(
    rate: float, steps: _Steps, batch_p: float, full_step_s: float, percentile: float
) -> list[tuple[str, bool]]:
    """vLLM's limits on running sequences: the KV cache must hold the percentile batch, and at the
    TTFT percentile no request may wait for one of the max_num_seqs slots. Slots are M/M/c servers
    (Erlang C) held for a request's whole decode, priced at the full batch's step (waits happen
    only when every slot is taken); this also keeps the rate below what a full batch sustains.
    The allowed chance of waiting is half the percentile's tail: M/M/c treats the sequences'
    lives as independent, while a fuller batch slows every step and so lengthens every life
    (the discrete-event simulator's knee sits ~3% below the plain Erlang C bound on H100)."""
    slots = steps.e.max_num_seqs
    offered = rate * steps.shape.output * full_step_s
    return [
        (MAX_SEQS, erlang_c(slots, offered) > (1.0 - percentile / 100.0) / 2.0),
        (KV, batch_p * steps.shape.footprint > steps.e.kv_tokens),
        (SATURATED, steps.room(batch_p) < 1),
    ]


def predict_decode(rate: float, steps: _Steps, targets: SloTargets) -> Prediction:
    """A decode-only instance: TPOT is its step at the percentile batch; its TTFT share is one step."""
    m = _decode_batch(rate, steps, steps.decode)
    if m is None:
        return _saturated(rate)
    m_p = count_at_percentile(m, targets.tpot.percentile)
    tpot = steps.decode(m_p)
    checks = _limits(rate, steps, m_p, steps.decode(steps.e.max_num_seqs), targets.ttft.percentile)
    checks.append((TPOT, tpot > targets.tpot.seconds))
    return Prediction(rate, tpot, tpot, m, 0.0, _violations(checks))


def _ttft(
    rate: float, steps: _Steps, batch: float, step_s: float, after_s: float, percentile: float
) -> tuple[float, float]:
    """(TTFT at `percentile`, utilisation of the prompt queue), where a busy step moves `room`
    prompt tokens in `step_s` + room * c_p seconds, and a request's TTFT is its wait in that queue
    plus its own prompt computed alone plus `after_s` (the first step, or the handoff to decode).
    The percentile is that of the sum over the prompts' lengths (queueing.response_at_percentile)."""
    room = steps.room(batch)
    if room < 1:
        return math.inf, 1.0
    per_token = steps.prompt_token_cost(batch) + step_s / room
    service = steps.shape.new * per_token
    busy = rate * service
    if busy >= 1.0:
        return math.inf, busy
    own = [(alone + after_s, share) for alone, share in steps.lone_prompts(batch)]
    return response_at_percentile(busy, service, steps.shape.scv, own, percentile), busy


def predict_prefill(rate: float, steps: _Steps, targets: SloTargets, handoff_s: float) -> Prediction:
    """A prefill-only instance: TTFT = queue + its own prompt alone + handoff to decode, at the percentile."""
    ttft, busy = _ttft(rate, steps, 0.0, 0.0, handoff_s, targets.ttft.percentile)
    checks = [(SATURATED, busy >= 1.0), (TTFT, ttft > targets.ttft.seconds)]
    return Prediction(rate, ttft, 0.0, 0.0, min(busy, 1.0), _violations(checks))


def _mixed_tpot(rate: float, steps: _Steps, batch_p: float, percentile: float) -> float:
    """TPOT at `percentile` of a request sharing its steps with prompt work.

    Over its life D a request's steps carry its decode steps, L*step(m_p), plus the prompt tokens
    processed meanwhile, X(D): compound Poisson with mean rate*n*D and variance rate*D*E[n^2].
    D = L*step(m_p) + c_p*(rate*n*D + z*n*sqrt(rate*D*(1+scv))), a quadratic in sqrt(D): the
    fluctuation is amplified by 1/(1-rho) just as the mean is. With the answers' spread known
    (`_Shape.answers`), the tail is mixed over answer lengths instead (`_mixed_tpot_spread`)."""
    shape = steps.shape
    cost = steps.prompt_token_cost(batch_p)
    rho = rate * shape.new * cost
    if rho >= 1.0:
        return math.inf
    if shape.answers:
        return _mixed_tpot_spread(rate, steps, batch_p, percentile, cost, rho)
    base = shape.output * steps.decode(batch_p)
    spread = max(z_score(percentile), 0.0) * cost * shape.new * math.sqrt(rate * (1.0 + shape.scv))
    root = (spread + math.sqrt(spread * spread + 4.0 * (1.0 - rho) * base)) / (2.0 * (1.0 - rho))
    return root * root / shape.output


def _mixed_tpot_spread(rate: float, steps: _Steps, batch_p: float, percentile: float, cost: float, rho: float) -> float:
    """The TPOT t that a share 1 - percentile/100 of requests exceed, over the answers' lengths.

    A request of L tokens has TPOT D/(L-1) over its L-1 steps after the first token, with D as in
    `_mixed_tpot`: D(1-rho) = (L-1)*step(m_p) + c_p*n*sqrt(rate*D*(1+scv))*Z, Z standard normal. So
    P(TPOT_L > t) is the normal tail at Z = (t(L-1)(1-rho) - (L-1)step) / (c_p*n*sqrt(rate*t(L-1)(1+scv))),
    the mix's tail is its mean over the lengths, and t is found by bisection. A short answer's
    average is over few steps, so one of them carrying a full prompt chunk moves it a lot: the
    mix's p99 belongs to its short answers (on azure2023_code, those of 8 tokens or fewer), which
    the mean answer (28 tokens) hid (issue 18's floor 5). No step is longer than a full token
    budget of prompt work beside the batch, so neither is any TPOT: t is capped there."""
    shape = steps.shape
    step = steps.decode(batch_p)
    longest = step + steps.room(batch_p) * cost
    allowed = 1.0 - percentile / 100.0
    sd_per_root_s = cost * shape.new * math.sqrt(rate * (1.0 + shape.scv))

    def tail(t: float) -> float:
        share = 0.0
        for length, weight in shape.answers:
            k = max(length - 1.0, 1.0)
            life = t * k
            excess = life * (1.0 - rho) - k * step
            if sd_per_root_s <= 0.0:
                share += weight if excess < 0.0 else 0.0
            else:
                share += weight * 0.5 * math.erfc(excess / (sd_per_root_s * math.sqrt(life)) / math.sqrt(2.0))
        return share

    return time_at_tail(tail, step, longest, allowed)


def predict_mixed(rate: float, steps: _Steps, targets: SloTargets) -> Prediction:
    """Prompts and decodes share every step (chunked prefill)."""
    shape = steps.shape

    def mean_step(m: float) -> float:
        prompt_share = rate * shape.new * steps.prompt_token_cost(m)
        return steps.decode(m) / (1.0 - prompt_share) if prompt_share < 1.0 else math.inf

    m = _decode_batch(rate, steps, mean_step)
    if m is None or steps.room(m) < 1:
        return _saturated(rate)
    step = mean_step(m)
    m_p = count_at_percentile(m, targets.tpot.percentile)
    tpot = _mixed_tpot(rate, steps, m_p, targets.tpot.percentile)
    ttft, busy = _ttft(rate, steps, m, steps.decode(m), step, targets.ttft.percentile)
    full = mean_step(steps.e.max_num_seqs) if steps.room(steps.e.max_num_seqs) >= 1 else math.inf
    checks = _limits(rate, steps, m_p, full, targets.ttft.percentile)
    checks += [(SATURATED, busy >= 1.0), (TTFT, ttft > targets.ttft.seconds), (TPOT, tpot > targets.tpot.seconds)]
    return Prediction(rate, ttft, tpot, m, min(busy, 1.0), _violations(checks))


def _quantised(x: float) -> float:
    return math.exp(round(math.log(max(x, 1e-9)) / _GRID) * _GRID)


def quantise(load: LoadMix) -> LoadMix:
    """The request shape on the cache's 2% grid (the rate is not part of a capacity)."""
    p90 = _quantised(load.input_p90) if load.input_p90 > 0 else 0.0
    p99 = _quantised(load.input_p99) if load.input_p99 > 0 else 0.0
    out_p90 = _quantised(load.output_p90) if load.output_p90 > 0 else 0.0
    return LoadMix(
        0.0, _quantised(load.input_mean), p90, _quantised(load.output_mean), round(load.prefix_reuse, 2), p99, out_p90
    )


class CapacityModel:
    """Per-instance capacities for the instance types of one model, from its engine models; cached.

    `engines` maps InstanceType.engine_key ((accelerator name, tp), or with dp and cp) to a
    PlannedEngine; a key it lacks (the model does not fit, or no catalog row) has capacity 0.
    """

    def __init__(self, engines: Mapping[EngineKey, PlannedEngine]) -> None:
        self.engines = dict(engines)
        # (type, quantised shape, targets, factors, handoff) -> its capacity
        self._cache: dict[tuple[InstanceType, LoadMix, SloTargets, Factors, float], Capacity] = {}

    def engine(self, itype: InstanceType) -> PlannedEngine | None:
        return self.engines.get(itype.engine_key)

    def predict(
        self,
        itype: InstanceType,
        load: LoadMix,
        targets: SloTargets,
        factors: Factors = Factors(),
        handoff_s: float = 0.0,
    ) -> Prediction:
        """Latency percentiles of one instance of `itype` carrying `load.rate_rps` (what corrections compare
        with observations). `handoff_s`: KV transfer + first decode step, for prefill instances."""
        engine = self.engine(itype)
        if engine is None:
            raise KeyError(f"no engine model for {itype.label}")
        steps = _Steps(engine, _Shape.of(load, targets), factors)
        if itype.role == "decode":
            return predict_decode(load.rate_rps, steps, targets)
        if itype.role == "prefill":
            return predict_prefill(load.rate_rps, steps, targets, handoff_s)
        return predict_mixed(load.rate_rps, steps, targets)

    def capacity(
        self,
        itype: InstanceType,
        load: LoadMix,
        targets: SloTargets,
        factors: Factors = Factors(),
        handoff_s: float = 0.0,
    ) -> Capacity:
        """The largest per-instance rate whose prediction breaks nothing (bisection on a monotone
        predicate), for the request shape of `load` (its rate is ignored)."""
        shape = quantise(load)
        factors = Factors(round(factors.ttft, 3), round(factors.tpot, 3))
        key = (itype, shape, targets, factors, round(handoff_s, 4))
        if key not in self._cache:
            self._cache[key] = self._search(itype, shape, targets, factors, round(handoff_s, 4))
        return self._cache[key]

    def _search(
        self, itype: InstanceType, shape: LoadMix, targets: SloTargets, factors: Factors, handoff_s: float
    ) -> Capacity:
        engine = self.engine(itype)
        if engine is None or engine.kv_tokens <= 0:
            return Capacity(itype, 0.0, "fit", None, "the model does not fit (no room for a KV cache)")

        def at(rate: float) -> Prediction:
            return self.predict(itype, shape.scaled(rate), targets, factors, handoff_s)

        idle = at(1e-9)
        if not idle.ok:
            return Capacity(
                itype,
                0.0,
                idle.violations[0],
                idle,
                f"{_explain(idle.violations[0], idle, targets, engine)} even when idle",
            )
        lo, hi = 0.0, 1.0
        while at(hi).ok:
            lo, hi = hi, hi * 4.0
            if hi > 1e7:
                return Capacity(itype, math.inf, "none", at(lo), "nothing limits it")
        for _ in range(40):
            if hi - lo <= 1e-4 * hi:
                break
            mid = (lo + hi) / 2.0
            lo, hi = (mid, hi) if at(mid).ok else (lo, mid)
        over = at(hi)
        binding = over.violations[0]
        return Capacity(itype, lo, binding, at(lo), f"beyond it {_explain(binding, over, targets, engine)}")


def _explain(violation: str, p: Prediction, targets: SloTargets, engine: PlannedEngine) -> str:
    """One phrase for why a prediction fails."""
    if violation == TTFT:
        return f"TTFT p{targets.ttft.percentile:g} {p.ttft_s * 1e3:.0f} ms > {targets.ttft.ms:g} ms"
    if violation == TPOT:
        return f"TPOT p{targets.tpot.percentile:g} {p.tpot_s * 1e3:.1f} ms > {targets.tpot.ms:g} ms"
    if violation == KV:
        return f"the KV cache ({engine.kv_tokens} tokens) is full"
    if violation == MAX_SEQS:
        return f"max_num_seqs {engine.max_num_seqs} is reached"
    return "the engine saturates (no room for prompt tokens, or the queue never drains)"
