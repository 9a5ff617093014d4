"""The ``tessera`` command: ``up``, ``status``, each service alone, ``bench``, ``prepare-model``.

Subcommands import their service lazily, so ``tessera router`` never loads
the worker's torch/vLLM stack.
"""

from __future__ import annotations

import argparse
import sys

from tessera.runtime.distribution import installed_version

COMMANDS = {
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
    "calibrate": ("tessera.cli.calibrate", "measure this machine's engine steps against the performance model"),
    "prepare-model": ("tessera.cli.prepare_model", "prepare a built-in model folder"),
}
ALL = "*"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is nothing to show (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _module(name: str):
    return __import__(COMMANDS[name][0], fromlist=["add_arguments", "run_main"])


def build_parser(chosen: str | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``tessera`` parser, with the options of ``chosen`` (or of every command, for ``ALL``).

    Only the subcommand asked for is built normally: importing every service's argument
    definitions would cost start-up time.
    """
    description = "Distributed LLM inference across mixed accelerators."
    parser = argparse.ArgumentParser(prog="tessera", description=description, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if chosen in (name, ALL):
            _module(name).add_arguments(p)
        subparsers[name] = p
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    from tessera.runtime.lifetime import end_with_launcher

    end_with_launcher()  # a process `tessera up` started (workers included) ends with it
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    parser, subparsers = build_parser(chosen)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        from tessera.cli.config_file import ConfigFileError, config_defaults

        p = subparsers[args.command]
        try:
            from_file = config_defaults(p, args.config)
        except ConfigFileError as exc:
            p.error(str(exc))
        p.set_defaults(**from_file)
        args = parser.parse_args(argv)  # again: the command line wins over the file
        args.config_keys = frozenset(from_file)  # which values came from the file
    return _module(args.command).run_main(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
