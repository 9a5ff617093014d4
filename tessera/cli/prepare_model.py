"""``tessera prepare-model NAME``: build a built-in model folder now (it otherwise happens on first use)."""

from __future__ import annotations

import argparse
import logging


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2", help="smollm2 | tiny | tiny-moe")
    p.add_argument(
        "--no-weights",
        action="store_true",
        help="only what simulated workers read: tokenizer and config.json (tiny, tiny-moe: no torch needed)",
    )


def run_main(args: argparse.Namespace) -> int:
    from tessera.runtime.models.prepare import PrepareError, ensure_model
    from tessera.runtime.models.registry import resolve
    from tessera.runtime.telemetry.logging import setup_logging

    setup_logging("prepare-model")
    try:
        path = ensure_model(resolve(args.model), weights=not args.no_weights)
    except PrepareError as exc:
        logging.getLogger("tessera.runtime.models").error("%s", exc)
        return 2
    logging.getLogger("tessera.runtime.models").info("%s is ready at %s", args.model, path)
    print(path)
    return 0
