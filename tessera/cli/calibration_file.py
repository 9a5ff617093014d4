"""The file ``tessera calibrate`` writes, as the ``--step-time-scale`` flags of ``tessera sim`` and
``tessera up`` read it: those flags take ``prefill=X,decode=Y`` or the path of such a file."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_calibration(path: str | Path) -> str:
    """The ``prefill=X,decode=Y`` text of a file ``tessera calibrate`` wrote."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    scale = doc.get("step_time_scale") if isinstance(doc, dict) else None
    if not isinstance(scale, dict):
        raise ValueError(f"{path}: no step_time_scale mapping (is it a tessera calibrate file?)")
    return ",".join(f"{k}={scale[k]}" for k in ("prefill", "decode") if k in scale)


def step_time_scale_text(value: str) -> str:
    """A ``--step-time-scale`` value: ``prefill=X,decode=Y`` as given, or read from a calibration file."""
    return read_calibration(value) if value and "=" not in value and Path(value).is_file() else value
