"""The ``tessera`` command: ``up``, ``status``, each service alone, ``bench``, ``prepare-model``.

Subcommands import their service lazily, so ``tessera router`` never loads
the worker's torch/vLLM stack.
"""

from __future__ import annotations

import argparse
import sys

from tessera.runtime.distribution import installed_version


def _service(module: str, prog: str):
    def add(p: argparse.ArgumentParser) -> None:
        __import__(module, fromlist=["add_arguments"]).add_arguments(p)

    def run(args: argparse.Namespace) -> int:
        return __import__(module, fromlist=["run_main"]).run_main(args)

    return add, run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="tessera", description="Distributed LLM inference across mixed accelerators.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "up": ("tessera.cli.up", "start etcd, scheduler, autoscaler, workers and router in the foreground"),
        "status": ("tessera.cli.status", "show the workers etcd knows, with their load"),
        "drain": ("services.autoscaler.drain", "drain one worker: no new requests, wait for those in flight"),
        "router": ("services.router.main", "run the router (OpenAI HTTP + gRPC)"),
        "scheduler": ("services.scheduler.main", "run a scheduler"),
        "autoscaler": ("services.autoscaler.main", "run an autoscaler"),
        "worker": ("services.worker.main", "run one worker (one engine)"),
        "bench": ("tessera.bench.cli", "benchmark an OpenAI-compatible endpoint"),
        "sim": ("tessera.cli.sim", "simulate a workload on a cluster of catalog accelerators, in virtual time"),
        "profile": ("tessera.cli.profile", "list, show or store placement profiles (hot-reloaded by schedulers)"),
        "slo": ("tessera.cli.slo", "list, show or store per-model SLO policies (the autoscaler plans from them)"),
        "tenant": ("tessera.cli.tenant", "list, show, store or delete tenants: API keys, models, rate limits"),
        "prepare-model": ("tessera.cli.prepare_model", "prepare a built-in model folder"),
    }
    # Only build the parser of the subcommand asked for: importing every
    # service's argument definitions would cost start-up time.
    chosen = argv[0] if argv and argv[0] in commands else None
    for name, (module, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            add, _ = _service(module, name)
            add(p)
    args = parser.parse_args(argv)
    _, run = _service(commands[args.command][0], args.command)
    return run(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
