"""A placement profile: filters, weighted scorers, a picker and a prefix index, built from YAML."""

from __future__ import annotations

import functools
import inspect
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tessera.placement.disaggregation import DEFAULT_PREFILL_PROFILE, DisaggConfig
from tessera.placement.filters import FILTERS, Filter
from tessera.placement.pickers import PICKERS, Picker
from tessera.placement.prefix_index import CANONICAL_BLOCK_TOKENS, PrefixIndex
from tessera.placement.scorers import SCORERS, Scorer
from tessera.placement.snapshot import PlacementContext, PlacementDecision, RequestInfo, WorkerSnapshot

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
INDEX_MODES = ("precise", "approximate", "hybrid")
MAX_SESSIONS = 100_000


class ProfileError(ValueError):
    """A profile names an unknown filter, scorer or picker, or is malformed."""


@dataclass
class IndexSpec:
    """Where prefix-cache hits come from.

    precise: the scheduler's index fed by engine KV-cache events (shared by all
    profiles, passed to place()); approximate: this profile's own record of what
    it routed where, each entry kept ttl_s seconds, at most capacity_blocks
    16-token blocks per worker (0: the worker's KV capacity); hybrid: both, the
    larger hit wins. Events arrive only once a prefill has run, so a burst of
    prompts sharing a new prefix would scatter under precise alone; a short-lived
    routing record bridges that gap until the events confirm it.
    """

    mode: str
    ttl_s: float = 600.0
    capacity_blocks: int = 0
    max_blocks: int = 0  # match at most this many leading blocks (llm-d hashes 256); 0: all


@dataclass
class Scored:
    """A profile's view of one request before it picks: the candidates left and their weighted scores."""

    candidates: list[WorkerSnapshot]
    totals: list[float]
    ctx: PlacementContext
    hashes: tuple[int, ...]


@dataclass
class Pipeline:
    name: str
    filters: list[tuple[str, Filter]]
    scorers: list[tuple[str, Scorer, float]]
    picker: Picker
    source: dict[str, Any] = field(default_factory=dict)
    index_spec: IndexSpec | None = None
    own_index: PrefixIndex | None = None
    sessions: OrderedDict[str, str] = field(default_factory=OrderedDict)
    # Score at most this many candidates (0: all): every worker holding part of the prompt, plus
    # a random sample of the rest. With hundreds of workers the best of a few dozen random ones is
    # nearly as good as the best of all (the power of d choices) and costs a fraction.
    sample: int = 0
    rng: random.Random = field(default_factory=random.Random)
    # A profile with a `disaggregation:` section: this pipeline picks decode workers (and local
    # prefills), prefill_pipeline picks prefill workers; see pairing.place_pair.
    disaggregation: DisaggConfig | None = None
    prefill_pipeline: Pipeline | None = None

    def place(
        self, req: RequestInfo, workers: list[WorkerSnapshot], now: float = 0.0, shared_index: PrefixIndex | None = None
    ) -> PlacementDecision:
        scored = self.score(req, workers, now, shared_index)
        if isinstance(scored, PlacementDecision):
            return scored
        return self.commit(req, scored, self.picker(req, scored.candidates, scored.totals, scored.ctx), now)

    def score(
        self, req: RequestInfo, workers: list[WorkerSnapshot], now: float = 0.0, shared_index: PrefixIndex | None = None
    ) -> Scored | PlacementDecision:
        """Filters, prefix hits and weighted scores, without choosing or recording anything: a caller
        that weighs more than this profile knows (the KV transfer of a prefill/decode pair) adjusts
        the totals, picks, then commits. A PlacementDecision without a worker when the filters left none."""
        candidates = workers
        for name, flt in self.filters:
            candidates = flt(req, candidates)
            if not candidates:
                return PlacementDecision(
                    worker=None,
                    candidates=0,
                    reason=f"no worker passed the {name} filter",
                    saturated=name == "saturation",
                )
        ctx = PlacementContext(now=now, session_worker=self.sessions.get(req.session_id, "") if req.session_id else "")
        spec = self.index_spec
        own = self.own_index
        hashes = req.block_hashes[: spec.max_blocks] if spec is not None and spec.max_blocks else req.block_hashes
        if spec is not None and hashes:
            # Hits are looked up over every indexed worker; scorers only read the candidates' entries.
            if spec.mode != "approximate" and shared_index is not None:
                ctx.prefix_hits = shared_index.match(hashes)
            if own is not None:
                for wid, tokens in own.match(hashes).items():
                    if tokens > ctx.prefix_hits.get(wid, 0):
                        ctx.prefix_hits[wid] = tokens
        ctx.index = own if own is not None else shared_index
        if self.sample and len(candidates) > self.sample:
            candidates = self._sample(candidates, ctx.prefix_hits, ctx.session_worker)
        totals = [0.0] * len(candidates)
        for _, scorer, weight in self.scorers:
            for i, s in enumerate(scorer(req, candidates, ctx)):
                totals[i] += weight * s
        return Scored(candidates, totals, ctx, hashes)

    def commit(self, req: RequestInfo, scored: Scored, chosen: WorkerSnapshot, now: float = 0.0) -> PlacementDecision:
        """Record `chosen` (this profile's routing history, the session's worker) and say so."""
        spec, own, hashes = self.index_spec, self.own_index, scored.hashes
        if own is not None and spec is not None and hashes:
            capacity = spec.capacity_blocks or chosen.kv_capacity_tokens // CANONICAL_BLOCK_TOKENS
            own.add_worker(chosen.id, _index_block(chosen))
            own.routed(chosen.id, hashes, now, spec.ttl_s, capacity)
        if req.session_id:
            self.sessions[req.session_id] = chosen.id
            self.sessions.move_to_end(req.session_id)
            if len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return PlacementDecision(
            worker=chosen,
            candidates=len(scored.candidates),
            scores={w.id: t for w, t in zip(scored.candidates, scored.totals)},
            prefix_hit_tokens=scored.ctx.prefix_hits.get(chosen.id, 0),
        )

    def _sample(
        self,
        candidates: list[WorkerSnapshot],
        hits: dict[str, int],
        session_worker: str,
    ) -> list[WorkerSnapshot]:
        """The workers holding part of the prompt (and the session's), topped up at random to `sample`."""
        keep = [w for w in candidates if w.id in hits or w.id == session_worker]
        if len(keep) >= self.sample:
            return keep
        rest = [w for w in candidates if w.id not in hits and w.id != session_worker]
        return keep + self.rng.sample(rest, min(len(rest), self.sample - len(keep)))

    def forget_worker(self, worker_id: str) -> None:
        """A worker left: drop what this profile's own index believed it held."""
        if self.own_index is not None:
            self.own_index.remove_worker(worker_id)


def _index_block(w: WorkerSnapshot) -> int:
    size = w.kv_block_size or CANONICAL_BLOCK_TOKENS
    return size if size % CANONICAL_BLOCK_TOKENS == 0 else CANONICAL_BLOCK_TOKENS


def _entry(item: Any, kind: str) -> tuple[str, dict[str, Any]]:
    """A YAML list item: `name` or `{name: ..., weight: ..., other params}`."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item["name"], {k: v for k, v in item.items() if k != "name"}
    raise ProfileError(f"bad {kind} entry {item!r}: a name or a mapping with a name")


def _bind(fn: Any, params: dict[str, Any], what: str) -> Any:
    """`fn` with the profile's parameters fixed; a parameter it does not take is a ProfileError."""
    if not params:
        return fn
    try:
        inspect.signature(fn).bind_partial(**params)
    except TypeError as exc:
        raise ProfileError(f"{what}: {exc}") from None
    return functools.partial(fn, **params)


def build_pipeline(spec: dict[str, Any], seed: int | None = None) -> Pipeline:
    """Build from a parsed profile; unknown names raise ProfileError naming what exists."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ProfileError("a profile is a mapping with at least a name")
    filters = []
    for item in spec.get("filters", []):
        name, params = _entry(item, "filter")
        flt = FILTERS.get(name)
        if flt is None:
            raise ProfileError(f"unknown filter {name!r}; known: {', '.join(FILTERS.names())}")
        filters.append((name, _bind(flt, params, f"filter {name}")))
    scorers = []
    for item in spec.get("scorers", []):
        name, params = _entry(item, "scorer")
        weight = float(params.pop("weight", 1.0))
        scorer = SCORERS.get(name)
        if scorer is None:
            raise ProfileError(f"unknown scorer {name!r}; known: {', '.join(SCORERS.names())}")
        scorers.append((name, _bind(scorer, params, f"scorer {name}"), weight))
    picker_name, picker_params = _entry(spec.get("picker", "max_score"), "picker")
    make_picker = PICKERS.get(picker_name)
    if make_picker is None:
        raise ProfileError(f"unknown picker {picker_name!r}; known: {', '.join(PICKERS.names())}")
    try:
        picker = make_picker(seed, **picker_params)
    except TypeError as exc:
        raise ProfileError(f"picker {picker_name}: {exc}") from None
    index_spec = None
    if spec.get("prefix_index"):
        raw = spec["prefix_index"]
        raw = {"mode": raw} if isinstance(raw, str) else dict(raw)
        if raw.get("mode") not in INDEX_MODES:
            raise ProfileError(f"prefix_index mode must be one of {', '.join(INDEX_MODES)}")
        try:
            known = {"ttl_s": float, "capacity_blocks": int, "max_blocks": int}
            unknown = sorted(set(raw) - set(known) - {"mode"})
            if unknown:
                raise TypeError(f"unknown keys {', '.join(unknown)}")
            index_spec = IndexSpec(mode=raw.pop("mode"), **{k: known[k](v) for k, v in raw.items()})
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"prefix_index: {exc}") from None
    own = PrefixIndex() if index_spec is not None and index_spec.mode != "precise" else None
    try:
        sample = int(spec.get("sample", 0))
    except (TypeError, ValueError):
        raise ProfileError("sample must be a whole number of candidates") from None
    pipeline = Pipeline(
        spec["name"], filters, scorers, picker, spec, index_spec, own, sample=sample, rng=random.Random(seed)
    )
    if spec.get("disaggregation") is not None:
        pipeline.disaggregation, pipeline.prefill_pipeline = _disaggregation(spec, seed)
    return pipeline


def _disaggregation(spec: dict[str, Any], seed: int | None) -> tuple[DisaggConfig, Pipeline]:
    """The `disaggregation:` section: the pairing knobs, and the prefill side's own pipeline (its
    `prefill:` key, a profile without a name; by default DEFAULT_PREFILL_PROFILE with this profile's
    prefix index, so both sides read cache hits the same way)."""
    raw = spec["disaggregation"]
    if not isinstance(raw, dict):
        raise ProfileError(
            "disaggregation: a mapping (enabled, min_prompt_tokens, max_cached_fraction, transfer_weight, prefill)"
        )
    raw = dict(raw)
    prefill = raw.pop("prefill", None)
    try:
        config = DisaggConfig.from_mapping(raw)
    except ValueError as exc:
        raise ProfileError(f"disaggregation: {exc}") from None
    if prefill is None:
        prefill = {**DEFAULT_PREFILL_PROFILE, "prefix_index": spec.get("prefix_index")}
    if not isinstance(prefill, dict) or "disaggregation" in prefill:
        raise ProfileError("disaggregation.prefill: a pipeline (filters, scorers, picker, prefix_index)")
    try:
        side = build_pipeline({**prefill, "name": f"{spec['name']}/prefill"}, None if seed is None else seed + 1)
    except ProfileError as exc:
        raise ProfileError(f"disaggregation.prefill: {exc}") from None
    return config, side


def load_profile(name_or_path: str, seed: int | None = None) -> Pipeline:
    """A built-in profile by name (profiles/<name>.yaml) or a YAML file path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(f"no placement profile {name_or_path!r}; built-in: {', '.join(builtin_profiles())}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return build_pipeline(spec, seed)


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
