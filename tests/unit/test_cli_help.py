"""Every option of every `tessera` subcommand says what it does, and `--help` shows the defaults."""

from __future__ import annotations

import argparse

from tessera.cli import ALL, COMMANDS, build_parser


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_of_every_subcommand_has_help():
    parser, subparsers = build_parser(ALL)
    assert set(subparsers) == set(COMMANDS)
    seen, missing = 0, []
    for path, action in _walk(parser, "tessera"):
        seen += 1
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert seen > 150  # the whole tree was walked, nested subcommands (profile list, tenant add, ...) included
    assert missing == []


def test_help_shows_defaults():
    _, subparsers = build_parser("up")
    text = subparsers["up"].format_help()
    assert "--workers WORKERS     number of workers (default: 1)" in text
    assert "(default: None)" not in text  # an option without a default says nothing, not "None"
