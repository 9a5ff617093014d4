"""NVIDIA GPUs: CUDA, as torch sees it; nvidia-smi counts them without torch."""

from __future__ import annotations

from tessera.runtime.devices import _smi, _torch, accelerator_key

ORDER = 20
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def present() -> bool:
    return _torch.gpu_runtime() == "cuda"


def identify() -> tuple[str, int]:
    name, count = _torch.first_gpu()
    return accelerator_key(name), count


def count_devices() -> int:
    return _smi.count_lines(["nvidia-smi", "-L"], "GPU")
