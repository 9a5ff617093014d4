"""``tessera profile``: list, show, store and delete the placement profiles schedulers load from etcd."""

from __future__ import annotations

import argparse

from tessera.cli import etcd_documents


def add_arguments(p: argparse.ArgumentParser) -> None:
    etcd_documents.add_arguments(p, "profile")


def _name(text: bytes) -> str:
    from services.scheduler.profile_store import parse_profile

    return parse_profile(text).name  # ProfileError is a ValueError


def run_main(args: argparse.Namespace) -> int:
    from tessera.runtime.etcd import keys

    return etcd_documents.run(args, "profile", keys.PROFILES, _name, "scheduler")
