"""``tessera prepare-model NAME``: build a built-in model folder now (it otherwise happens on first use)."""

from __future__ import annotations

import argparse
import logging


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2", help="smollm2 | tiny")


def run_main(args: argparse.Namespace) -> int:
    from tessera.runtime.models.prepare import ensure_model
    from tessera.runtime.models.registry import resolve
    from tessera.runtime.telemetry.logging import setup_logging

    setup_logging("prepare-model")
    path = ensure_model(resolve(args.model))
    logging.getLogger("tessera.runtime.models").info("%s is ready at %s", args.model, path)
    print(path)
    return 0
