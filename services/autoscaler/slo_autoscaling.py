"""SLO-driven autoscaling in the service: policies from etcd, load from the routers, groups to the controller.

Every model with an SLO policy under /tessera/v1/config/slo-policies/ gets its
own ModelAutoscaler. Each planning interval the routers' metrics are scraped,
each model's loop decides its fleet (counting the interval at its peak arrival
rate over the policy's peak window: routers are also scraped once a window), and the controller receives the worker
groups (named auto-*) to reconcile through whichever actuator it has. A policy
that does not parse is refused with one log line and the previous one stays in
force; either verdict is recorded for the policy's etcd revision
(``tessera.runtime.etcd.acks``), which `tessera slo put` reports; a deleted
policy leaves its groups at their last counts (an operator scales them down on
purpose, not by accident).

With a record file (`tessera autoscaler --record-decisions FILE`), each policy as loaded and each
model's interval, its Observation and the loop's decision are appended to it as JSON lines:
what tests/unit/test_loop_parity.py replays through the simulator's driver of the same loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import IO

from services.autoscaler.desired import WorkerGroup
from services.autoscaler.load_observer import ModelInterval, RouterScraper, Scrape, interval
from services.autoscaler.model_autoscaler import ModelAutoscaler, group_name, group_prefix, groups_for
from tessera.planning.loop import decision_to_json
from tessera.planning.observation import observation_to_json
from tessera.planning.slo_policy import SloPolicyError, parse_slo_policy
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.acks import Acknowledger
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.records import ServiceRecord
from tessera.runtime.etcd.watch import PrefixMirror

log = logging.getLogger("tessera.autoscaler")

DEFAULT_TICK_S = 30.0


class SloAutoscaling:
    def __init__(
        self,
        connector: EtcdConnector,
        on_groups: Callable[[list[WorkerGroup]], None],
        acks: Acknowledger | None = None,
        ready_groups: Callable[[], Mapping[str, int]] | None = None,
        record: IO[str] | None = None,
    ) -> None:
        """`ready_groups`: registered workers per group name (None: take the fleet asked for as
        ready); `record`: where to append the JSON lines of policies, observations and decisions."""
        self.models: dict[str, ModelAutoscaler] = {}
        self.on_groups = on_groups
        self.acks = acks
        self.ready_groups = ready_groups
        self.record = record
        self._texts: dict[str, bytes] = {}
        self._routers: dict[str, str] = {}  # router id -> metrics address
        self._groups: dict[str, WorkerGroup] = {}  # every auto group ever made (0 replicas once unused)
        self._policies = PrefixMirror(connector, keys.SLO_POLICIES, on_change=self._policy_changed)
        self._router_mirror = PrefixMirror(connector, keys.services("router"), on_change=self._router_changed)
        self._scraper = RouterScraper()
        self._wake = asyncio.Event()

    def _policy_changed(self, key: str, value: bytes | None) -> None:
        name = key.removeprefix(keys.SLO_POLICIES)
        if value is None:
            if self.models.pop(name, None) is not None:
                log.info("SLO policy %s deleted; its worker groups keep their current counts", name)
            self._texts.pop(name, None)
            return
        refusal = self._load(name, value)
        if refusal:
            log.warning("SLO policy %s refused (%s); keeping the previous version", name, refusal)
        if self.acks is not None:
            self.acks.record(key, self._policies.revisions.get(key, 0), not refusal, refusal)

    def _load(self, name: str, value: bytes) -> str:
        """Plan from this version of the policy; why not, or "" once it is in force."""
        if self._texts.get(name) == value:
            return ""
        try:
            policy = parse_slo_policy(value.decode())
            if policy.served_model != name:
                raise SloPolicyError(f"it is for model {policy.served_model!r}, stored under {name!r}")
            autoscaler = ModelAutoscaler.for_policy(policy, self.models.get(name))
        except KeyError as exc:  # str() of a KeyError is only the quoted key
            return f"unknown {exc}"
        except (SloPolicyError, ValueError, OSError) as exc:
            return str(exc) or type(exc).__name__
        log.info("SLO policy %s %s", name, "reloaded" if name in self.models else "loaded")
        self.models[name] = autoscaler
        self._write({"policy": name, "yaml": policy.to_yaml()})
        self._texts[name] = value
        self._wake.set()
        return ""

    def _router_changed(self, key: str, value: bytes | None) -> None:
        rid = key.rsplit("/", 1)[-1]
        if value is None:
            self._routers.pop(rid, None)
        else:
            record = ServiceRecord.from_json(value)
            self._routers[rid] = record.metrics_address or record.http_address

    def tick_s(self) -> float:
        return min((m.policy.interval_s for m in self.models.values()), default=DEFAULT_TICK_S)

    def peek_s(self) -> float:
        """How often arrivals are counted between plans: the shortest peak window shorter than its
        policy's interval (policy.forecast.peak_window_s), else once per plan."""
        windows = [
            m.policy.forecast.peak_window_s
            for m in self.models.values()
            if 0 < m.policy.forecast.peak_window_s < m.policy.interval_s
        ]
        return min(windows, default=self.tick_s())

    async def run(self) -> None:
        self._policies.start()
        self._router_mirror.start()
        before: dict[str, Scrape] = {}
        peek: dict[str, Scrape] = {}
        peaks: dict[str, float] = {}  # model -> highest arrival rate over a peek since the plan
        last = last_peek = time.monotonic()
        while True:
            woke = False
            try:
                wait = max(0.0, min(self.peek_s(), last + self.tick_s() - time.monotonic()))
                woke = await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                after = await self._scraper.scrape(sorted(set(self._routers.values())))
                now = time.monotonic()
                if now - last_peek >= 0.5 * self.peek_s():  # a sliver of a window is noise, not a peak
                    for name in self.models:
                        rate = interval(peek, after, name, now - last_peek).requests / (now - last_peek)
                        peaks[name] = max(peaks.get(name, 0.0), rate)
                peek, last_peek = after, now
                if woke or now - last >= self.tick_s() - 1e-3:
                    self._plan(before, after, now - last, now, peaks)
                    before, last, peaks = after, now, {}
            except Exception as exc:  # noqa: BLE001 - one failed round must not stop autoscaling
                log.warning("autoscaling round failed: %s", exc)

    def _plan(
        self,
        before: dict[str, Scrape],
        after: dict[str, Scrape],
        duration_s: float,
        now: float,
        peaks: dict[str, float] | None = None,
    ) -> None:
        for name, model in list(self.models.items()):
            pcts = (model.policy.targets.ttft.percentile, model.policy.targets.tpot.percentile)
            seen = interval(before, after, name, duration_s, pcts)
            ready = None
            if self.ready_groups is not None:
                registered = self.ready_groups()
                ready = {
                    t: n for t in model.policy.instance_types() if (n := registered.get(group_name(model.policy, t), 0))
                }
            peak = (peaks or {}).get(name)
            obs = model.observe(seen, now, peak, ready)
            decision = model.decide(obs)
            counts = decision.counts
            self._write(
                {
                    "model": name,
                    "interval": _interval_json(seen),
                    "peak_rps": peak,
                    "ready": None if ready is None else {t.label: n for t, n in sorted(ready.items())},
                    "observation": observation_to_json(obs),
                    "decision": decision_to_json(decision),
                }
            )
            for group in list(self._groups.values()):
                if group.name.startswith(group_prefix(model.policy)):
                    self._groups[group.name] = replace(group, replicas=0)
            for group in groups_for(model.policy, counts, model.capacity):
                self._groups[group.name] = group
        self.on_groups(sorted(self._groups.values(), key=lambda g: g.name))

    def _write(self, doc: dict) -> None:
        if self.record is not None:
            self.record.write(json.dumps(doc, sort_keys=True) + "\n")
            self.record.flush()

    def status_lines(self) -> list[str]:
        return [line for m in self.models.values() for line in m.status_lines()]

    async def close(self) -> None:
        await self._policies.close()
        await self._router_mirror.close()
        await self._scraper.close()


def _interval_json(seen: ModelInterval) -> dict:
    """The routers' interval as JSON (percentile keys as strings, no NaN)."""
    doc = asdict(seen)
    for key in ("ttft_s", "itl_s"):
        doc[key] = {str(p): v for p, v in doc[key].items()}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in doc.items()}
