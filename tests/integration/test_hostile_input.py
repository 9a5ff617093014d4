"""Hostile input at the router's two doors: nothing answers 5xx, every refusal is OpenAI-shaped, and
nobody else's stream stalls while it happens.

A real router, scheduler and etcd with two simulated workers (timed as Llama-3-8B on H100s, context
2M tokens, so long prompts pass the length pre-check and really are tokenized). While the corpus
and the fuzzer run, a canary client streams completions and records its largest gap between
chunks; the router's memory is read before and after.
"""

from __future__ import annotations

import copy
import json
import threading
import time

import grpc
import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.v1 import common_pb2, router_pb2
from tests.support.models import TINY
from tests.support.schema_strategy import from_schema
from tests.support.sim_cluster import SimCluster

# The target is 250 ms, met with this file alone (README: 171 ms worst over 10,000 cases). In
# `make test` five idle vLLM engines of the session cluster share the two cores, so the bound here is
# what catches the old failure (a long prompt froze the event loop for seconds), not the target.
MAX_CANARY_GAP_S = 1.0
# Over the fuzzer's minutes of ~20,000 canary gaps the OS alone, on two cores shared with those
# engines, gives a stray gap beyond that (one of 1.8 s in CI with the router's loop never blocked
# above 0.15 s under asyncio's debug mode). A loop that stalls on some kind of input stalls on many
# cases; so there: no gap beyond a frozen-loop bound, and at most a few beyond the single-case one.
MAX_FUZZ_GAP_S = 3.0
MAX_SLOW_FUZZ_GAPS = 3
MAX_RSS_GROWTH_MB = 50
CASES = 10_000


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    c = SimCluster(tmp_path_factory.mktemp("hostile"), worker_args=("--max-model-len", "2000000"))
    try:
        c.wait_ready()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def http(door):
    with httpx.Client(base_url=door.base_url, timeout=30) as client:
        yield client


class Canary:
    """A client streaming completions back to back; the largest gap between its chunks."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.gaps: list[float] = []
        self.streams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"model": TINY, "prompt": "canary " * 20, "max_tokens": 100, "stream": True}
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                last = None
                with client.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        now = time.monotonic()
                        if line.startswith("data:"):
                            if last is not None:
                                self.gaps.append(now - last)
                            last = now
                self.streams += 1

    def __enter__(self) -> Canary:
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def worst(self) -> float:
        return max(self.gaps, default=0.0)

    def gaps_over(self, seconds: float) -> int:
        return sum(gap > seconds for gap in self.gaps)


def assert_refused_properly(r: httpx.Response, what: str) -> None:
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"], what
        assert isinstance(error["type"], str), what
        assert "param" in error and "code" in error, what


CHAT = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _with(**fields):
    return json.dumps({**CHAT, **fields}).encode()


def _raw(fragment: str) -> bytes:
    """A chat body with `fragment` spliced in as raw JSON (for values json.dumps would not write)."""
    head = json.dumps({"model": TINY, "messages": [{"role": "user", "content": "x"}]})[:-1]
    return (head + ", " + fragment + "}").encode()


DIGITS = ('{"model": "' + TINY + '", "prompt": [' + "9" * 100_000 + "]}").encode()


CORPUS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("NaN", "/v1/chat/completions", _raw('"temperature": NaN'), {}),
    ("Infinity", "/v1/chat/completions", _raw('"top_p": Infinity'), {}),
    ("-Infinity", "/v1/chat/completions", _raw('"presence_penalty": -Infinity'), {}),
    ("1e309", "/v1/chat/completions", _raw('"temperature": 1e309'), {}),
    ("2^63 seed", "/v1/chat/completions", _with(seed=2**63), {}),
    ("2^64 max_tokens", "/v1/chat/completions", _with(max_tokens=2**64), {}),
    ("-1 max_tokens", "/v1/chat/completions", _with(max_tokens=-1), {}),
    ("negative stop id", "/v1/chat/completions", _with(stop_token_ids=[-1]), {}),
    ("huge stop id", "/v1/chat/completions", _with(stop_token_ids=[2**40]), {}),
    ("negative prompt id", "/v1/completions", json.dumps({"model": TINY, "prompt": [-5, 3]}).encode(), {}),
    ("10^5-digit int", "/v1/completions", DIGITS, {}),
    ("lone surrogate", "/v1/chat/completions", _raw('"user": "\\ud800"'), {}),
    ("surrogate content", "/v1/chat/completions", _raw('"stop": "a\\udfffb"'), {}),
    ("nesting 10^5", "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, {}),
    ("nesting in a message", "/v1/chat/completions", _raw('"x": ' + "[" * 10_000 + "]" * 10_000), {}),
    ("10^5 stop strings", "/v1/chat/completions", _with(stop=["s"] * 100_000), {}),
    (
        "image part",
        "/v1/chat/completions",
        _with(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
            ]
        ),
        {},
    ),
    (
        "audio part",
        "/v1/chat/completions",
        _with(
            messages=[
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}
            ]
        ),
        {},
    ),
    ("unknown role", "/v1/chat/completions", _with(messages=[{"role": "root", "content": "x"}]), {}),
    ("no messages", "/v1/chat/completions", _with(messages=[]), {}),
    ("unknown model", "/v1/chat/completions", _with(model="no-such-model"), {}),
    ("not JSON", "/v1/chat/completions", b"{model: tiny", {}),
    ("not an object", "/v1/chat/completions", b"[1, 2, 3]", {}),
    ("not UTF-8", "/v1/chat/completions", b'{"model": "\xff\xfe"}', {}),
    ("empty body", "/v1/completions", b"", {}),
    ("min_tokens over max_tokens", "/v1/chat/completions", _with(min_tokens=50, max_tokens=4), {}),
    (
        "4 MB prompt",
        "/v1/completions",
        json.dumps({"model": TINY, "prompt": "lorem ipsum " * 350_000, "max_tokens": 1}).encode(),
        {},
    ),
]
for _header in ("x-slo-ttft-ms", "x-tessera-profile", "x-request-id", "x-session-id", "content-type"):
    for _value in ("nan", "inf", "-inf", "x" * 65536):
        CORPUS.append((f"{_header}: {_value[:8]}", "/v1/chat/completions", _with(), {_header: _value}))


def test_the_hostile_corpus_gets_4xx_without_stalling_anyone(door, http):
    with Canary(door.base_url) as canary:
        for name, path, body, headers in CORPUS:
            r = http.post(path, content=body, headers={"content-type": "application/json", **headers})
            assert_refused_properly(r, name)
            if name.startswith(("NaN", "1e309", "lone", "nesting", "10^5", "image", "audio", "unknown model")):
                assert r.status_code in (400, 404), (name, r.status_code, r.text[:200])
            if name.startswith("x-slo-ttft-ms"):
                assert r.status_code == 400, (name, r.text[:200])  # a NaN deadline is never accepted
    assert canary.streams >= 1
    assert canary.worst < MAX_CANARY_GAP_S, f"the canary's largest gap was {canary.worst * 1000:.0f} ms"


def test_a_64_mb_body_is_refused_before_it_is_read(door, http):
    big = b'{"model": "tiny-llama", "prompt": "' + b"a" * (64 << 20) + b'"}'
    started = time.monotonic()
    r = http.post("/v1/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert time.monotonic() - started < 5

    def chunks():  # no Content-Length: counted as it arrives and cut off at the cap
        yield b'{"model": "tiny-llama", "prompt": "'
        for _ in range(64):
            yield b"a" * (1 << 20)

    try:
        r = http.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
    except httpx.RemoteProtocolError:
        pass  # the router closed the connection after its 413, while the client was still sending
    assert http.get("/health").status_code == 200


def _router_rss_mb(door: SimCluster) -> float:
    return psutil.Process(door.router.proc.pid).memory_info().rss / 2**20


def _fuzz_schemas(http: httpx.Client) -> tuple[dict[str, dict], dict]:
    """The request schemas the router publishes, with generation kept short (a fuzz case is not a load test)."""
    doc = http.get("/openapi.json").json()
    components = copy.deepcopy(doc["components"]["schemas"])
    schemas = {}
    for path in ("/v1/chat/completions", "/v1/completions"):
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = copy.deepcopy(components[ref.rsplit("/", 1)[1]])
        for name in ("max_tokens", "max_completion_tokens"):
            if name in schema["properties"]:
                schema["properties"][name] = {"type": "integer", "minimum": -1, "maximum": 4}
        schema["properties"]["model"] = {"enum": [TINY, "", "other"]}
        # without max_tokens a request may generate up to the 2M-token context: a load test, not a fuzz case
        schema["required"] = sorted({*schema.get("required", ()), "max_tokens"})
        schemas[path] = schema
    return schemas, components


def test_fuzzing_from_the_published_schema_finds_no_5xx_nor_stalls(door, http):
    """Bodies generated from /openapi.json, mostly valid, some not, plus arbitrary JSON; CASES requests."""
    schemas, components = _fuzz_schemas(http)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )
    sent = {"n": 0, "statuses": {}}

    def send(path: str, body: bytes) -> None:
        r = http.post(path, content=body, headers={"content-type": "application/json"})
        assert_refused_properly(r, body[:200].decode(errors="replace"))
        sent["n"] += 1
        sent["statuses"][r.status_code] = sent["statuses"].get(r.status_code, 0) + 1

    @settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        path=st.sampled_from(sorted(schemas)),
        data=st.data(),
        extra=st.dictionaries(st.sampled_from(["temperature", "top_p", "seed", "stop", "priority", "n"]), json_values),
    )
    def fuzz(path: str, data: st.DataObject, extra: dict) -> None:
        body = data.draw(from_schema(schemas[path], components))
        send(path, json.dumps(body).encode())
        send(path, json.dumps({**body, **extra}).encode())  # the same with odd values in known fields

    small = [case for case in CORPUS if len(case[2]) < 1 << 20]
    for i in range(500):  # warm-up: the earlier tests' 4 and 64 MB bodies leave memory the allocator returns late
        send(small[i % len(small)][1], small[i % len(small)][2])
    time.sleep(2)
    before = _router_rss_mb(door)
    with Canary(door.base_url) as canary:
        fuzz()
        while sent["n"] < CASES:  # the corpus again, to CASES requests in all
            name, path, body, headers = CORPUS[sent["n"] % len(CORPUS)]
            if len(body) < 1 << 20:
                send(path, body)
            else:
                sent["n"] += 1
    growth = _router_rss_mb(door) - before
    print(
        f"fuzz: {sent['n']} requests, statuses {sent['statuses']}, router RSS +{growth:.1f} MB, "
        f"canary worst gap {canary.worst * 1000:.0f} ms over {canary.streams} streams, "
        f"{canary.gaps_over(MAX_CANARY_GAP_S)} of {len(canary.gaps)} gaps over {MAX_CANARY_GAP_S * 1000:.0f} ms"
    )
    assert 200 in sent["statuses"] and 400 in sent["statuses"], sent["statuses"]  # both kinds were exercised
    assert growth < MAX_RSS_GROWTH_MB, f"router RSS grew {growth:.1f} MB over {sent['n']} requests"
    assert canary.worst < MAX_FUZZ_GAP_S, f"the canary's largest gap was {canary.worst * 1000:.0f} ms"
    slow = canary.gaps_over(MAX_CANARY_GAP_S)
    assert slow <= MAX_SLOW_FUZZ_GAPS, f"{slow} canary gaps over {MAX_CANARY_GAP_S * 1000:.0f} ms"


ALLOWED_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def test_grpc_generate_fuzzed_answers_only_client_codes(door):
    floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
    ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
    uints = st.integers(min_value=0, max_value=2**32 - 1)
    sampling = st.fixed_dictionaries(
        {"max_tokens": st.integers(min_value=0, max_value=8)},
        optional={
            "temperature": floats,
            "top_p": floats,
            "top_k": ints,
            "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
            "stop": st.lists(st.text(max_size=10), max_size=80),
            "stop_token_ids": st.lists(uints, max_size=5),
            "min_tokens": st.integers(min_value=0, max_value=10) | uints,
            "presence_penalty": floats,
            "frequency_penalty": floats,
            "repetition_penalty": floats,
        },
    ).map(lambda fields: common_pb2.SamplingParams(**fields))
    prompt = st.one_of(
        st.builds(lambda t: {"text": t}, st.text(max_size=200)),
        st.builds(lambda ids: {"token_ids": router_pb2.TokenIds(ids=ids)}, st.lists(uints, max_size=30)),
        st.builds(
            lambda msgs: {"chat": router_pb2.ChatMessages(messages=msgs)},
            st.lists(
                st.builds(
                    router_pb2.ChatMessage,
                    role=st.sampled_from(["user", "system", "x", ""]),
                    content=st.text(max_size=50),
                ),
                max_size=4,
            ),
        ),
        st.just({}),
    )
    seen: dict[str, int] = {}

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(model=st.sampled_from([TINY, "", "nope"]), sampling=sampling, prompt=prompt, priority=ints)
    def fuzz(model, sampling, prompt, priority):
        request = router_pb2.RouterGenerateRequest(model=model, sampling=sampling, priority=priority, **prompt)
        try:
            for _ in door.stub.Generate(request, timeout=30):
                pass
            seen["OK"] = seen.get("OK", 0) + 1
        except grpc.RpcError as exc:
            assert exc.code() in ALLOWED_GRPC, (exc.code(), exc.details(), request)
            seen[exc.code().name] = seen.get(exc.code().name, 0) + 1

    fuzz()
    print(f"gRPC fuzz: {seen}")
    assert seen.get("OK") and seen.get("INVALID_ARGUMENT"), seen
