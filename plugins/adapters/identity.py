"""The "no adaptation" baseline every other adapter is compared against."""
from __future__ import annotations

import numpy as np

from harness.interfaces import Adapter


class Identity(Adapter):
    """Returns the image unchanged: the no-adaptation row of every leaderboard."""

    name = "identity"
    version = "1"

    def adapt(self, image: np.ndarray) -> np.ndarray:
        return image.copy()
