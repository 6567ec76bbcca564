"""The synthetic example slice: deterministic, framed and windowed like the training slices, lesions
where COVID-19 puts them, and every shipped model segments it as it does real slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice
from smallcovid.data.phantom import EXAMPLE_SIZE, FIELD_OF_VIEW_MM, level_to_hu, make_example, make_phantom
from smallcovid.data.preprocess import display_uint8

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@pytest.fixture(scope="module")
def phantom():
    """The app's Example."""
    return make_example()


def test_deterministic_per_seed():
    a, b, c = make_phantom(96, seed=3), make_phantom(96, seed=3), make_phantom(96, seed=4)
    np.testing.assert_array_equal(a.scan.pixels, b.scan.pixels)
    np.testing.assert_array_equal(a.types, b.types)
    assert not np.array_equal(a.scan.pixels, c.scan.pixels)


def test_is_an_hu_slice_with_spacing(phantom):
    s = phantom.scan
    assert isinstance(s, Slice) and s.units == "hu" and s.shape == (256, 256) == (EXAMPLE_SIZE,) * 2
    assert s.spacing == pytest.approx((FIELD_OF_VIEW_MM / 256,) * 2)
    assert s.pixels.dtype == np.float32 and np.isfinite(s.pixels).all()
    assert s.pixels.min() < -950 and s.pixels.max() > 500  # air in the airways and corners, bone in the spine
    assert level_to_hu(255.0) == pytest.approx(150.0) and level_to_hu(0.0) == pytest.approx(-1350.0)


def test_framed_like_the_training_crops(phantom):
    """The chest fills the frame: the lungs' box spans > 90 % of each side (so the predictor does not
    crop it, as it does not crop a training slice), the lungs lie one above the other."""
    from smallcovid.inference.framing import FULL_COVER

    ys, xs = np.nonzero(phantom.lungs > 0)
    h, w = (ys.max() - ys.min() + 1) / 256, (xs.max() - xs.min() + 1) / 256
    assert h > 0.9 and w > 0.9 and h * w >= FULL_COVER
    upper, lower = np.nonzero(phantom.lungs == 1)[0].mean(), np.nonzero(phantom.lungs == 2)[0].mean()
    assert upper < 0.45 * 256 < 0.55 * 256 < lower


def test_lung_window_levels_match_the_training_slices(phantom):
    """8-bit lung-window levels as measured on the 50 training JPEGs (p10 / median / p90)."""
    img = display_uint8(phantom.scan).astype(float)
    lung = phantom.lungs > 0
    parenchyma = np.percentile(img[lung & (phantom.types == 0)], [10, 50, 90])
    ggo = np.percentile(img[phantom.types == 1], [10, 50, 90])
    cons = np.percentile(img[phantom.types == 2], [10, 50, 90])
    assert 25 <= parenchyma[0] and 35 <= parenchyma[1] <= 60 and parenchyma[2] <= 100  # JPEGs: 30 / 46 / 72
    assert 70 <= ggo[0] and 95 <= ggo[1] <= 135 and ggo[2] <= 175  # JPEGs: 55 / 91 / 145
    assert 130 <= cons[0] and 155 <= cons[1] <= 200  # JPEGs: 100 / 166 / 199
    # vessels are seen through the ground glass (brighter than any haze), and outside it
    assert ((img > 185) & (phantom.types == 1)).any() and ((img > 185) & lung & (phantom.types == 0)).any()


def test_lesions_are_peripheral_subpleural_and_typed(phantom):
    assert phantom.mask.dtype == bool and phantom.types.dtype == np.uint8
    np.testing.assert_array_equal(phantom.mask, phantom.types > 0)
    assert set(np.unique(phantom.types)) == {0, 1, 2}
    lung = phantom.lungs > 0
    assert not (phantom.mask & ~lung).any()
    assert 0.05 < phantom.mask.sum() / lung.sum() < 0.42  # the training slices: p10 0.03, median 0.11, p90 0.42
    border = lung & ~ndimage.binary_erosion(lung, iterations=3)
    lab, n = ndimage.label(phantom.mask)
    big = [k for k in range(1, n + 1) if (lab == k).sum() >= 200]
    assert len(big) >= 2 and all(((lab == k) & border).any() for k in big)  # every lesion reaches the pleura
    assert sum((lab == k).sum() for k in big) > 0.95 * phantom.mask.sum()  # (a few small fragments aside)
    # consolidation at the back (the right of the turned slice), inside ground glass
    cols = np.nonzero(phantom.types == 2)[1]
    assert cols.mean() > 0.55 * 256
    halo = ndimage.binary_dilation(phantom.types == 2, iterations=2) & ~(phantom.types == 2) & lung
    assert (phantom.types[halo] == 1).mean() > 0.5


def test_says_it_is_synthetic_and_displays(phantom):
    assert "synthetic" in phantom.description.lower() and "not a patient" in phantom.description
    img = display_uint8(phantom.scan)
    assert img.dtype == np.uint8 and img.max() == 255 and img.min() < 40


@pytest.mark.parametrize("size", [64, 128, 512])
def test_other_sizes_keep_the_layout(size):
    ph = make_phantom(size, seed=1)
    assert ph.scan.shape == (size, size) and ph.mask.any() and (ph.types == 2).any() and (ph.lungs == 2).any()


@pytest.mark.parametrize("size", [10, 4096])
def test_rejects_absurd_sizes(size):
    with pytest.raises(SmallCovidError, match="between 64 and 1024"):
        make_phantom(size)


def test_every_shipped_model_segments_the_example(phantom):
    """The acceptance check for the Example: Dice >= 0.6 for every shipped model at the app's default
    threshold (the median of the current cards' thresholds, calibrated as the cards say)."""
    import torch

    from smallcovid.app.catalog import default_threshold
    from smallcovid.inference.metrics import dice
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.models import list_models

    names = [n for n in list_models() if (WEIGHTS / f"{n}.safetensors").is_file()]
    if not names:
        pytest.skip("no shipped weights in weights/")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        preds = {n: load_predictor(n, weights=WEIGHTS / f"{n}.safetensors", device="cpu") for n in names}
        thr = default_threshold([p.card for p in preds.values()])
        scores = {n: dice(p.predict_scan(phantom.scan).mask(thr), phantom.mask) for n, p in preds.items()}
    finally:
        torch.set_num_threads(threads)
    assert all(v >= 0.6 for v in scores.values()), (thr, scores)


@pytest.mark.slow
def test_shipped_models_on_other_seeds():
    """Not only the Example's seed: over six seeds each shipped model's median Dice is >= 0.6."""
    import torch

    from smallcovid.app.catalog import default_threshold
    from smallcovid.inference.metrics import dice
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.models import list_models

    names = [n for n in list_models() if (WEIGHTS / f"{n}.safetensors").is_file()]
    if not names:
        pytest.skip("no shipped weights in weights/")
    torch.set_num_threads(1)
    preds = {n: load_predictor(n, weights=WEIGHTS / f"{n}.safetensors", device="cpu") for n in names}
    thr = default_threshold([p.card for p in preds.values()])
    scores = {n: [] for n in names}
    for seed in range(6):
        ph = make_phantom(EXAMPLE_SIZE, seed=seed)
        for n, p in preds.items():
            scores[n].append(dice(p.predict_scan(ph.scan).mask(thr), ph.mask))
    medians = {n: float(np.median(v)) for n, v in scores.items()}
    assert all(v >= 0.6 for v in medians.values()), (thr, scores)
