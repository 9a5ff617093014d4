"""deploy/compose really runs: `make compose-up` on this machine's Docker engine, used as a user would.

The images are built here (deploy/images: the control plane and the CPU worker, on a Debian base
made with debootstrap, since no image registry answers), then etcd, scheduler, router and the
autoscaler come up, and the autoscaler starts a vLLM CPU worker serving SmolLM2 through the
engine. Then, in order:

1. "What is the capital of France?" is answered "Paris" on the router's HTTP (the openai client)
   and gRPC ports;
2. the autoscaler, given a desired state of two workers, scales the worker service to 2 and both
   serve;
3. a worker container killed mid-stream (SIGKILL to its process, as the OOM killer would): the
   stream completes on the other worker, and the engine restarts the container, which serves again;
4. `make compose-down` leaves no container, volume or network of the project.

Every service runs on the host network (no bridge: these machines allow none). Skipped only when
no Docker engine can be installed or started here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import openai
import pytest

from tessera.runtime.models.registry import model_cache_dir
from tessera.runtime.net import free_port
from tessera.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.support.harness import wait_for
from tests.support.models import SMOLLM2
from tests.support.paths import REPO

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROJECT = "tessera"
SERVICE = "worker-smollm2-cpu-mixed"
LOCAL_BASE = "tessera-base:bookworm"
VENV = Path(sys.executable).parent.parent
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
WORKER_START_S = 600  # creating the container (vfs copies the image) and a vLLM CPU engine start on one shared core


def make(*targets: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``make`` in the repository, on the venv running this test (set up already: its stamps are kept)."""
    stamps = [f"-o{VENV}/.tessera-installed", f"-o{VENV}/.tessera-run-installed"]
    return subprocess.run(
        ["make", f"VENV={VENV}", *stamps, *targets],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True, timeout=120).stdout


def project_containers(service: str | None = None, running_only: bool = False) -> list[str]:
    filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    return docker("ps", *([] if running_only else ["-a"]), "-q", *filters).split()


class Deployment:
    def __init__(self, env: dict[str, str], http_port: int, grpc_port: int, desired: Path) -> None:
        self.env = env
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.desired = desired
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="none", max_retries=0)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.router = router_pb2_grpc.RouterStub(self.channel)

    def generate(self, text: str, max_tokens: int) -> Iterator[router_pb2.RouterGenerateResponse]:
        sampling = common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        return self.router.Generate(router_pb2.RouterGenerateRequest(model=SMOLLM2, sampling=sampling, text=text))

    def served_by(self, text: str) -> str:
        """The worker that served a short request (the last worker id the stream names)."""
        return [m.worker_id for m in self.generate(text, 2) if m.worker_id][-1]

    def container_of(self, worker_id: str) -> str:
        """The worker container whose log names ``worker_id`` (workers log their id as they start)."""
        for cid in project_containers(SERVICE, running_only=True):
            logs = subprocess.run([DOCKER, "logs", cid], capture_output=True, text=True, timeout=60)
            if worker_id in logs.stdout + logs.stderr:
                return cid
        raise AssertionError(f"no running {SERVICE} container logged worker id {worker_id}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    env = dict(os.environ)
    http_port, grpc_port = free_port(), free_port()
    desired = tmp_path_factory.mktemp("compose") / "desired.yaml"
    desired.write_text((REPO / "deploy/compose/desired.yaml").read_text())
    env.update(
        BASE_IMAGE=LOCAL_BASE,
        TESSERA_PORT=str(http_port),
        TESSERA_GRPC_PORT=str(grpc_port),
        TESSERA_DESIRED=str(desired),
        TESSERA_WORKER_CPUS="1",  # both workers on core 1: this test shares a 2-core machine
        # the folder `make model` prepares SmolLM2 in (TESSERA_MODEL_CACHE wins, as in the registry), for
        # compose-up and for the autoscaler recreated below alike: a worker mounting an empty one never loads
        TESSERA_MODELS=str(model_cache_dir()),
    )
    engine = make("docker-engine", env=env, timeout=600)
    if engine.returncode != 0:
        pytest.skip(f"no Docker engine here (make docker-engine failed): {engine.stderr.strip()[-300:]}")
    started = time.monotonic()
    up = make("local-base", "compose-up", env=env, timeout=1800)
    assert up.returncode == 0, f"make compose-up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    print(f"make local-base compose-up: {time.monotonic() - started:.0f} s")
    d = Deployment(env, http_port, grpc_port, desired)
    try:
        yield d
    finally:
        d.channel.close()
        make("compose-down", env=env, timeout=600)


def test_images_are_built_non_root_and_the_control_plane_has_no_torch(deployment):
    for image in ("tessera", "tessera-worker-cpu"):
        assert json.loads(docker("image", "inspect", image))[0]["Config"]["User"] == "10001", image
    probe = "import importlib.util as u; print(u.find_spec('torch') is None and u.find_spec('vllm') is None)"
    assert docker("run", "--rm", "--network", "host", "tessera", "python", "-c", probe).strip() == "True"


def test_paris_through_the_router_http_and_grpc_ports(deployment):
    def paris_over_http() -> bool:
        r = deployment.client.chat.completions.create(model=SMOLLM2, messages=QUESTION, temperature=0, max_tokens=30)
        assert "Paris" in r.choices[0].message.content, r.choices[0].message.content
        return True

    # The autoscaler starts the worker after `compose up`; its engine takes a while to load.
    wait_for(paris_over_http, WORKER_START_S, interval=3, what="the compose worker to answer over HTTP")
    assert len(project_containers(SERVICE)) == 1  # the autoscaler started exactly the desired one

    sampling = common_pb2.SamplingParams(max_tokens=30, temperature=0.0)
    chat = router_pb2.ChatMessages(
        messages=[router_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in QUESTION]
    )
    reply = "".join(
        m.delta.text
        for m in deployment.router.Generate(
            router_pb2.RouterGenerateRequest(model=SMOLLM2, sampling=sampling, chat=chat)
        )
    )
    assert "Paris" in reply, reply


def test_the_autoscaler_scales_the_workers_to_two_and_both_serve(deployment):
    deployment.desired.write_text(deployment.desired.read_text().replace("replicas: 1}", "replicas: 2}", 1))
    assert "replicas: 2}" in deployment.desired.read_text()
    # The autoscaler reads its desired state at start: recreate it on the new file, as a user would.
    compose = os.environ.get("COMPOSE") or str(VENV / "compose/bin/docker-compose")  # what the Makefile uses
    env = dict(deployment.env, COMPOSE_HTTP_TIMEOUT="600")
    env["DOCKER_GID"] = str(os.stat("/var/run/docker.sock").st_gid)
    subprocess.run(
        [*compose.split(), "up", "-d", "--no-deps", "--force-recreate", "autoscaler"],
        cwd=REPO / "deploy/compose",
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    wait_for(lambda: len(project_containers(SERVICE)) == 2, 120, interval=2, what="the autoscaler to add a container")

    seen: set[str] = set()
    prompts = iter(range(10_000))

    def both_served() -> bool:
        with ThreadPoolExecutor(4) as pool:  # distinct prompts, in parallel: no prefix affinity to one worker
            seen.update(
                pool.map(
                    lambda i: deployment.served_by(f"Request {i}: count to ten."), [next(prompts) for _ in range(4)]
                )
            )
        return len(seen) >= 2

    wait_for(both_served, WORKER_START_S, interval=2, what="both workers to serve")
    assert len(seen) == 2, seen


def test_a_worker_killed_mid_stream_finishes_the_stream_and_is_replaced(deployment):
    stream = deployment.generate("Tell me a long story about a lighthouse keeper.", 120)
    tokens, workers, victim, cid = 0, [], None, None
    for msg in stream:
        tokens += len(msg.delta.token_ids)
        if msg.worker_id and (not workers or workers[-1] != msg.worker_id):
            workers.append(msg.worker_id)
        if victim is None and tokens >= 10:
            victim = msg.worker_id or workers[-1]
            cid = deployment.container_of(victim)
            restarts = json.loads(docker("inspect", cid))[0]["RestartCount"]
            pid = int(docker("inspect", "-f", "{{.State.Pid}}", cid).strip())
            os.kill(pid, signal.SIGKILL)  # the worker process dies at once, as under the OOM killer
    assert tokens == 120, tokens  # the stream completed
    assert len(workers) == 2 and workers[0] == victim, workers  # ... resumed on the other worker

    def replaced() -> bool:
        state = json.loads(docker("inspect", cid))[0]
        return state["RestartCount"] > restarts and state["State"]["Running"]

    wait_for(replaced, 60, interval=1, what="the engine to restart the killed worker container")
    survivor = workers[1]
    prompts = iter(range(10_000))

    def replacement_serves() -> bool:
        with ThreadPoolExecutor(4) as pool:
            ids = set(
                pool.map(
                    lambda i: deployment.served_by(f"Question {i}: name a color."), [next(prompts) for _ in range(4)]
                )
            )
        return bool(ids - {survivor, victim})

    wait_for(replacement_serves, WORKER_START_S, interval=2, what="the restarted worker to serve again")
    assert len(project_containers(SERVICE)) == 2


def test_compose_down_leaves_nothing_running(deployment):
    down = make("compose-down", env=deployment.env, timeout=600)
    assert down.returncode == 0, down.stderr[-2000:]
    assert project_containers() == []
    label = f"label=com.docker.compose.project={PROJECT}"
    assert docker("volume", "ls", "-q", "--filter", label).split() == []
    # Host network only: the project never had a network of its own.
    assert docker("network", "ls", "-q", "--filter", label).split() == []
