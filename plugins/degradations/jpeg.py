"""``jpeg``: JPEG re-encode (``cv2.imencode``/``imdecode``), the blocking and ringing of a camera or
link that compresses hard. Grayscale is encoded as 1-channel JPEG and stays 2-D. Deterministic: ``rng``
is not used.

Qualities follow imagecorruptions (25, 18, 15, 10, 7) but start milder, since the smooth steel texture
already loses most of its fine grain by quality 25.

| severity | quality |
|---|---|
| 1 | 40 |
| 2 | 25 |
| 3 | 15 |
| 4 | 10 |
| 5 | 6 |

Override with ``qualities`` (five values in 1..100).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from harness.degrade import per_severity
from harness.errors import HarnessError
from harness.interfaces import Degradation


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else None
    if out is None:
        raise HarnessError(f"degradation 'jpeg': could not encode a {image.shape} image at quality {quality}")
    return out


class Jpeg(Degradation):
    """JPEG re-encode at a per-severity quality."""

    name = "jpeg"
    version = "1"
    summary = "JPEG re-encode (quality 40..6)"
    params = {"qualities": [40, 25, 15, 10, 6]}
    levels = {s: {"quality": v} for s, v in zip(Degradation.severities, params["qualities"])}

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.qualities = per_severity(self, "qualities", int, 1, 100)
        self.levels = {s: {"quality": v} for s, v in zip(self.severities, self.qualities)}

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        return jpeg_roundtrip(image, self.qualities[self.severities.index(severity)])
