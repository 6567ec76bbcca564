"""Overlays, the disagreement map, PNG encoding and the plotly figures."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from smallcovid.app import figures, palette, viz
from smallcovid.core.errors import SmallCovidError


@pytest.fixture
def image():
    return np.tile(np.arange(0, 200, 10, dtype=np.uint8), (12, 1))  # (12, 20)


def test_overlay_colours_only_the_mask(image):
    mask = np.zeros(image.shape, bool)
    mask[2:5, 3:9] = True
    out = viz.overlay(image, mask=mask, opacity=1.0)
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    assert (out[mask] == viz.LESION_RGB).all()
    np.testing.assert_array_equal(out[~mask], np.repeat(image[~mask][:, None], 3, axis=1))
    half = viz.overlay(image, mask=mask, opacity=0.5)
    expected = np.rint(0.5 * image[2, 3] + 0.5 * np.array(viz.LESION_RGB))
    np.testing.assert_array_equal(half[2, 3], expected)
    np.testing.assert_array_equal(viz.overlay(image, mask=mask, opacity=0.0)[..., 0], image)


def test_overlay_types_in_two_colours_and_truth_outline(image):
    types = np.zeros(image.shape, np.uint8)
    types[1:4, 1:4], types[6:10, 10:16] = 1, 2
    truth = types > 0
    out = viz.overlay(image, types=types, opacity=1.0, truth=truth)
    assert (out[2, 2] == viz.TYPE_RGB[1]).all()  # interior of the GGO square
    assert (out[8, 12] == viz.TYPE_RGB[2]).all()
    assert (out[1, 1] == viz.TRUTH_RGB).all()  # border pixel of the truth
    border = viz.outline(truth)
    assert border[1, 1] and not border[2, 2]


def test_overlay_rejects_bad_inputs(image):
    with pytest.raises(SmallCovidError, match="uint8"):
        viz.overlay(image.astype(np.float32))
    with pytest.raises(SmallCovidError, match="width x height"):
        viz.overlay(image, mask=np.zeros((5, 5), bool))
    with pytest.raises(SmallCovidError, match="opacity"):
        viz.overlay(image, opacity=1.5)


def test_vote_count_and_disagreement_colours(image):
    a = np.zeros(image.shape, bool)
    b, c = a.copy(), a.copy()
    a[0, 0] = b[0, 0] = c[0, 0] = True  # all three agree
    a[5, 5] = True  # one of three
    a[6, 6] = b[6, 6] = True  # two of three
    votes = viz.vote_count([a, b, c])
    assert votes[0, 0] == 3 and votes[5, 5] == 1 and votes[6, 6] == 2 and votes.sum() == 6
    out = viz.disagreement_overlay(image, [a, b, c], opacity=1.0)
    assert (out[0, 0] == viz.AGREE_RGB).all()
    assert not (out[5, 5] == out[6, 6]).all()  # 1 and 2 votes differ in colour
    np.testing.assert_array_equal(out[9, 9], [image[9, 9]] * 3)  # no votes: gray
    legend = viz.disagreement_legend(3)
    assert [t for t, _ in legend] == ["1 of 3", "2 of 3", "all 3"]
    assert all(c.startswith("#") and len(c) == 7 for _, c in legend)
    with pytest.raises(SmallCovidError):
        viz.vote_count([a, np.zeros((3, 3), bool)])
    with pytest.raises(SmallCovidError):
        viz.vote_count([])


def test_png_bytes_round_trip(image):
    mask = image > 100
    back = np.asarray(Image.open(BytesIO(viz.png_bytes(mask))))
    np.testing.assert_array_equal(back, mask.astype(np.uint8) * 255)
    rgb = viz.overlay(image, mask=mask)
    np.testing.assert_array_equal(np.asarray(Image.open(BytesIO(viz.png_bytes(rgb)))), rgb)
    with pytest.raises(SmallCovidError):
        viz.png_bytes(np.zeros((4, 4), np.float32))


def test_figures_have_one_trace_per_series():
    hist = {"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_loss": [1.1, 0.9], "val_dice": [0.2, 0.4]}
    final = {"epoch": [1, 2], "train_loss": [1.0, 0.7], "val_loss": [float("nan")] * 2, "val_dice": [float("nan")] * 2}
    fig = figures.training_curves_figure({1: hist, 2: hist, 0: final})
    names = [t.name for t in fig.data]
    assert names[:3] == ["fold 1", "fold 1 validation loss", "fold 1 Dice at threshold 0.8"]
    assert names[-1] == "final"  # the all-data model last, and without validation curves
    box = figures.dice_box_figure({"a": [0.1, 0.5], "b": [0.3, 0.9]}, ["x", "y"])
    assert [t.name for t in box.data] == ["a", "b"] and list(box.data[1].y) == [0.3, 0.9]
    sweep = figures.sweep_figure({"a": {0.5: 0.6, 0.1: 0.2}}, current=0.8)
    assert list(sweep.data[0].x) == [0.1, 0.5] and list(sweep.data[0].y) == [0.2, 0.6]
    # The legend sits under the plot (it covered the curves at the right of a half-width column).
    assert sweep.layout.legend.orientation == "h" and sweep.layout.legend.y < 0
    # The i-th model keeps one distinct colour on every figure (box, sweep, per-slice plot).
    two = figures.sweep_figure({"a": {0.5: 0.6}, "b": {0.5: 0.7}})
    assert two.data[0].line.color == box.data[0].marker.color == palette.series_style(0)["color"]
    assert two.data[1].line.color == box.data[1].marker.color != two.data[0].line.color


def test_training_curves_say_which_line_is_which():
    """The Dice panel's solid line is Dice at the run's threshold (the table's "Dice"), its dotted line the
    best-threshold Dice; the legend lists folds by colour only, so no loss label names a Dice line."""
    hist = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.9],
            "val_dice": [0.0, 0.0, 0.0], "val_dice_best": [0.2, 0.29, 0.27]}
    fig = figures.training_curves_figure({1: hist}, threshold=0.8)
    by_name = {t.name: t for t in fig.data}
    solid, dotted = by_name["fold 1 Dice at threshold 0.8"], by_name["fold 1 best-threshold Dice"]
    assert list(solid.y) == hist["val_dice"] and solid.xaxis == "x2" and solid.line.dash in (None, "solid")
    assert list(dotted.y) == hist["val_dice_best"] and dotted.xaxis == "x2" and dotted.line.dash == "dot"
    assert list(by_name["fold 1"].y) == hist["train_loss"] and by_name["fold 1"].xaxis == "x"
    assert list(by_name["fold 1 validation loss"].y) == hist["val_loss"]
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == ["fold 1"]
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["loss: solid training, dotted validation",
                      "validation Dice: solid at threshold 0.8, dotted best threshold"]
    assert "Dice at threshold 0.8" in solid.hovertemplate and "best-threshold" in dotted.hovertemplate


def test_reliability_figure():
    rel = {"confidence": [0.05, 0.5, 0.95], "lesion_fraction": [0.02, 0.4, 0.9], "share": [0.9, 0.05, 0.05]}
    fig = figures.reliability_figure({"before": rel, "after": rel, "ece_before": 0.08, "ece_after": 0.01})
    names = [t.name for t in fig.data]
    assert names == ["perfectly calibrated", "before calibration (ECE 0.080)", "after calibration (ECE 0.010)"]
    assert list(fig.data[1].x) == rel["confidence"] and list(fig.data[1].y) == rel["lesion_fraction"]
