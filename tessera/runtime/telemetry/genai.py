"""OpenTelemetry GenAI semantic conventions on Tessera's spans.

Trace backends built for LLM traffic (Jaeger, Tempo, Langfuse, Phoenix, Datadog's LLM view)
group and chart spans by these attribute names, so a request served by Tessera reads like a
call to any hosted model. The names are those of the inference span in the OpenTelemetry
GenAI conventions (`open-telemetry/semantic-conventions-genai`, status Development). They are
spelled out here rather than taken from `opentelemetry-semantic-conventions`, whose GenAI
constants sit in an `_incubating` module and are marked deprecated there since the
conventions moved to their own repository.

Only what a request actually set is recorded (a sampling field left to the engine's default
is absent), never a prompt's or completion's text: that is opt-in in the conventions and may
hold personal data.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.util.types import AttributeValue

from tessera.v1 import common_pb2 as pb

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
# gen_ai.provider.name's name before semantic conventions 1.37; many backends still read it.
SYSTEM = "gen_ai.system"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

PROVIDER = "tessera"  # the service the client called; the engine behind it is tessera.engine
CHAT = "chat"
TEXT_COMPLETION = "text_completion"
ERROR_FINISH = "error"  # the conventions' finish reason for a generation that ended abnormally

Attributes = dict[str, AttributeValue]


def request_attributes(operation: str, model: str, sampling: pb.SamplingParams) -> Attributes:
    """What the request asked for: the operation, the model and the sampling fields it set."""
    attrs: Attributes = {OPERATION_NAME: operation, PROVIDER_NAME: PROVIDER, SYSTEM: PROVIDER, REQUEST_MODEL: model}
    for field, key in (
        ("max_tokens", REQUEST_MAX_TOKENS),
        ("temperature", REQUEST_TEMPERATURE),
        ("top_p", REQUEST_TOP_P),
        ("top_k", REQUEST_TOP_K),
        ("seed", REQUEST_SEED),
    ):
        if sampling.HasField(field):
            attrs[key] = _plain(getattr(sampling, field))
    if sampling.presence_penalty:
        attrs[REQUEST_PRESENCE_PENALTY] = _plain(sampling.presence_penalty)
    if sampling.frequency_penalty:
        attrs[REQUEST_FREQUENCY_PENALTY] = _plain(sampling.frequency_penalty)
    if sampling.stop:
        attrs[REQUEST_STOP_SEQUENCES] = list(sampling.stop)
    return attrs


def _plain(value: float | int) -> float | int:
    """A proto float32 as the client wrote it (0.7, not 0.699999988079071)."""
    return float(f"{value:.7g}") if isinstance(value, float) else value


def response_attributes(
    response_id: str, model: str, finish_reason: str | None, input_tokens: int, output_tokens: int, cached_tokens: int
) -> Attributes:
    """What came back: usage as the client's `usage` reports it. A stream that ended without a
    finish reason (failed, cancelled) reports "error", as the conventions ask."""
    attrs: Attributes = {
        RESPONSE_MODEL: model,
        RESPONSE_FINISH_REASONS: [finish_reason or ERROR_FINISH],
        USAGE_INPUT_TOKENS: input_tokens,
        USAGE_OUTPUT_TOKENS: output_tokens,
        USAGE_CACHE_READ_INPUT_TOKENS: cached_tokens,
    }
    if response_id:
        attrs[RESPONSE_ID] = response_id
    return attrs


def server_attributes(address: str) -> Attributes:
    """server.address and server.port of a `host:port` (`[v6]:port` too); nothing for an address
    without a numeric port."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return {}
    return {SERVER_ADDRESS: host.strip("[]"), SERVER_PORT: int(port)}


def failover_event(
    failed_worker: str, next_worker: str, reason: str, produced_tokens: int, attempt: int
) -> tuple[str, Mapping[str, AttributeValue]]:
    """The span event for a request moved to another worker: `tessera.retry` when the failed
    worker had produced nothing (the request starts over), `tessera.resume` when it had (the
    next worker continues from those tokens)."""
    name = "tessera.resume" if produced_tokens else "tessera.retry"
    return name, {
        "tessera.failed_worker_id": failed_worker,
        "tessera.worker_id": next_worker,
        "tessera.reason": reason,
        "tessera.resumed_tokens": produced_tokens,
        "tessera.attempt": attempt,
    }
