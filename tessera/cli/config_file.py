"""``--config FILE``: a YAML file of a command's options, keyed by their long flag names.

``max-model-len: 4096`` (or ``max_model_len``) stands for ``--max-model-len 4096``. The file
sets defaults, so what the command line says wins. A key that is no option of the command is
refused by name: a typo must not be silently ignored.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml


class ConfigFileError(ValueError):
    pass


def _actions_by_flag(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        flag[2:]: action
        for action in parser._actions  # argparse has no public way to list options
        for flag in action.option_strings
        if flag.startswith("--")
    }


def _coerce(action: argparse.Action, key: str, value: Any) -> Any:
    """The value argparse would have stored for ``--key value``."""
    convert = action.type if callable(action.type) else None

    def one(item: Any) -> Any:
        if convert is not None and isinstance(item, str):
            item = convert(item)
        elif convert in (int, float) and isinstance(item, int | float) and not isinstance(item, bool):
            item = convert(item)
        if action.choices is not None and item not in action.choices:
            raise ConfigFileError(f"{key}: {item!r} is not one of {', '.join(map(str, action.choices))}")
        return item

    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigFileError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        return [one(v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, dict | list):
        raise ConfigFileError(f"{key}: expected a single value, got {value!r}")
    return one(value)


def config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The file's options as ``parser`` defaults (dest -> value); ConfigFileError names what is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of option names to values")
    actions = _actions_by_flag(parser)
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).removeprefix("--").replace("_", "-")
        action = actions.get(key)
        if action is None or key in ("config", "help"):
            raise ConfigFileError(f"{path}: unknown key {raw_key!r} (not an option of this command)")
        try:
            out[action.dest] = _coerce(action, str(raw_key), value)
        except (TypeError, ValueError) as exc:
            raise ConfigFileError(f"{path}: {exc}") from None
    return out
