"""What torch sees of CUDA or ROCm GPUs (torch is imported only here, and only when asked)."""

from __future__ import annotations


def gpu_runtime() -> str:
    """ "cuda", "hip" or "" (no GPU visible, or no torch)."""
    try:
        import torch
    except ImportError:
        return ""
    if not torch.cuda.is_available():
        return ""
    return "hip" if getattr(torch.version, "hip", None) else "cuda"


def first_gpu() -> tuple[str, int]:
    """(the first GPU's marketing name, how many are visible)."""
    import torch

    return torch.cuda.get_device_name(0), torch.cuda.device_count()
