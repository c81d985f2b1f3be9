"""Small checks shared by the public boundaries: numbers, lists of allowed values, devices."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import torch

#: The device types the library computes on.
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "mps")


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite real number (Python or numpy), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(text: str) -> int | None:
    """``text`` read as an int >= 1 (surrounding spaces allowed), or None when it is not one:
    the caller raises its own error, naming the option or variable and what it means."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def names(options: Iterable[Any]) -> str:
    """The allowed values as the error messages list them: ``'a', 'b', 'c'``."""
    return ", ".join(repr(o) for o in options)


def resolve_device(device: Any = None) -> "torch.device":
    """The torch device to compute on, checked to exist on this machine.

    Args:
        device: ``None`` (CUDA when available, else the CPU), or a device name or
            ``torch.device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N below the number of GPUs) or
            ``"mps"``.

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: an unknown device, or one this machine does not have (the message names the
            value and what this machine offers).
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = device if isinstance(device, torch.device) else None
    if isinstance(device, str):
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            pass
    if dev is None or dev.type not in DEVICE_TYPES:
        raise ValueError(f"Unknown device {device!r}; expected one of {_offered()}.")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.type == "cuda" and (gpus == 0 or (dev.index or 0) >= gpus):
        have = f"{gpus} CUDA device(s)" if gpus else "no CUDA device"
        raise ValueError(f"Device {device!r} is not available: this machine has {have}; expected "
                         f"one of {_offered()}.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {device!r} is not available on this machine; expected one of "
                         f"{_offered()}.")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise ValueError(f"Unknown device {device!r}; expected one of {_offered()}.")
    return dev


def _offered() -> str:
    """The device names this machine accepts, for error messages."""
    import torch

    offered = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        offered += ["cuda"] + [f"cuda:{i}" for i in range(count)]
    if torch.backends.mps.is_available():
        offered.append("mps")
    return names(offered)
