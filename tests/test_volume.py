"""Whole-volume thresholding: one rule (smallcovid.inference.volume) for the app's NIfTI download and the CLI.

The app (pages/_segment_parts.py) keeps a segmented volume as uint8 probability levels
(``predict_volume(..., keep_types=False).levels``, or ``segment_volume(...).levels``) and downloads
``uploads.nifti_mask_bytes(threshold_volume(levels, t)[0], scan)``; ``python -m smallcovid predict``
writes ``<stem>_mask.nii.gz`` via ``predict_one``. Both must give the same mask, voxel
for voxel, for probabilities exactly at and around the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from smallcovid.app import uploads
from smallcovid.cli.predict import predict_one
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.predictor import ProbMaps
from smallcovid.inference.volume import predict_volume, prob_levels, threshold_level, threshold_volume
from smallcovid.io import Volume, read_label_volume

THRESHOLDS = (0.5, 0.8, 0.31, 0.3, 0.05, 0.99, 0.0, 1.0)


class EchoPredictor:
    """Stands in for a Predictor: the lesion probability of a pixel is the pixel's value.

    Types: consolidation in even columns, ground-glass in odd ones.
    """

    threshold = 0.5
    name = "echo"
    card: dict = {}

    def predict_images(self, images, batch_size: int = 8) -> list[ProbMaps]:
        out = []
        for im in images:
            p = np.asarray(im, np.float32)
            cons = np.zeros_like(p)
            cons[:, ::2] = 1.0
            types = np.stack([1 - p, (1 - cons) * (p + 0.01), cons * (p + 0.01)]).astype(np.float32)
            out.append(ProbMaps(lesion=p, types=types, seconds=0.0))
        return out


def probabilities_around(t: float) -> np.ndarray:
    """Float32 probabilities exactly at ``t``, one float32 step either side, and up to 2/255 away."""
    t32 = np.float32(t)
    values = [t32, np.nextafter(t32, np.float32(0)), np.nextafter(t32, np.float32(1)), t]
    for d in (0.25, 0.49, 0.5, 0.51, 0.99, 1.0, 1.01, 1.5, 2.0):
        values += [t - d / 255, t + d / 255]
    values += [k / 255 for k in range(256)]
    return np.clip(np.asarray(values, np.float64), 0, 1).astype(np.float32)


def volume_of(values: np.ndarray) -> Volume:
    """A (3, 9, W) display-units volume holding ``values`` (padded with zeros) in its first 8 rows,
    affine from spacing. Row 9 is white, as soft tissue is in the training slices' window, so no
    slice is taken for a wider display window and re-windowed."""
    width = -(-values.size // 24)
    flat = np.zeros(3 * 8 * width, np.float32)
    flat[: values.size] = values
    vox = np.concatenate([flat.reshape(3, 8, width), np.ones((3, 1, width), np.float32)], axis=1)
    return Volume(vox, "display", spacing=(2.0, 0.7, 0.7), source="ct.nii.gz")


@pytest.mark.parametrize("t", THRESHOLDS)
def test_app_and_cli_write_the_same_volume_mask(tmp_path, t):
    vol = volume_of(probabilities_around(t))
    pred = EchoPredictor()
    # CLI path: python -m smallcovid predict on a volume.
    everywhere = np.ones(vol.voxels.shape, np.uint8)  # lungs everywhere: lesions may be anywhere
    names = predict_one(pred, vol, None, t, tmp_path, "ct", lungs=everywhere)
    assert names == ["ct_mask.nii.gz", "ct_classes.nii.gz", "ct_lungs.nii.gz", "ct_report.json"]
    cli_bytes = (tmp_path / "ct_mask.nii.gz").read_bytes()
    # App path: Segment page, "Segment all slices" then "Mask NIfTI".
    levels = predict_volume(pred, vol, None, keep_types=False, lungs=everywhere).levels
    app_bytes = uploads.nifti_mask_bytes(threshold_volume(levels, t)[0], vol)
    assert app_bytes == cli_bytes
    cli_mask = read_label_volume(tmp_path / "ct_mask.nii.gz")
    np.testing.assert_array_equal(cli_mask, read_label_volume(app_bytes, "app.nii.gz"))
    # The documented rule, and what it means for the float probabilities.
    p = vol.voxels.astype(np.float64)
    expected = np.floor(p * 255 + 0.5) >= np.floor(t * 255 + 0.5)
    np.testing.assert_array_equal(cli_mask, expected)
    assert cli_mask[p >= t].all()  # everything at or above the threshold is lesion ...
    assert (p[cli_mask.astype(bool)] > t - 1 / 255).all()  # ... plus at most 1/255 below it
    # Classes: the mask, split by the most likely type.
    classes = read_label_volume(tmp_path / "ct_classes.nii.gz")
    np.testing.assert_array_equal(classes > 0, cli_mask > 0)
    assert set(np.unique(classes[:, :, ::2])) <= {0, 2} and set(np.unique(classes[:, :, 1::2])) <= {0, 1}


def test_probability_exactly_at_the_threshold_is_lesion():
    for t in (0.31, 0.3, 0.5, 0.8, 0.123456):
        mask, classes = threshold_volume(np.array([[[t]]]), t)
        assert mask.dtype == np.uint8 and mask[0, 0, 0] == 1 and classes is None
        assert threshold_volume(np.array([[[t - 1.01 / 255]]]), t)[0][0, 0, 0] == 0
    # uint8 input is taken as levels; float input is converted first: both agree.
    p = np.linspace(0, 1, 1001).reshape(1, 7, 143)
    for t in THRESHOLDS:
        np.testing.assert_array_equal(threshold_volume(p, t)[0], threshold_volume(prob_levels(p), t)[0])
    assert threshold_level(0.8) == 204 and threshold_level(0.5) == 128 and threshold_level(0.0) == 0


def test_types_fill_only_the_mask():
    p = np.array([[[0.1, 0.9, 0.9]]])
    mask, classes = threshold_volume(p, 0.5, np.array([[[2, 1, 2]]], np.uint8))
    assert mask.tolist() == [[[0, 1, 1]]] and classes.tolist() == [[[0, 1, 2]]]


@pytest.mark.parametrize("prob, t, kind, needle", [
    (np.zeros((1, 2, 2)), 1.5, None, "threshold must be a number between 0 and 1, got 1.5"),
    (np.zeros((1, 2, 2)), float("nan"), None, "got nan"),
    (np.zeros((1, 2, 2)), "high", None, "got 'high'"),
    (np.full((1, 2, 2), 1.2), 0.5, None, r"\[0, 1\], got values from 1.2 to 1.2"),
    (np.zeros((1, 2, 2)), 0.5, np.ones((1, 2, 3), np.uint8), r"shape \(1, 2, 3\)"),
    (np.zeros((1, 2, 2)), 0.5, np.full((1, 2, 2), 3, np.uint8), "must be 1 or 2, got 3"),
])
def test_bad_values_are_named(prob, t, kind, needle):
    with pytest.raises(SmallCovidError, match=needle):
        threshold_volume(prob, t, kind)


# ------------------------------------------------------------------ segment_volume: the shared pipeline

class SlowPath:
    """The Predictor without predict_levels: segment_volume takes the generic predict_images path."""

    def __init__(self, pred) -> None:
        self.pred, self.card, self.name, self.threshold = pred, pred.card, pred.name, pred.threshold

    def predict_images(self, images, batch_size: int = 8):
        return self.pred.predict_images(images, batch_size=batch_size)


@pytest.fixture(scope="module")
def net():
    import torch

    from smallcovid.inference.predictor import load_predictor

    torch.set_num_threads(1)
    return load_predictor("smallcovid-net", device="cpu")


@pytest.fixture(scope="module")
def phantom_volume() -> Volume:
    """5 full-field HU slices, 160x160 at 2.2 mm (the bench's synthetic CT; slice 3 repeats slice 0, slice 4 is air)."""
    from smallcovid.cli.benchvolume import synthetic_ct

    ct = synthetic_ct(3, 160)
    slices = [ct[0], ct[1], ct[2], ct[0], np.full((160, 160), -1000)]
    return Volume(np.stack(slices).astype(np.float32), "hu", spacing=(2.5, 2.2, 2.2), source="synthetic")


def test_segment_volume_fields_and_framing(net, phantom_volume):
    from smallcovid.inference.volume import segment_volume

    calls = []
    res = segment_volume(net, phantom_volume, batch_size=2, progress=lambda d, n: calls.append((d, n)))
    shape = phantom_volume.voxels.shape
    for arr in (res.levels, res.kind, res.lungs):
        assert arr.shape == shape and arr.dtype == np.uint8
    assert set(np.unique(res.kind)) <= {1, 2} and set(np.unique(res.lungs)) <= {0, 1, 2}
    assert res.spacing == (2.5, 2.2, 2.2) and calls == [(2, 5), (4, 5), (5, 5)]
    assert all(b is not None for b in res.boxes[:4]) and res.lungs[4].max() == 0
    for k, box in enumerate(res.boxes[:4]):
        outside = np.ones(shape[1:], bool)
        outside[box.slices] = False
        assert res.levels[k][outside].max() == 0 and (res.kind[k][outside] == 1).all()
    # the fast path (Predictor.predict_levels) gives the same bytes as the generic one
    slow = segment_volume(SlowPath(net), phantom_volume, batch_size=3)
    np.testing.assert_array_equal(res.levels, slow.levels)
    np.testing.assert_array_equal(res.kind, slow.kind)
    # slice 3 repeats slice 0: the same crop, the same maps
    np.testing.assert_array_equal(res.levels[3], res.levels[0])


@pytest.mark.parametrize("t", [0.3, 0.5, 0.0, 1.0])
def test_volume_result_thresholds_and_report_like_the_rules(net, phantom_volume, t):
    from smallcovid.inference.quantify import spacing_xyz, volume_report
    from smallcovid.inference.volume import segment_volume

    res = segment_volume(net, phantom_volume)
    mask, classes = threshold_volume(res.levels, t, res.kind)
    np.testing.assert_array_equal(res.mask(t), mask)
    np.testing.assert_array_equal(res.classes(t), classes)
    np.testing.assert_array_equal(res.threshold(t)[1], classes)
    full = volume_report(classes, res.lungs, spacing_xyz(res.spacing), "smallcovid-net", t, {"input": "x"})
    assert res.report(t, "smallcovid-net", {"input": "x"}) == full  # the report counts within the boxes: same numbers


def test_predict_levels_equals_predict_images(net):
    rng = np.random.default_rng(0)
    for shapes in ([(61, 47)] * 3, [(61, 47), (30, 90), (120, 100)], [(61, 47), (30, 90), (61, 47), (30, 90), (9, 200)]):
        images = [rng.random(s, dtype=np.float32) for s in shapes]
        for m, (levels, kind) in zip(net.predict_images(images), net.predict_levels(images)):
            np.testing.assert_array_equal(prob_levels(m.lesion), levels)
            np.testing.assert_array_equal(m.kind, kind)


def test_segment_volume_bad_arguments(phantom_volume):
    from smallcovid.inference.volume import segment_volume

    with pytest.raises(ValueError, match="batch_size"):
        segment_volume(EchoPredictor(), phantom_volume, batch_size=0)
    with pytest.raises(ValueError, match="lungs has shape"):
        segment_volume(EchoPredictor(), phantom_volume, lungs=np.zeros((1, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="framing"):
        segment_volume(EchoPredictor(), phantom_volume, framing="body")
