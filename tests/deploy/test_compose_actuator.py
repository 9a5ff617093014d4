"""The compose actuator, against stand-in ``docker`` / ``docker-compose`` binaries.

There is no Docker engine here, so the binaries on PATH are stubs that record
their argv and keep a container count per service. The exact commands are
asserted: they are the actuator's whole contract with compose, and each flag
matters (``--no-recreate`` keeps running workers, ``--no-deps`` leaves etcd and
the router alone, ``--timeout`` is the drain window).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from services.autoscaler.actuator import Actuator, ScalingError
from services.autoscaler.compose_actuator import ComposeActuator, worker_services
from services.autoscaler.desired import WorkerGroup, load_desired
from tests.support.paths import REPO

ROOT = REPO
COMPOSE = ROOT / "deploy/compose/docker-compose.yaml"
NVIDIA = ROOT / "deploy/compose/docker-compose.nvidia.yaml"

STUB = r'''#!{python}
"""Stand-in for docker / docker-compose: logs argv, keeps container counts in a JSON file."""
import json, os, sys, time
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
mode = os.environ["STUB_MODE"]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name, *args]) + "\n")
if name == "docker":
    if args[:1] != ["compose"] or mode == "v1":
        print("docker: 'compose' is not a docker command.", file=sys.stderr)
        sys.exit(1)
    args = args[1:]
if args[:1] == ["version"]:
    print("1.29.2" if mode == "v1" else "2.29.7")
    sys.exit(0)
while args and args[0] in ("--project-name", "--file"):
    args = args[2:]
state_path = os.environ["STUB_STATE"]
state = json.load(open(state_path)) if os.path.exists(state_path) else {}
if mode == "hang":
    time.sleep(30)
if args[0] == "ps":
    for i in range(state.get(args[-1], 0)):
        print(f"{i:012x}")
elif args[0] == "up":
    if mode == "fail":
        print("Error response from daemon: pull access denied for tessera, repository does not exist",
              file=sys.stderr)
        sys.exit(1)
    service, n = args[args.index("--scale") + 1].split("=")
    state[service] = int(n)
    json.dump(state, open(state_path, "w"))
'''


class Stubs:
    def __init__(self, tmp: Path, mode: str, binaries: tuple[str, ...] = ("docker", "docker-compose")) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name in binaries:
            path = self.bin / name
            path.write_text(STUB.replace("{python}", sys.executable, 1))
            path.chmod(0o755)
        self.log = tmp / "argv.jsonl"
        self.state = tmp / "state.json"
        self.env = {"PATH": str(self.bin), "STUB_MODE": mode, "STUB_LOG": str(self.log), "STUB_STATE": str(self.state)}

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def count(self, service: str) -> int:
        return json.loads(self.state.read_text()).get(service, 0) if self.state.exists() else 0


MIXED = WorkerGroup(name="smollm2-cpu-mixed", model="smollm2", role="mixed", accelerator="cpu", replicas=2)


def actuator(stubs: Stubs, *files: Path, **kwargs) -> ComposeActuator:
    return ComposeActuator([str(f) for f in files or (COMPOSE,)], env=stubs.env, **kwargs)


async def test_v2_scales_one_service_in_place_with_the_exact_command(tmp_path):
    stubs = Stubs(tmp_path, "v2")
    act = actuator(stubs)
    assert isinstance(act, Actuator)
    assert await act.replicas(MIXED) == 0
    await act.scale(MIXED, 3)
    assert stubs.count("worker-smollm2-cpu-mixed") == 3
    assert await act.replicas(MIXED) == 3
    base = ["docker", "compose", "--project-name", "tessera", "--file", str(COMPOSE)]
    assert stubs.calls() == [
        ["docker", "compose", "version", "--short"],
        [*base, "ps", "-a", "-q", "worker-smollm2-cpu-mixed"],
        [
            *base,
            "up",
            "-d",
            "--no-recreate",
            "--no-build",
            "--no-deps",
            "--timeout",
            "150",
            "--scale",
            "worker-smollm2-cpu-mixed=3",
            "worker-smollm2-cpu-mixed",
        ],
        [*base, "ps", "-a", "-q", "worker-smollm2-cpu-mixed"],
    ]


async def test_v1_docker_compose_is_used_when_docker_has_no_compose_plugin(tmp_path):
    stubs = Stubs(tmp_path, "v1")
    act = actuator(stubs, COMPOSE, NVIDIA, project="prod", stop_timeout_s=90)
    group = WorkerGroup(name="decode", model="smollm2", role="decode", accelerator="nvidia", replicas=2)
    assert (await act.converge([group])).actions != []
    assert stubs.count("worker-smollm2-nvidia-decode") == 2
    files = ["--file", str(COMPOSE), "--file", str(NVIDIA)]
    assert stubs.calls()[-2:] == [
        ["docker-compose", "--project-name", "prod", *files, "ps", "-q", "worker-smollm2-nvidia-decode"],
        [
            "docker-compose",
            "--project-name",
            "prod",
            *files,
            "up",
            "-d",
            "--no-recreate",
            "--no-build",
            "--no-deps",
            "--timeout",
            "90",
            "--scale",
            "worker-smollm2-nvidia-decode=2",
            "worker-smollm2-nvidia-decode",
        ],
    ]
    assert (await act.converge([group])).actions == []  # already right: no write


async def test_a_failing_compose_command_reports_its_exit_code_and_stderr(tmp_path):
    act = actuator(Stubs(tmp_path, "fail"))
    with pytest.raises(ScalingError, match=r"exited with 1: Error response from daemon: pull access denied"):
        await act.scale(MIXED, 1)


async def test_a_hung_compose_command_is_killed_with_a_clear_error(tmp_path):
    act = actuator(Stubs(tmp_path, "hang"), call_timeout_s=0.5)
    with pytest.raises(ScalingError, match=r"did not finish in 0s|did not finish in 1s"):
        await act.replicas(MIXED)


async def test_no_compose_binary_says_what_to_install(tmp_path):
    act = actuator(Stubs(tmp_path, "v2", binaries=()))
    with pytest.raises(ScalingError, match="neither 'docker compose' .* nor 'docker-compose' works here"):
        await act.replicas(MIXED)


async def test_a_group_without_a_service_lists_the_worker_services(tmp_path):
    act = actuator(Stubs(tmp_path, "v2"))
    group = WorkerGroup(name="llama", model="llama3-8b", replicas=1)
    with pytest.raises(ScalingError, match=r"labelled .*tessera.ai/model=llama3-8b.* worker-smollm2-cpu-decode"):
        await act.scale(group, 1)
    assert not (tmp_path / "argv.jsonl").exists()  # nothing was run


def test_every_desired_group_of_the_compose_deployment_has_exactly_one_service():
    services = worker_services([str(COMPOSE), str(NVIDIA)])
    act = ComposeActuator([str(COMPOSE), str(NVIDIA)])
    for group in load_desired(str(ROOT / "deploy/compose/desired.yaml")):
        assert act.service_for(group) in services
        assert act.service_for(group) == f"worker-{group.name}"
