"""Whether `tessera sim` can draw its plots: matplotlib is the optional ``plot`` extra."""

from __future__ import annotations

import importlib.util

from tessera.runtime.distribution import install_hint


def plots_unavailable() -> str | None:
    """None when matplotlib is installed; otherwise the line telling the user how to get the plots.

    A control-plane install leaves matplotlib out (it is most of the install's size); the
    simulation itself needs only numpy, so its JSON is written either way.
    """
    if importlib.util.find_spec("matplotlib") is not None:
        return None
    return f"no plot: matplotlib is not installed ({install_hint('plot')} draws it; --no-plot skips it quietly)"
