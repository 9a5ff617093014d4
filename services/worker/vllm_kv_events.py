"""vLLM's KV-cache events (ZMQ + msgpack, from its engine process) into the worker's relay.

vLLM publishes BlockStored / BlockRemoved / AllBlocksCleared batches on a ZMQ
PUB socket in the engine-core process when `kv_events_config` enables it. The
worker subscribes on loopback and hands the events, one block at a time with
its token ids, to the KVEventRelay that streams them to the schedulers.
"""

from __future__ import annotations

import logging
from typing import Any

from services.worker.kv_events import Cleared, Event, KVEventRelay, Removed, Stored, hash64

log = logging.getLogger("tessera.worker.kv_events")

TOPIC = "kv"


def kv_events_engine_arg(port: int) -> dict[str, Any]:
    """The engine argument that makes vLLM publish its KV-cache events on 127.0.0.1:`port`."""
    from vllm.config import KVEventsConfig

    return {
        "kv_events_config": KVEventsConfig(
            enable_kv_cache_events=True, publisher="zmq", endpoint=f"tcp://127.0.0.1:{port}", topic=TOPIC
        )
    }


def convert(batch: Any) -> list[Event]:
    """One decoded vLLM KVEventBatch as relay events (offloaded tiers are not the engine's prefix cache)."""
    from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

    out: list[Event] = []
    for ev in batch.events:
        if isinstance(ev, BlockStored):
            if ev.medium not in (None, "GPU"):
                continue
            size = ev.block_size
            parent = None if ev.parent_block_hash is None else hash64(ev.parent_block_hash)
            for i, h in enumerate(ev.block_hashes):
                block = hash64(h)
                out.append(Stored(block, parent, tuple(ev.token_ids[i * size : (i + 1) * size])))
                parent = block
        elif isinstance(ev, BlockRemoved):
            if ev.medium not in (None, "GPU"):
                continue
            out.extend(Removed(hash64(h)) for h in ev.block_hashes)
        elif isinstance(ev, AllBlocksCleared):
            out.append(Cleared())
    return out


def open_subscriber() -> tuple[Any, int]:
    """A SUB socket bound now to a free loopback port, and that port.

    vLLM's publisher binds only wildcard endpoints and connects to the rest, so
    with a loopback address it is the engine that connects: this end binds.
    Binding to port 0 before the engine starts leaves no window in which
    another socket (vLLM's own among them) could take the port.
    """
    import zmq
    import zmq.asyncio

    sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sock.setsockopt_string(zmq.SUBSCRIBE, TOPIC)
    sock.bind("tcp://127.0.0.1:*")
    port = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    return sock, port


async def subscribe(sock: Any, relay: KVEventRelay) -> None:
    """Receive until cancelled; a malformed message is logged once and skipped."""
    import msgspec
    from vllm.distributed.kv_events import KVEventBatch

    decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
    last_seq = -1
    complained = False
    try:
        while True:
            _, seq_bytes, payload = await sock.recv_multipart()
            seq = int.from_bytes(seq_bytes, "big")
            if last_seq < 0:
                log.info("receiving the engine's KV-cache events")
            elif seq != last_seq + 1:
                # Lost events: the mirror is no longer exact. Start over empty; blocks still
                # cached but never re-announced are simply not advertised (a missed hit, not an error).
                log.warning("vLLM KV events %d..%d lost; clearing the advertised cache", last_seq + 1, seq - 1)
                relay.publish([Cleared()])
            last_seq = seq
            try:
                relay.publish(convert(decoder.decode(payload)))
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                if not complained:
                    log.warning("undecodable KV event batch from vLLM: %s", exc)
                    complained = True
    finally:
        sock.close(linger=0)
