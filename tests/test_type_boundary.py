"""scripts/type_boundary.py: the lesion-type boundary measured against the scorer's per-type Dice."""

from __future__ import annotations

import numpy as np
import pytest

from smallcovid.data.dataset import Sample
from smallcovid.inference.evaluation import evaluate_maps
from smallcovid.inference.predictor import ProbMaps
from tinydata import load_script


def _case(rng, h=23, w=31):
    """A random probability map and a truth with both types, odd sizes."""
    lesion = rng.random((h, w)).astype(np.float32)
    t = rng.dirichlet((1, 1, 1), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    truth = rng.integers(0, 3, (h, w)).astype(np.uint8)
    truth[0, 0], truth[0, 1] = 1, 2  # both types present
    return ProbMaps(lesion, t, 0.0), Sample("s", np.zeros((h, w), np.float32), truth > 0, truth)


def test_tau_one_half_is_the_scorers_per_type_dice_and_tau_moves_pixels_between_types():
    mod = load_script("scripts/type_boundary.py")
    rng = np.random.default_rng(3)
    maps, samples = zip(*(_case(rng) for _ in range(4)))
    ref = evaluate_maps(list(maps), list(samples), 0.4).type_dice
    at_half = mod.type_dice_at(maps, samples, 0.4, 0.5)
    assert at_half[1] == pytest.approx(ref["ground-glass"]["mean"])
    assert at_half[2] == pytest.approx(ref["consolidation"]["mean"])
    # tau 0 calls every lesion pixel consolidation: ground-glass Dice drops to 0.
    assert mod.type_dice_at(maps, samples, 0.4, 0.0)[1] == 0.0
    assert mod.type_dice_at(maps, samples, 0.4, 1.01)[2] == 0.0
