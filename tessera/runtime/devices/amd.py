"""AMD GPUs: ROCm (HIP), as torch sees it; rocm-smi counts them without torch."""

from __future__ import annotations

from tessera.runtime.devices import _smi, _torch, accelerator_key

ORDER = 20
VISIBLE_DEVICES_ENV = "HIP_VISIBLE_DEVICES"


def present() -> bool:
    return _torch.gpu_runtime() == "hip"


def identify() -> tuple[str, int]:
    name, count = _torch.first_gpu()
    return accelerator_key(name), count


def count_devices() -> int:
    return _smi.count_lines(["rocm-smi", "--showid"], "GPU")
