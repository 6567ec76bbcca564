"""The synthetic example slice: deterministic, CT-like HU values, lesions inside the lungs."""

from __future__ import annotations

import numpy as np
import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice
from smallcovid.data.phantom import FIELD_OF_VIEW_MM, make_phantom
from smallcovid.data.preprocess import display_uint8


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(128, seed=0)


def test_deterministic_per_seed():
    a, b, c = make_phantom(96, seed=3), make_phantom(96, seed=3), make_phantom(96, seed=4)
    np.testing.assert_array_equal(a.scan.pixels, b.scan.pixels)
    np.testing.assert_array_equal(a.types, b.types)
    assert not np.array_equal(a.scan.pixels, c.scan.pixels)


def test_is_an_hu_slice_with_spacing(phantom):
    s = phantom.scan
    assert isinstance(s, Slice) and s.units == "hu" and s.shape == (128, 128)
    assert s.spacing == pytest.approx((FIELD_OF_VIEW_MM / 128,) * 2)
    assert s.pixels.dtype == np.float32 and np.isfinite(s.pixels).all()
    assert s.pixels.min() < -950 and s.pixels.max() > 500  # air outside, bone in the spine


def test_lesion_types_and_densities(phantom):
    assert phantom.mask.dtype == bool and phantom.types.dtype == np.uint8
    np.testing.assert_array_equal(phantom.mask, phantom.types > 0)
    assert set(np.unique(phantom.types)) == {0, 1, 2}
    hu = phantom.scan.pixels
    lung_bg = np.median(hu[(hu < -700) & (hu > -950)])
    assert -900 < lung_bg < -780
    assert -600 < np.median(hu[phantom.types == 1]) < -400  # ground-glass
    assert -100 < np.median(hu[phantom.types == 2]) < 100  # consolidation
    assert 0.01 < phantom.mask.mean() < 0.2


def test_says_it_is_synthetic_and_displays(phantom):
    assert "synthetic" in phantom.description.lower() and "not a patient" in phantom.description
    img = display_uint8(phantom.scan)
    assert img.dtype == np.uint8 and img.max() == 255 and img.min() < 70  # lung window: air -1000 HU -> 59


@pytest.mark.parametrize("size", [10, 4096])
def test_rejects_absurd_sizes(size):
    with pytest.raises(SmallCovidError, match="between 64 and 1024"):
        make_phantom(size)
