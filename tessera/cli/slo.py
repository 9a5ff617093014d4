"""``tessera slo``: list, show, store and delete the per-model SLO policies the autoscaler plans from."""

from __future__ import annotations

import argparse

from tessera.cli import etcd_documents


def add_arguments(p: argparse.ArgumentParser) -> None:
    etcd_documents.add_arguments(p, "SLO policy")


def _name(text: bytes) -> str:
    from tessera.planning.slo_policy import parse_slo_policy

    return parse_slo_policy(text.decode()).served_model  # SloPolicyError is a ValueError


def run_main(args: argparse.Namespace) -> int:
    from tessera.runtime.etcd import keys

    return etcd_documents.run(args, "SLO policy", keys.SLO_POLICIES, _name, "autoscaler")
