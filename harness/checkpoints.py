"""Saving checkpoints atomically and loading them under torch's ``weights_only`` unpickler: the one place
every plugin goes through, so there is one place to audit.

mmengine checkpoints carry a few non-tensor objects (a ``HistoryBuffer`` per logged scalar, numpy
arrays and scalars in it). Those exact classes are allow-listed; anything else in a pickle is refused,
so a checkpoint from an untrusted source cannot run code. Never fall back to ``weights_only=False``.
torch is imported on first use: plugin modules import this one while the registry loads.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray

from harness import atomic
from harness.errors import HarnessError

_installed = False


def safe_globals() -> list[Any]:
    allowed: list[Any] = [collections.OrderedDict, collections.defaultdict, np.ndarray, np.dtype,
                          _multiarray._reconstruct, _multiarray.scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "uint8", "bool")]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer

        allowed.append(HistoryBuffer)
    except ImportError:
        pass
    return allowed


def allow_mmengine_checkpoints() -> None:
    """Register the allow-list once per process (mmengine calls ``torch.load`` itself when resuming)."""
    import torch

    global _installed
    if not _installed:
        torch.serialization.add_safe_globals(safe_globals())
        _installed = True


def load(path: str | Path, map_location: Any = "cpu", mmengine: bool = False) -> Any:
    """Tensors and plain data only; ``mmengine`` also allows the classes of mmengine's checkpoints."""
    import torch

    if mmengine:
        allow_mmengine_checkpoints()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise HarnessError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises UnpicklingError with a long hint; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"{path}: refused to load checkpoint ({first})") from None


def save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file and rename: a kill mid-write leaves the previous file intact."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = atomic.mkstemp(path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
