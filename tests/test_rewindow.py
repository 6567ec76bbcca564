"""Re-windowing 8-bit slices shown in another display window (smallcovid.data.rewindow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.data.phantom import make_phantom
from smallcovid.data.rewindow import reference_levels, rewindow


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
