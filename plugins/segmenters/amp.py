"""Mixed-precision inference shared by the built-in segmenters (their ``amp`` parameter)."""
from __future__ import annotations

import contextlib


def autocast(amp: bool, model):
    """float16 autocast around inference when asked for and the model is on a GPU; a no-op otherwise."""
    import torch

    device = next(model.parameters()).device
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
