"""The installed distribution: its name on PyPI, its version, and how to ask for one of its extras.

The import packages (``tessera``, ``services``) and the ``tessera`` command keep their names; the
distribution is ``tessera-inference`` because ``tessera`` on PyPI is an unrelated project. Messages
that tell a user to install an extra name it from here, so they stay right if it is ever renamed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

NAME = "tessera-inference"


def installed_version() -> str:
    """The version pip installed (from the package metadata), or a placeholder in a bare checkout."""
    try:
        return version(NAME)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def install_hint(extra: str) -> str:
    """The command that adds ``extra`` (plot, cpu, gpu, k8s, dev) to this installation."""
    return f"pip install '{NAME}[{extra}]'"
