"""The router's gRPC API through generated stubs; health checking and reflection on every service."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tessera.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.support.models import TINY


@pytest.fixture(scope="module")
def router_stub(cluster):
    ch = grpc.insecure_channel(cluster.grpc_address)
    yield router_pb2_grpc.RouterStub(ch)
    ch.close()


def collect(stream):
    text, ids, last = [], [], None
    for msg in stream:
        text.append(msg.delta.text)
        ids.extend(msg.delta.token_ids)
        last = msg
    return "".join(text), ids, last


def test_generate_from_chat_text_and_token_ids(router_stub):
    sampling = common_pb2.SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    chat = router_pb2.RouterGenerateRequest(
        model=TINY,
        sampling=sampling,
        chat=router_pb2.ChatMessages(messages=[router_pb2.ChatMessage(role="user", content="Hello")]),
    )
    text, ids, last = collect(router_stub.Generate(chat))
    assert len(ids) == 8 and text
    assert last.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert last.usage.completion_tokens == 8 and last.usage.prompt_tokens > 5
    assert last.worker_id

    by_text = router_pb2.RouterGenerateRequest(model=TINY, sampling=sampling, text="The quick brown fox")
    by_ids = router_pb2.RouterGenerateRequest(
        model=TINY, sampling=sampling, token_ids=router_pb2.TokenIds(ids=collect_prompt_ids(by_text))
    )
    assert collect(router_stub.Generate(by_text))[1] == collect(router_stub.Generate(by_ids))[1]


def collect_prompt_ids(request):
    from tessera.runtime.models.prepare import ensure_model
    from tessera.runtime.models.registry import resolve
    from tessera.runtime.models.tokenizer import ModelTokenizer

    return ModelTokenizer(ensure_model(resolve("tiny"), weights=False)).encode(request.text)


def test_grpc_errors_use_status_codes(router_stub):
    with pytest.raises(grpc.RpcError) as err:
        list(router_stub.Generate(router_pb2.RouterGenerateRequest(model="nope", text="hi")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        list(
            router_stub.Generate(
                router_pb2.RouterGenerateRequest(
                    model=TINY, text="hello " * 3000, sampling=common_pb2.SamplingParams(max_tokens=4)
                )
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context length" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(router_stub.Generate(router_pb2.RouterGenerateRequest(model=TINY)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_models(router_stub):
    models = {m.id: m for m in router_stub.ListModels(router_pb2.ListModelsRequest()).models}
    assert models[TINY].max_model_len == 2048 and models[TINY].workers >= 1


def _services(cluster) -> dict[str, str]:
    """Service name -> a gRPC address serving it, from `tessera status`."""
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", cluster.etcd.endpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    status = json.loads(out)
    found = {f"tessera.v1.{s['kind'].capitalize()}": s["address"] for s in status["services"]}
    found["tessera.v1.Worker"] = status["workers"][0]["address"]
    return found


def test_every_service_serves_health_and_reflection(cluster):
    services = _services(cluster)
    assert set(services) == {"tessera.v1.Router", "tessera.v1.Scheduler", "tessera.v1.Autoscaler", "tessera.v1.Worker"}
    for name, address in services.items():
        with grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
            db = ProtoReflectionDescriptorDatabase(ch)
            assert name in db.get_services()
            assert db.FindFileContainingSymbol(name).package == "tessera.v1"
