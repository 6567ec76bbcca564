"""smallcovid.data.preprocess: HU windows, model-input scaling; and the tests' resizing helpers (tests/resizing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice
from smallcovid.data.preprocess import (
    DEFAULT_WINDOW,
    WINDOW_PRESETS,
    Window,
    apply_window,
    display_uint8,
    get_window,
    to_model_input,
)
from resizing import resize_image, resize_mask, resize_prob


def test_presets_and_lookup():
    assert DEFAULT_WINDOW == "lung" and get_window("lung") == Window(1500, -600)
    assert set(WINDOW_PRESETS) == {"lung", "mediastinum", "soft-tissue", "bone"}
    with pytest.raises(SmallCovidError, match="lung, mediastinum, soft-tissue, bone"):
        get_window("brain")
    for width in (0, -10, float("nan")):
        with pytest.raises(SmallCovidError):
            Window(width, 0)


def test_apply_window_maps_edges():
    w = Window(1500, -600)
    hu = np.array([-2000, -1350, -600, 150, 3000], np.float32)
    np.testing.assert_allclose(apply_window(hu, w), [0, 0, 0.5, 1, 1], atol=1e-6)
    assert apply_window(hu, w).dtype == np.float32


def test_to_model_input_by_units():
    hu = np.linspace(-1400, 200, 37 * 53, dtype=np.float32).reshape(37, 53)
    out = to_model_input(Slice(hu, "hu"))
    np.testing.assert_allclose(out, apply_window(hu, get_window("lung")))
    bone = to_model_input(Slice(hu, "hu"), get_window("bone"))
    assert not np.allclose(bone, out)
    disp = np.full((37, 53), 1.2, np.float32)
    assert to_model_input(Slice(disp, "display")).max() == 1.0
    raw = np.arange(37 * 53, dtype=np.float32).reshape(37, 53) * 7 + 100
    r = to_model_input(Slice(raw, "raw"))
    assert r.dtype == np.float32 and r.min() == 0 and r.max() == 1 and 0.4 < r.mean() < 0.6


@pytest.mark.parametrize("units", ["hu", "display", "raw"])
def test_constant_image_gives_finite_values(units):
    out = to_model_input(Slice(np.full((9, 11), 5.0), units))
    assert np.isfinite(out).all() and out.shape == (9, 11)
    if units == "raw":
        assert not out.any()


def test_raw_with_outliers_uses_robust_range():
    raw = np.zeros((40, 40), np.float32)
    raw[0, 0] = 1e6  # single hot pixel must not squash the image
    raw[10:20] = 100
    out = to_model_input(Slice(raw, "raw"))
    assert out[15, 5] == 1.0 and out[30, 5] == 0.0


def test_resize_image_shapes_and_antialias():
    x = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    assert resize_image(x, (64, 64)).shape == (64, 64)
    const = np.full((37, 53), 0.25, np.float32)
    np.testing.assert_allclose(resize_image(const, (20, 90)), 0.25, atol=1e-6)
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    small = resize_image(checker, (16, 16))  # antialiased: averages to ~0.5, no aliasing
    assert small.shape == (16, 16) and np.abs(small - 0.5).max() < 0.05
    with pytest.raises(SmallCovidError):
        resize_image(x, (0, 5))


def test_resize_mask_keeps_dtype_and_values():
    m = np.zeros((37, 53), np.uint8)
    m[10:20, 10:30] = 2
    m[0, 0] = 1
    up = resize_mask(m, (74, 106))
    assert up.dtype == np.uint8 and set(np.unique(up)) <= {0, 1, 2} and (up == 2).sum() == 4 * (m == 2).sum()
    b = resize_mask(m > 0, (256, 256))
    assert b.dtype == bool and b.shape == (256, 256)
    np.testing.assert_array_equal(resize_mask(up, (37, 53)), m)


def test_resize_prob_2d_and_3d():
    p = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    out = resize_prob(p, (37, 53))
    assert out.shape == (3, 37, 53) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert resize_prob(p[0], (16, 16)).shape == (16, 16)


def test_display_uint8_round_trips_8bit():
    g = np.random.default_rng(2).integers(0, 256, (37, 53), dtype=np.uint8)
    np.testing.assert_array_equal(display_uint8(Slice(g / 255.0, "display")), g)
    hu = display_uint8(Slice(np.full((9, 9), -600.0), "hu"))
    assert hu.dtype == np.uint8 and hu[0, 0] == 128
