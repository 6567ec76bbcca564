"""Framing (smallcovid.inference.framing): canonical model input, crop to the lungs, paste back.

Unit tests use stand-in predictors that record what the model is shown; the end-to-end
checks use the shipped SmallCovid-Net, and the full-field-of-view Dice check uses the
shared labeled slices (skipped where ../shared is absent).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from smallcovid.data.preprocess import MODEL_WINDOW, apply_window, get_window, input_window
from smallcovid.inference import framing
from smallcovid.inference.cropmaps import paste_maps
from smallcovid.inference.framing import Box, crop_box, segment_slice, slice_box, volume_boxes
from smallcovid.inference.predictor import ProbMaps
from smallcovid.io import Slice, Volume

REPO = Path(__file__).resolve().parent.parent


class Recorder:
    """Stands in for a Predictor: lesion probability = the input intensity; remembers every input."""

    def __init__(self, card: dict | None = None) -> None:
        self.card = card or {}
        self.seen: list[np.ndarray] = []

    def predict_images(self, images, batch_size: int = 8) -> list[ProbMaps]:
        out = []
        for im in images:
            self.seen.append(np.array(im))
            p = np.asarray(im, np.float32)
            types = np.stack([1 - p, p * 0.6, p * 0.4]).astype(np.float32)
            out.append(ProbMaps(lesion=p, types=types, seconds=0.0))
        return out


def measure_fov():
    spec = importlib.util.spec_from_file_location("measure_fov", REPO / "scripts" / "measure_fov.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def full_field_slice(seed: int = 0, index: int = 1) -> Slice:
    """A full-field-of-view HU slice (air, body, two lungs with ground-glass blobs, table), 256x256."""
    from smallcovid.cli.benchvolume import synthetic_ct

    return Slice(synthetic_ct(3, 256, seed=seed)[index].astype(np.float32), "hu", (350 / 256, 350 / 256), "ct")


@pytest.fixture(scope="module")
def phantom():
    """Stands for the old full-field phantom: ``.scan`` is a full field of view."""
    class FullField:
        scan = full_field_slice()

    return FullField()


@pytest.fixture(scope="module")
def net():
    import torch

    from smallcovid.inference.predictor import load_predictor

    torch.set_num_threads(1)
    return load_predictor("smallcovid-net", device="cpu")


# ------------------------------------------------------------------ canonical model input

def test_display_window_does_not_change_the_prediction(net, phantom):
    from smallcovid.inference.volume import predict_volume

    a = net.predict_scan(phantom.scan, get_window("mediastinum"))
    b = net.predict_scan(phantom.scan, get_window("lung"))
    c = net.predict_scan(phantom.scan)
    np.testing.assert_array_equal(a.lesion, b.lesion)
    np.testing.assert_array_equal(a.types, c.types)
    vol = Volume(np.stack([phantom.scan.pixels] * 2), "hu", (2.0, *phantom.scan.spacing))
    va = predict_volume(net, vol, get_window("bone")).levels
    vb = predict_volume(net, vol, get_window("lung")).levels
    np.testing.assert_array_equal(va, vb)


def test_hu_reaches_the_model_in_the_cards_window(phantom):
    default = Recorder()
    segment_slice(default, phantom.scan)
    box = slice_box(phantom.scan, framing.lungs_for(phantom.scan))
    expected = apply_window(phantom.scan.pixels, MODEL_WINDOW)[box.slices]
    np.testing.assert_array_equal(default.seen[0], expected)
    soft = Recorder({"input_window": {"width": 400, "level": 40}})
    segment_slice(soft, phantom.scan)
    np.testing.assert_array_equal(soft.seen[0], apply_window(phantom.scan.pixels, get_window("soft-tissue"))[box.slices])
    assert input_window(None) == MODEL_WINDOW == input_window({"model": "x"})


@pytest.mark.parametrize("spec", [{"width": 0, "level": 0}, {"level": 40}, "lung", {"width": "wide", "level": 1}])
def test_bad_input_window_in_a_card_is_named(spec):
    from smallcovid.core.errors import SmallCovidError

    with pytest.raises(SmallCovidError, match="width"):
        input_window({"input_window": spec})


# ------------------------------------------------------------------ crop boxes

def test_crop_box_rules():
    m = np.zeros((100, 120), bool)
    assert crop_box(m) is None                                   # no lungs
    m[30:60, 40:90] = True
    assert crop_box(m) == Box(30, 60, 40, 90)                    # margin 0: the box itself
    assert crop_box(m, margin=0.1) == Box(27, 63, 35, 95)        # 10 % of 30 rows / 50 cols a side
    full = np.ones((100, 120), bool)
    full[0] = False
    assert crop_box(full) is None                                # covers the frame: already cropped
    tiny = np.zeros((100, 120), bool)
    tiny[50:52, 50:60] = True
    assert crop_box(tiny) is None                                # < 1 % of the frame: not trusted
    edge = np.zeros((400, 400), bool)
    edge[0:70, 0:70] = True
    assert crop_box(edge, margin=0.5) == Box(0, 105, 0, 105)     # clipped to the image
    with pytest.raises(ValueError, match="margin"):
        crop_box(m, margin=-0.1)
    with pytest.raises(ValueError, match="shape"):
        crop_box(np.zeros(5))
    assert Box(1, 5, 2, 9).shape == (4, 7) and Box(1, 5, 2, 9).to_list() == [1, 5, 2, 9]


def test_volume_boxes_per_slice_and_union():
    hu = np.full((3, 64, 64), 40.0, np.float32)
    lungs = np.zeros((3, 64, 64), np.uint8)
    hu[0, 10:30, 10:40] = -850
    lungs[0, 10:30, 10:40] = 1
    hu[1, 20:40, 5:25] = -850
    lungs[1, 20:40, 5:25] = 2
    lungs[1, 40:50, 5:25] = 2      # tissue-dense lung: labelled, but not aerated: outside the box
    vol = Volume(hu, "hu")
    per = volume_boxes(vol, lungs)
    assert per == [Box(10, 30, 10, 40), Box(20, 40, 5, 25), Box(10, 40, 5, 40)]  # slice 2: the union
    assert volume_boxes(vol, lungs, "union") == [Box(10, 40, 5, 40)] * 3
    with pytest.raises(ValueError, match="framing"):
        volume_boxes(vol, lungs, "body")
    with pytest.raises(ValueError, match="shape"):
        volume_boxes(vol, lungs[:2])


def test_paste_maps_puts_zeros_outside():
    m = ProbMaps(lesion=np.full((2, 3), 0.9, np.float32), types=np.full((3, 2, 3), 1 / 3, np.float32), seconds=0.1)
    out = paste_maps(m, Box(1, 3, 2, 5), (4, 6))
    assert out.lesion.shape == (4, 6) and out.types.shape == (3, 4, 6) and out.seconds == 0.1
    assert out.lesion.sum() == pytest.approx(0.9 * 6) and (out.lesion[1:3, 2:5] == np.float32(0.9)).all()
    np.testing.assert_array_equal(out.types[:, 0, 0], [1, 0, 0])
    assert paste_maps(m, None, (2, 3)) is m


# ------------------------------------------------------------------ a full field of view

def test_full_field_is_cropped_and_pasted_back(phantom):
    rec = Recorder()
    maps, lungs = segment_slice(rec, phantom.scan)
    h, w = phantom.scan.shape
    box = slice_box(phantom.scan, lungs)
    assert box is not None and box.shape[0] < 0.8 * h and box.shape[1] < 0.9 * w
    assert rec.seen[0].shape == box.shape                       # the model saw the crop ...
    assert maps.lesion.shape == (h, w) and maps.types.shape == (3, h, w)  # ... and maps come at full size
    outside = np.ones((h, w), bool)
    outside[box.slices] = False
    assert not maps.lesion[outside].any() and (maps.kind[outside] == 1).all()
    assert lungs.dtype == np.uint8 and set(np.unique(lungs)) == {0, 1, 2}
    # the ground-glass blobs (-500 HU) are all inside the box
    ggo = (phantom.scan.pixels > -560) & (phantom.scan.pixels < -440)
    assert ggo.sum() > 100 and ggo[box.slices].sum() == ggo.sum()


def test_cropped_inputs_are_unchanged(net):
    from smallcovid.inference.lesionzone import grown_lungs

    """A crop that the lungs fill (like the training JPEGs) runs whole: bit-identical to no framing."""
    full = full_field_slice(seed=2)
    box = slice_box(full, framing.lungs_for(full))
    crop = Slice(full.pixels[box.slices], "hu", full.spacing)
    assert slice_box(crop, framing.lungs_for(crop)) is None
    framed = net.predict_scan(crop)
    whole = net.predict_images([apply_window(crop.pixels, MODEL_WINDOW)])[0]
    # Unchanged inside the grown lungs; nothing outside them.
    zone = grown_lungs(framing.lungs_for(crop), crop.spacing)
    assert 0 < zone.mean() < 1
    np.testing.assert_array_equal(framed.lesion, np.where(zone, whole.lesion, 0))
    disp = Slice(apply_window(crop.pixels, MODEL_WINDOW), "display")  # the same crop as an 8-bit-like image
    zone = grown_lungs(framing.lungs_for(disp), disp.spacing)
    np.testing.assert_array_equal(net.predict_scan(disp).lesion, np.where(zone, whole.lesion, 0))


# ------------------------------------------------------------------ labeled data

def shared_data() -> Path:
    try:
        return measure_fov().find_data()
    except FileNotFoundError:
        pytest.skip("labeled slices not available (../shared/data/covid-semiseg/train or SMALLCOVID_DATA_DIR)")


def test_training_slices_are_not_cropped():
    from smallcovid.inference.lungs import lung_masks_display

    mf = measure_fov()
    for _, img, _ in mf.load(shared_data(), 10):
        scan = Slice(img / 255.0, "display")
        assert slice_box(scan, lung_masks_display(img)) is None


def test_full_field_dice_matches_the_cropped_dice(net):
    """8 labeled slices, each centred in a 512x512 HU frame: framed Dice within 0.03 of the crop's."""
    mf = measure_fov()
    data = mf.load(shared_data(), 8)
    t = net.threshold
    crop, full, whole = [], [], []
    for _, img, mask in data:
        crop.append(mf.dice(net.predict_scan(Slice(img / 255.0, "display")).mask(t), mask))
        hu, place = mf.full_frame(img)
        gt = np.zeros(hu.shape, bool)
        gt[place] = mask
        full.append(mf.dice(net.predict_scan(Slice(hu, "hu")).mask(t), gt))
        whole.append(mf.dice(net.predict_images([apply_window(hu, MODEL_WINDOW)])[0].mask(t), gt))
    assert abs(np.mean(full) - np.mean(crop)) <= 0.03, (np.mean(full), np.mean(crop))
    assert np.mean(whole) < np.mean(full) - 0.03  # without framing the frame costs Dice (the reason for all this)


# ------------------------------------------------------------------ zoom-out augmentation

def _batch(n: int = 6, s: int = 48):
    import torch

    g = torch.Generator().manual_seed(0)
    images = 0.3 + 0.7 * torch.rand(n, 1, s, s, generator=g)
    masks = torch.zeros(n, 1, s, s)
    masks[:, :, 10:30, 12:40] = 1
    types = (masks[:, 0] * 2).long()
    types[:, 10:20, 12:40] = torch.where(masks[:, 0, 10:20, 12:40] > 0, 1, 0)
    types[0, 10:14, 12:20] = -100                          # unlabeled type inside the lesion
    return images, masks, types


def test_zoom_out_off_by_default_draws_nothing():
    import torch

    from smallcovid.data.augment import AugmentConfig, augment_batch

    assert AugmentConfig().zoom_out == 0.0
    images, masks, types = _batch()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = augment_batch(images, masks, types, AugmentConfig(), g1)
    b = augment_batch(images, masks, types, AugmentConfig(zoom_out=0.0), g2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(g1.get_state(), g2.get_state())    # same random stream: old runs stay bit-identical
    with pytest.raises(ValueError, match="zoom_out"):
        AugmentConfig(zoom_out=1.0)


def test_zoom_out_pads_with_the_background():
    import torch

    from smallcovid.data.augment import AugmentConfig, augment_batch

    cfg = AugmentConfig(flip=False, rot90=False, scale=0.0, gain=0.0, bias=0.0, gamma=0.0, zoom_out=0.4)
    images, masks, types = _batch(n=12)
    x, m, t = augment_batch(images, masks, types, cfg, torch.Generator().manual_seed(1))
    y = augment_batch(images, masks, types, cfg, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip((x, m, t), y))  # a pure function of the seed
    assert x.shape == images.shape and m.shape == masks.shape and t.shape == types.shape and t.dtype == torch.long
    zoomed = [i for i in range(12) if not torch.equal(x[i], images[i])]
    assert 2 <= len(zoomed) <= 10                          # about half of the images
    for i in zoomed:
        bg = images[i].amin()
        rows = (x[i, 0] != bg).any(dim=1).nonzero()
        cols = (x[i, 0] != bg).any(dim=0).nonzero()
        side = int(rows.max() - rows.min() + 1)
        assert 48 * 0.6 - 1 <= side < 48 and (x[i, 0] == bg).sum() > 0
        assert int(cols.max() - cols.min() + 1) == side     # aspect kept
        assert 0 < m[i].sum() < masks[i].sum()              # the lesion shrank with the image
        assert set(m[i].unique().tolist()) <= {0.0, 1.0} and set(t[i].unique().tolist()) <= {-100, 0, 1, 2}
        assert ((t[i] != 0) == (m[i, 0] > 0)).all()         # types stay inside the mask
    assert (t[0] == -100).any()                             # unlabeled stays unlabeled, zoomed or not
    untouched = [i for i in range(12) if i not in zoomed]
    assert all(torch.equal(m[i], masks[i]) and torch.equal(t[i], types[i]) for i in untouched)
