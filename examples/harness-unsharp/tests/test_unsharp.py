"""Contract tests for the `unsharp` adapter: registration, shape/dtype/channels, sharpening, parameters."""
from __future__ import annotations

from importlib.metadata import entry_points

import cv2
import numpy as np
import pytest

import harness_unsharp
from harness.errors import HarnessError
from harness.registry import Registry, Selection
from harness_unsharp import Unsharp


def test_hook_registers_the_adapter():
    reg = Registry(strict=True, selection=Selection())
    reg.add(harness_unsharp)
    assert reg.get("adapter", "unsharp") is Unsharp


def test_installed_package_is_found_through_its_entry_point():
    if not any(ep.value == "harness_unsharp" for ep in entry_points(group="harness")):
        pytest.skip("package not installed (pip install -e .)")
    reg = Registry(selection=Selection()).load_entry_points()
    assert reg.get("adapter", "unsharp") is Unsharp
    assert reg.entries[("adapter", "unsharp")].origin.startswith("harness-unsharp ")


@pytest.mark.parametrize("shape", [(40, 56), (40, 56, 3)])
def test_keeps_size_dtype_and_channels(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    adapter = Unsharp()
    out = adapter.adapt(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert [o.shape for o in adapter.adapt_batch([image, image[:20, :30]])] == [image.shape, image[:20, :30].shape]


def test_restores_edge_contrast_lost_to_blur():
    step = np.full((32, 32), 60, np.uint8)
    step[:, 16:] = 180
    blurred = cv2.GaussianBlur(step, (0, 0), 1.5)
    sharpened = Unsharp(amount=1.0).adapt(blurred)
    gradient = lambda im: np.abs(np.diff(im.astype(int), axis=1)).max()  # noqa: E731
    assert gradient(sharpened) > gradient(blurred)
    assert np.abs(sharpened.astype(int) - step).mean() < np.abs(blurred.astype(int) - step).mean()
    flat = np.full((16, 16), 100, np.uint8)
    assert np.array_equal(Unsharp().adapt(flat), flat)


def test_bad_and_unknown_params_are_refused():
    with pytest.raises(HarnessError, match="sigma"):
        Unsharp(sigma=0)
    with pytest.raises(HarnessError, match="unknown parameter"):
        Unsharp(radius=2)
