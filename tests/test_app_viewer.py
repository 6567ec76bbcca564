"""The Segment viewer's payload (smallcovid.app.viewer): levels and histograms give exactly
the numbers :mod:`smallcovid.inference.metrics` and the quantities table give on the
thresholded maps, at every slider step and card threshold."""

from __future__ import annotations

import numpy as np
import pytest

from smallcovid.app import analysis, viewer
from smallcovid.app import volume_report as vr
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.metrics import confusion_counts, scores, type_dice
from smallcovid.inference.predictor import ProbMaps

THRESHOLDS = (0.01, 0.1, 0.25, 0.3, 0.37, 0.4, 0.5, 0.63, 0.8, 0.99)


def fake_maps(seed: int, shape=(48, 40)) -> ProbMaps:
    rng = np.random.default_rng(seed)
    lesion = rng.random(shape, dtype=np.float32)
    # Values right on grid thresholds (in float32): the p >= t boundary must match exactly.
    lesion.flat[:40] = np.asarray(rng.choice(viewer.SLIDER_STEPS, 40), dtype=np.float32)
    lesion.flat[40] = np.float32(0.8)
    types = rng.random((3, *shape), dtype=np.float32)
    return ProbMaps(lesion=lesion, types=types, seconds=0.012)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(7)
    shape = (48, 40)
    truth_types = rng.integers(0, 3, shape).astype(np.uint8)
    truth_types[:10] = 0
    truth = truth_types > 0
    lungs = np.zeros(shape, np.uint8)
    lungs[5:40, 3:18], lungs[5:40, 22:37] = 1, 2
    display = rng.integers(0, 256, shape, dtype=np.uint8)
    maps = {"a": fake_maps(1), "b": fake_maps(2)}
    cards = {"a": 0.37, "b": 0.4523}  # one off the 0.01 grid
    payload = viewer.build_payload(display, maps, cards, default_threshold=0.4, truth=truth, truth_types=truth_types,
                                   spacing=(0.7, 0.8), lungs=lungs, truth_name="t.png")
    return dict(maps=maps, truth=truth, truth_types=truth_types, lungs=lungs, payload=payload, cards=cards,
                display=display)


@pytest.mark.parametrize("t", THRESHOLDS + (0.4523,))
def test_histograms_give_the_metrics_of_the_thresholded_map(scene, t):
    rows = viewer.payload_rows(scene["payload"], {"a": t, "b": t})
    for row in rows:
        m = scene["maps"][row["model"]]
        pred = m.mask(t)
        s = scores(confusion_counts(pred, scene["truth"]))
        for k in ("dice", "precision", "recall", "iou"):
            assert row[k] == pytest.approx(float(s[k][0]), abs=1e-15), (t, k)
        assert row["area"] == pred.sum()
        for kind in (1, 2):
            assert row[f"area{kind}"] == (m.type_map(t) == kind).sum()
            assert row[f"dice{kind}"] == pytest.approx(type_dice(m.type_map(t), scene["truth_types"], kind), abs=1e-15)


@pytest.mark.parametrize("t", (0.2, 0.45, 0.8))
def test_quantity_columns_match_the_quantities_table(scene, t):
    rows = viewer.payload_rows(scene["payload"], {"a": t, "b": t})
    for row in rows:
        m = scene["maps"][row["model"]]
        ref = vr.slice_row(row["model"], m.type_map(t), scene["lungs"], (0.7, 0.8))
        for col in ("lesion area (mm²)", "ground-glass (mm²)", "consolidation (mm²)", "% of lung"):
            assert row[col] == pytest.approx(ref[col], abs=1e-9), (t, col)
        assert analysis.lesion_stats(m.mask(t)).area_px == row["area"]


def test_levels_reproduce_every_mask_and_pack_round_trips(scene):
    grid = scene["payload"]["grid"]
    assert grid == sorted(grid) and 0.4523 in grid and len(grid) == 100
    m = scene["maps"]["a"]
    levels = viewer.prob_levels(m.lesion, grid)
    for t in THRESHOLDS:
        np.testing.assert_array_equal(levels >= viewer.level_of(grid, t), m.mask(t))
    packed = scene["payload"]["models"][0]["maps"]
    raw = viewer.unpack(packed, m.lesion.shape)
    np.testing.assert_array_equal(raw & 0x7F, levels)
    np.testing.assert_array_equal(np.where(raw & 0x80, 2, 1), m.kind)
    np.testing.assert_array_equal(viewer.unpack(scene["payload"]["display"], m.lesion.shape), scene["display"])


def test_payload_carries_card_levels_truth_and_quantities(scene):
    p = scene["payload"]
    assert [m["label"] for m in p["models"]] == ["a", "b"]
    assert p["models"][1]["card"] == 0.4523 and p["grid"][p["models"][1]["card_level"] - 1] == 0.4523
    assert p["default_threshold"] == 0.4 and p["paper_threshold"] == 0.8
    assert p["truth"]["pixels"] == scene["truth"].sum()
    assert p["truth"]["type_pixels"] == {"1": int((scene["truth_types"] == 1).sum()),
                                         "2": int((scene["truth_types"] == 2).sum())}
    assert p["quantities"]["unit"] == "mm²" and p["quantities"]["lung_px"] == int((scene["lungs"] > 0).sum())
    outline = viewer.unpack(p["truth"]["outline"], scene["truth"].shape).astype(bool)
    assert outline.sum() and not (outline & ~scene["truth"]).any()


def test_thresholds_for_views():
    cards = {"a": 0.3, "b": 0.5}
    assert viewer.thresholds_for(viewer.default_view(), 0.4, cards) == {"a": 0.4, "b": 0.4}
    assert viewer.thresholds_for({"threshold": 0.62, "cards": False}, 0.4, cards) == {"a": 0.62, "b": 0.62}
    assert viewer.thresholds_for({"threshold": 0.62, "cards": True}, 0.4, cards) == cards
    assert viewer.default_view({"opacity": 0.8, "junk": 1}) == {**viewer.DEFAULT_VIEW, "opacity": 0.8}


def test_bad_inputs_are_refused():
    with pytest.raises(SmallCovidError, match="uint8"):
        viewer.build_payload(np.zeros((4, 4), np.float32), {}, {}, default_threshold=0.5)
    with pytest.raises(SmallCovidError, match="in \\(0, 1\\]"):
        viewer.threshold_grid([1.5])
    with pytest.raises(SmallCovidError, match="at most"):
        viewer.threshold_grid(np.linspace(0.001, 0.009, 40))
