"""Where models run: a device spelled "auto", "cpu", "cuda" or "cuda:k", checked up front.

``"auto"`` is the first CUDA device when torch sees one, else the CPU. Each process resolves the
name itself (a Dask or pool worker picks its own device from the same spelling).
"""

from __future__ import annotations

import torch

#: The spellings a user may give.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:<k>")


def check_device_name(device: str | None, where: str = "device") -> None:
    """Raise ValueError unless ``device`` is None or one of :data:`DEVICE_CHOICES` (spelling
    only: whether that GPU exists is checked where the model is moved)."""
    if device is None:
        return
    name = str(device).strip().lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return
    raise ValueError(f"{where}: {device!r} is not one of {DEVICE_CHOICES}")


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """The torch device for ``device``, None for None (leave the model where it is).

    Raises ValueError for an unknown spelling or a CUDA device this process cannot see.
    """
    if device is None or isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name[5:]) if ":" in name else 0
        if index >= count:
            raise ValueError(
                f"device {device!r}: this process sees {count} CUDA device(s); use 'auto' or "
                "'cpu', or run where the GPU is visible (CUDA_VISIBLE_DEVICES)"
            )
        return torch.device(name)
    check_device_name(device)
    return None  # unreachable: check_device_name raised
