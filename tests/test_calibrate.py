"""smallcovid.training.calibrate: nested out-of-fold calibration figures."""

import numpy as np
import pytest

from smallcovid.data.dataset import Sample
from smallcovid.inference.evaluation import best_threshold, evaluate_maps, threshold_sweep
from smallcovid.inference.predictor import ProbMaps
from smallcovid.models.calibration import Calibration
from smallcovid.training.calibrate import calibrate_folds, calibrated_maps


def _fold(rng, n=4, size=(23, 19)):
    """Timid model: lesion pixels score ~0.35, background ~0.05, plus noise."""
    maps, samples = [], []
    for i in range(n):
        mask = np.zeros(size, bool)
        r, c = rng.integers(3, 10, 2)
        mask[r : r + 8, c : c + 7] = True
        p = np.where(mask, 0.35, 0.05) + rng.normal(0, 0.08, size)
        p = np.clip(p, 0, 1).astype(np.float32)
        maps.append(ProbMaps(lesion=p, types=np.zeros((3, *size), np.float32), seconds=0.0))
        samples.append(Sample(stem=f"s{i}", image=p, mask=mask, types=None))
    return maps, samples


def test_operating_point_makes_the_target_threshold_as_good_as_the_tuned_one():
    rng = np.random.default_rng(3)
    folds = [_fold(rng) for _ in range(3)]
    fm, fs = [f[0] for f in folds], [f[1] for f in folds]
    out = calibrate_folds(fm, fs, method="operating-point", target=0.8)
    for k, f in enumerate(out["per_fold"]):
        others_m = [m for j, ms in enumerate(fm) if j != k for m in ms]
        others_s = [s for j, ss in enumerate(fs) if j != k for s in ss]
        t_k = best_threshold(threshold_sweep(others_m, others_s))
        tuned = evaluate_maps(fm[k], fs[k], t_k).summary.mean["dice"]
        assert f["dice_at_target"] == pytest.approx(tuned, abs=0.01)
    raw_at_target = np.mean([evaluate_maps(m, s, 0.8).summary.mean["dice"] for m, s in zip(fm, fs)])
    assert raw_at_target < 0.2 < out["dice_at_target"]["mean"]  # timid model draws nothing at 0.8 uncalibrated
    assert out["method"] == "operating-point" and 0 < out["ece_after"] <= 1 and out["ece_platt"] < out["ece_before"]
    assert set(out["reliability"]) == {"before", "after"}


def test_calibrated_maps_change_only_the_lesion_channel_and_bad_input_raises():
    rng = np.random.default_rng(0)
    maps, samples = _fold(rng, n=1)
    out = calibrated_maps(maps, Calibration(a=2.0, b=1.0, method="platt"))[0]
    assert out.types is maps[0].types and not np.array_equal(out.lesion, maps[0].lesion)
    with pytest.raises(ValueError, match="at least 2 folds"):
        calibrate_folds([maps], [samples])
    with pytest.raises(ValueError, match="platt or operating-point"):
        calibrate_folds([maps, maps], [samples, samples], method="isotonic")


def test_platt_default_lowers_ece_and_picks_a_threshold_on_calibrated_maps():
    rng = np.random.default_rng(5)
    folds = [_fold(rng) for _ in range(3)]
    out = calibrate_folds([f[0] for f in folds], [f[1] for f in folds])
    assert out["method"] == "platt" and out["ece_after"] < out["ece_before"]
    assert 0.1 <= out["threshold"] <= 0.95 and all("dice_at_threshold" in f for f in out["per_fold"])
    assert out["dice_at_threshold"]["mean"] > out["dice_at_target"]["mean"] - 1e-9
