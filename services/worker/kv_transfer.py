"""Prefill/decode KV transfer: the vLLM KV-connector settings a worker's role needs.

A prefill worker computes a prompt's KV cache and keeps it for a decode worker
to pull; a decode worker pulls it instead of recomputing. Both sides run vLLM's
own connector (NIXL by default: UCX moves the blocks, over RDMA between GPUs
and over TCP/shared memory between CPU engines), so what Tessera adds is only
the configuration and the router's two-step flow (services/router/flow.py).

NIXL's handshake goes over a side channel (a ZMQ socket the engine opens on
``VLLM_NIXL_SIDE_CHANNEL_HOST:PORT``), read by the engine process from its
environment: each worker picks a free port so that several share a host.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tessera.runtime.net import free_port, port_is_free

# vLLM's kv_role per Tessera role. Mixed workers run no connector: they serve
# whole requests, and a connector costs start-up time and a side channel.
KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
NIXL_CONNECTORS = ("NixlConnector", "NixlPullConnector", "NixlPushConnector")
SIDE_CHANNEL_PORTS = (20000, 32000)  # below Linux's ephemeral range (32768-60999)


@dataclass(frozen=True)
class KVTransferSetup:
    connector: str
    kv_role: str
    config: dict[str, Any]  # KVTransferConfig fields
    env: dict[str, str] = field(default_factory=dict)

    def engine_arg(self) -> dict[str, Any]:
        """The AsyncEngineArgs entry (vLLM wants its config object, not a dict)."""
        from vllm.config import KVTransferConfig

        return {"kv_transfer_config": KVTransferConfig(**self.config)}


def side_channel_port_for(host: str) -> int:
    """A port for NIXL's handshake socket, which vLLM binds much later, in its engine process.

    Not one the OS hands out: a port picked with bind(0) and released is in the ephemeral range,
    where any process starting meanwhile (another worker's engine, a client socket) may be given it,
    and the engine then fails with "Address already in use". Below the ephemeral range, a random
    free port collides only with another worker's equally random pick.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*SIDE_CHANNEL_PORTS)
        if port_is_free(port, host):
            return port
    return free_port(host)


def kv_transfer_setup(role: str, connector: str, host: str, side_channel_port: int = 0) -> KVTransferSetup | None:
    """The connector settings for a worker in ``role``; None for mixed workers or ``connector`` "none".

    A decode worker whose transfer fails (the prefill worker died between its
    answer and the pull) recomputes the prompt instead of failing the request:
    vLLM's ``kv_load_failure_policy`` defaults to "fail", which would lose it.
    """
    if role not in KV_ROLES or connector in ("", "none"):
        return None
    config: dict[str, Any] = {"kv_connector": connector, "kv_role": KV_ROLES[role]}
    if role == "decode":
        config["kv_load_failure_policy"] = "recompute"
    env: dict[str, str] = {}
    if connector in NIXL_CONNECTORS:
        env = {
            "VLLM_NIXL_SIDE_CHANNEL_HOST": host,
            "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_channel_port or side_channel_port_for(host)),
        }
    return KVTransferSetup(connector, KV_ROLES[role], config, env)


def params_from_struct(params: Any) -> dict[str, Any]:
    """KV-transfer parameters as vLLM wrote them, from the protobuf Struct that carried them.

    A Struct keeps every number as a double, but the connectors index with
    these (block ids, ports, sizes): whole numbers go back to ints.
    """
    from google.protobuf import json_format

    return _ints(json_format.MessageToDict(params))


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    return value
