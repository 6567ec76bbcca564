"""Re-windowing 8-bit slices shown in another display window (smallcovid.data.rewindow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.data.phantom import make_phantom
from smallcovid.data.preprocess import display_rewindowed, to_model_input
from smallcovid.data.rewindow import TRAINING_WINDOW, reference_levels, rewindow, rewindow_image
from smallcovid.io import Slice


def _window(hu: np.ndarray, width: float, level: float) -> torch.Tensor:
    return torch.from_numpy(np.clip((hu - (level - width / 2)) / width, 0, 1).astype(np.float32))[None]


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(size, seed=seed) for size, seed in ((97, 1), (113, 2), (101, 3), (97, 4), (109, 5))]


def _stack(phantoms, width, level, size=97):
    out = [torch.nn.functional.interpolate(_window(p.scan.pixels, width, level)[None], size=(size, size),
                                           mode="bilinear", align_corners=False)[0] for p in phantoms]
    return torch.stack(out)


@pytest.mark.parametrize("width,level", [(3000, -200), (3500, -100), (4000, 0)])
def test_a_wider_window_comes_back_to_the_reference_levels(phantoms, width, level):
    ref = reference_levels(_stack(phantoms[:3], 1500, -600))
    lung_window = _stack(phantoms[3:], 1500, -600)
    wide = _stack(phantoms[3:], width, level)
    back, mapped = rewindow(wide, ref)
    assert mapped.all()
    before = (wide - lung_window).abs()
    after = (back - lung_window).abs()
    lungs = torch.stack([torch.nn.functional.interpolate(torch.from_numpy((p.lungs > 0).astype(np.float32))[None, None],
                                                         size=(97, 97), mode="nearest")[0] for p in phantoms[3:]]) > 0
    # Inside the lungs (parenchyma and lesions), where a model looks, the levels come back.
    assert float(after[lungs].mean()) < 0.04 < float(before[lungs].mean())


def test_slices_already_in_the_reference_window_are_left_alone(phantoms):
    ref = reference_levels(_stack(phantoms[:3], 1500, -600))
    same = _stack(phantoms[3:], 1500, -600)
    back, mapped = rewindow(same, ref)
    assert not mapped.any() and torch.equal(back, same)
    # Only a window clearly wider is mapped: in W2000/L-500 bone and tissue still reach
    # near white, and the slice is left as it is.
    slightly, mapped = rewindow(_stack(phantoms[3:], 2000, -500), ref)
    assert not mapped.any()
    with pytest.raises(SmallCovidError, match="at least one image"):
        reference_levels(torch.zeros(0, 1, 8, 8))


def test_an_8bit_export_in_a_wide_window_reaches_the_model_in_the_training_window(phantoms):
    p = phantoms[3]
    lung_window = _window(p.scan.pixels, 1500, -600)[0].numpy()
    wide = Slice(_window(p.scan.pixels, 3500, -100)[0].numpy(), "display", p.scan.spacing)
    assert display_rewindowed(wide) and not display_rewindowed(Slice(lung_window, "display", p.scan.spacing))
    x = to_model_input(wide)
    lungs = p.lungs > 0
    assert np.abs(x - lung_window)[lungs].mean() < 0.04 < np.abs(wide.pixels - lung_window)[lungs].mean()
    assert np.array_equal(to_model_input(wide, rewindow=False), wide.pixels)
    # A dense crop without soft tissue in view, its brightest part consolidation (+30 HU: 0.92
    # in the lung window), is not taken for a wide window. (One with nothing denser than
    # ground-glass, -300 HU, would be: its histogram is a wide window's.)
    crop = np.full((60, 60), 0.17, np.float32)
    crop[20:50, 10:50] = 0.92
    assert not rewindow_image(crop)[1]
    crop[20:50, 10:50] = 0.70
    assert rewindow_image(crop)[1]


def test_the_training_window_constant_is_the_labeled_slices_window():
    import os
    from pathlib import Path

    from smallcovid.data.dataset import load_dataset
    from smallcovid.training.tensors import to_tensors

    data = Path(os.environ.get("SMALLCOVID_DATA_DIR")
                or Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-semiseg" / "train")
    if not data.is_dir():
        pytest.skip("labeled slices not available (../shared/data/covid-semiseg/train or SMALLCOVID_DATA_DIR)")
    ref = reference_levels(to_tensors(load_dataset(data), 192)[0])
    assert ref.lung == pytest.approx(TRAINING_WINDOW.lung, abs=0.011)
    assert ref.tissue == pytest.approx(TRAINING_WINDOW.tissue, abs=0.011)
    assert ref.p99_min == pytest.approx(TRAINING_WINDOW.p99_min, abs=0.002)


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("width,level", [(3500, -100), (2500, -500)])
def test_a_whole_field_of_view_in_a_wide_window_comes_back_too(seed, width, level):
    # Around a whole body the outside air is as grey as the lungs in a wide window and far
    # larger; the levels come from the dark pixels the body encloses.
    from smallcovid.data.scanner import scanner_frame

    ph = make_phantom(160, seed=seed)
    img8 = np.round(np.clip((ph.scan.pixels + 1350) / 1500, 0, 1) * 255).astype(np.uint8)
    frame = scanner_frame(img8, ph.mask, seed=seed, size=256)
    lung_window = np.clip((frame.hu + 1350) / 1500, 0, 1).astype(np.float32)
    wide = np.clip((frame.hu - (level - width / 2)) / width, 0, 1).astype(np.float32)
    back, mapped = rewindow_image(wide)
    assert mapped and not rewindow_image(lung_window)[1]
    lesion = frame.lesion
    assert np.abs(back - lung_window)[lesion].mean() < 0.04 < np.abs(wide - lung_window)[lesion].mean()
