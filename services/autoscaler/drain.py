"""Drain one worker before it goes: no new requests, then wait until its in-flight ones finish.

Used two ways, so scale-down loses no request on any actuator:

- in-process, by the local actuator before it stops a worker process;
- as a command, by Kubernetes' preStop hook on each worker pod
  (``python -m services.autoscaler.drain "$POD_IP:50051" --timeout 110``):
  the kubelet runs it before sending SIGTERM, inside
  terminationGracePeriodSeconds.

The worker's ``Drain`` RPC is idempotent and answers the requests still in
flight, so polling it is also how we watch the count reach zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

import grpc

from tessera.runtime.rpc import tls
from tessera.runtime.rpc.server import channel
from tessera.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger("tessera.autoscaler")

DEFAULT_TIMEOUT_S = 110.0
POLL_S = 0.25


async def drain_worker(address: str, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = POLL_S) -> int:
    """Ask the worker at ``address`` to drain and wait; return the requests still in flight (0: drained).

    A worker that cannot be reached counts as drained: it has nothing left to
    lose, and the caller removes it either way. One that refuses us (our
    certificate's role may not drain) does not: it is still serving.
    """
    deadline = time.monotonic() + timeout_s
    async with channel(address, "worker") as ch:
        stub = worker_pb2_grpc.WorkerStub(ch)
        in_flight = -1
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("worker %s still has %d request(s) in flight after %.0fs", address, in_flight, timeout_s)
                return max(in_flight, 0)
            try:
                reply = await stub.Drain(worker_pb2.DrainRequest(), timeout=min(5.0, left))
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    log.error("worker %s refused Drain: %s", address, exc.details())
                    return max(in_flight, 1)  # not drained: the caller must not treat it as gone
                log.info("worker %s did not answer Drain (%s): treating it as drained", address, exc.code().name)
                return 0
            if in_flight < 0:
                log.info("draining worker %s: %d request(s) in flight", address, reply.in_flight)
            in_flight = reply.in_flight
            if in_flight == 0:
                return 0
            await asyncio.sleep(min(poll_s, max(deadline - time.monotonic(), 0)))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", help="the worker's gRPC address, host:port")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for in-flight requests (keep it under the pod's grace period)",
    )
    tls.add_arguments(p)  # with TLS: a certificate naming the autoscaler or cli role


def run_main(args: argparse.Namespace) -> int:
    """``tessera drain ADDRESS``: 0 once drained, 1 if requests were still in flight at the timeout."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s drain %(message)s")
    try:
        tls.configure(args)
    except tls.TLSConfigError as exc:
        log.error("%s", exc)
        return 2
    left = asyncio.run(drain_worker(args.address, args.timeout))
    return 0 if left == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.autoscaler.drain", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
