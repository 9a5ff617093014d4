"""What both front ends (OpenAI HTTP and gRPC) share in one router process."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.router.auth import RequestGate
from services.router.flow import RequestFlow
from services.router.model_catalog import ModelCatalog
from services.router.preparation import Tokenizing
from services.router.scheduler_client import SchedulerClient


@dataclass
class RouterState:
    """The models and their tokenizers, the request flow, the schedulers, when the router started, and
    the gate (keys, tenants, rate limits; open by default)."""

    catalog: ModelCatalog
    flow: RequestFlow
    schedulers: SchedulerClient
    started_at: float
    tokenizing: Tokenizing = field(default_factory=Tokenizing)
    gate: RequestGate = field(default_factory=RequestGate)
