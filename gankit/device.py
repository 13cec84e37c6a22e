"""Pick the compute device at run time, never at import.

Notebooks and the CLI take a ``DEVICE`` setting: ``"auto"`` means the first of CUDA, Apple MPS
and CPU that works here; anything else (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is taken
literally and checked, so a typo fails with a message instead of a confusing CUDA error later.
"""
from __future__ import annotations

import torch


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """Return the ``torch.device`` to run on.

    Parameters
    ----------
    requested : str, torch.device or None
        ``"auto"`` (or None) picks cuda, then mps, then cpu. Otherwise a device string.

    Raises
    ------
    ValueError
        If the device string is malformed, or names a backend that is not available here.
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise ValueError(
            f"DEVICE={requested!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"DEVICE={requested!r} but CUDA is not available in this torch build "
                f"({torch.__version__}); use DEVICE='auto' or 'cpu', or run `gankit doctor`"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"DEVICE={requested!r} but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"DEVICE={requested!r} but Apple MPS is not available here")
    return device


def describe_device(device: torch.device) -> str:
    """One human line, e.g. ``cuda:0 (NVIDIA A100-SXM4-40GB, bf16)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        # is_bf16_supported() also counts slow emulation (True on a V100); native bf16 is sm_80+.
        bf16 = "bf16" if torch.cuda.get_device_capability(index) >= (8, 0) else "fp16"
        return f"cuda:{index} ({name}, {bf16})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
