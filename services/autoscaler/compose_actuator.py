"""Scale the worker services of ``deploy/compose/`` with docker compose.

Each desired group maps to the one worker service of the compose file(s)
whose labels match it (:mod:`services.autoscaler.worker_labels`), and its
replica count is that service's container count:

- read: ``ps -q SERVICE`` (v1) or ``ps -a -q SERVICE`` (v2) - every container
  of the service, running or stopped, which is what ``--scale`` counts too;
- write: ``up -d --no-recreate --no-build --no-deps --timeout T --scale SERVICE=N SERVICE``:
  only that service, never recreating running workers, never building an
  image from inside the autoscaler's container (paths there differ from the
  host's), never touching etcd or the router.

Draining on scale-down: compose stops the containers it removes with SIGTERM
and waits ``--timeout`` seconds (the file's ``stop_grace_period`` says the
same) before SIGKILL. The worker drains on SIGTERM: it leaves etcd at once,
so schedulers stop placing there, and finishes its in-flight requests.

Both the v2 plugin (``docker compose``) and the v1 Python tool
(``docker-compose`` 1.29, what Debian ships) work; they differ only in ``ps``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.autoscaler import worker_labels
from services.autoscaler.actuator import ReplicaCountActuator, ScalingError
from services.autoscaler.desired import WorkerGroup

log = logging.getLogger("tessera.autoscaler")

DEFAULT_FILE = "deploy/compose/docker-compose.yaml"
DEFAULT_PROJECT = "tessera"
STOP_TIMEOUT_S = 150  # matches the worker services' stop_grace_period
CALL_TIMEOUT_S = 600.0  # a scale-down waits for drains; pulling an image can take minutes


@dataclass(frozen=True)
class ComposeCommand:
    """How to call compose here: ``("docker", "compose")`` (v2) or ``("docker-compose",)`` (v1 or v2)."""

    argv: tuple[str, ...]
    v1: bool


async def _run(argv: Sequence[str], env: Mapping[str, str], timeout_s: float) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(env)
        )
    except FileNotFoundError:
        raise ScalingError(f"{argv[0]} not found on PATH") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ScalingError(f"{' '.join(argv)} did not finish in {timeout_s:.0f}s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def detect_compose(env: Mapping[str, str] | None = None) -> ComposeCommand:
    """The v2 plugin if the docker CLI has it, else a ``docker-compose`` binary (its version decides v1)."""
    env = dict(os.environ if env is None else env)
    for argv in (("docker", "compose"), ("docker-compose",)):
        try:
            code, out, _ = await _run([*argv, "version", "--short"], env, 30.0)
        except ScalingError:
            continue
        if code == 0:
            return ComposeCommand(argv, v1=argv == ("docker-compose",) and out.strip().lstrip("v").startswith("1."))
    raise ScalingError(
        "neither 'docker compose' (the v2 plugin) nor 'docker-compose' works here: "
        "install one (Debian: apt-get install docker-compose) or pass the command explicitly"
    )


def worker_services(files: Sequence[str]) -> dict[str, dict[str, str]]:
    """Worker service name -> its labels, merged over the files as compose merges them (later wins)."""
    labels: dict[str, dict[str, str]] = {}
    for path in files:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ScalingError(f"cannot read compose file {path}: {exc}") from None
        for name, service in (doc.get("services") or {}).items():
            labels.setdefault(name, {}).update(_labels(service or {}))
    return {n: lab for n, lab in labels.items() if lab.get(worker_labels.COMPONENT) == worker_labels.WORKER}


def _labels(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("labels") or {}
    if isinstance(raw, list):  # the list form: ["key=value", ...]
        raw = dict(item.partition("=")[::2] for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


class ComposeActuator(ReplicaCountActuator):
    """Worker groups as docker compose services, scaled in place."""

    kind = "compose"

    def __init__(
        self,
        files: Sequence[str] = (DEFAULT_FILE,),
        project: str = DEFAULT_PROJECT,
        command: ComposeCommand | None = None,
        stop_timeout_s: int = STOP_TIMEOUT_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.files = list(files)
        self.project = project
        self.command = command
        self.stop_timeout_s = stop_timeout_s
        self.call_timeout_s = call_timeout_s
        self.env = dict(os.environ if env is None else env)
        self._lock = asyncio.Lock()  # one compose call at a time: they race on the same project otherwise

    def service_for(self, group: WorkerGroup) -> str:
        """The one worker service labelled for ``group``; a clear error for none or several."""
        services = worker_services(self.files)
        found = [n for n, lab in services.items() if worker_labels.matches(lab, group)]
        wanted = worker_labels.selector_string(worker_labels.selector(group))
        return worker_labels.only_match(
            found,
            group,
            f"no worker service in {', '.join(self.files)} is labelled "
            f"{wanted} (worker services: {', '.join(sorted(services)) or 'none'})",
        )

    async def _command(self) -> ComposeCommand:
        if self.command is None:
            self.command = await detect_compose(self.env)
        return self.command

    async def _compose(self, *args: str) -> str:
        argv = [*(await self._command()).argv, "--project-name", self.project]
        for f in self.files:
            argv += ["--file", f]
        argv += args
        code, out, err = await _run(argv, self.env, self.call_timeout_s)
        if code != 0:
            tail = (err.strip() or out.strip())[-2000:]
            raise ScalingError(f"{' '.join(argv)} exited with {code}: {tail}")
        return out

    async def replicas(self, group: WorkerGroup) -> int:
        service = self.service_for(group)
        async with self._lock:
            # v1's ps lists stopped containers by default; v2's needs -a for them.
            every = [] if (await self._command()).v1 else ["-a"]
            out = await self._compose("ps", *every, "-q", service)
        return sum(1 for line in out.splitlines() if line.strip())

    async def scale(self, group: WorkerGroup, replicas: int) -> None:
        if replicas < 0:
            raise ScalingError(f"group {group.name}: replicas must be >= 0, not {replicas}")
        service = self.service_for(group)
        async with self._lock:
            log.info("compose: %s -> %d replica(s)", service, replicas)
            await self._compose(
                "up",
                "-d",
                "--no-recreate",
                "--no-build",
                "--no-deps",
                "--timeout",
                str(self.stop_timeout_s),
                "--scale",
                f"{service}={replicas}",
                service,
            )

    async def close(self) -> None:
        """No connection is held: each call is one compose process."""
