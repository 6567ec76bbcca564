"""smallcovid.models.calibration: Platt scaling, the operating-point variant, ECE."""

import numpy as np
import pytest
import torch

from smallcovid.models.calibration import (
    Calibration,
    expected_calibration_error,
    fit_operating_point,
    fit_platt,
    reliability_curve,
    sample_pixels,
)

RNG = np.random.default_rng(7)


def _overconfident(n=60_000):
    """Labels drawn from a true probability q; the 'model' reports q pushed towards 0/1."""
    z = RNG.normal(0, 1.5, n)
    q = 1 / (1 + np.exp(-z))
    y = (RNG.random(n) < q).astype(np.float32)
    p = 1 / (1 + np.exp(-3.0 * z + 1.0))  # slope 3, shifted: over-confident and biased
    return p.astype(np.float32), y


def test_platt_recovers_the_inverse_map_and_lowers_ece():
    p, y = _overconfident()
    cal = fit_platt(p, y)
    # true logit z = (logit(p) + 1) / 3  ->  a = 1/3, b = 1/3
    assert cal.a == pytest.approx(1 / 3, abs=0.03) and cal.b == pytest.approx(1 / 3, abs=0.05)
    before, after = expected_calibration_error(p, y), expected_calibration_error(cal.apply(p), y)
    assert before > 0.05 and after < 0.015 and after < before / 4


def test_operating_point_maps_the_raw_threshold_to_the_target():
    p, y = _overconfident()
    cal = fit_operating_point(p, y, raw_threshold=0.3, target=0.8)
    assert cal.apply(np.array([0.3]))[0] == pytest.approx(0.8, abs=1e-4)
    assert cal.threshold_for(0.8) == pytest.approx(0.3, abs=1e-4)
    assert cal.a == pytest.approx(fit_platt(p, y).a)


def test_apply_is_monotone_numpy_and_torch_agree_and_identity_is_exact():
    cal = Calibration(a=0.5, b=-0.7, method="platt")
    p = np.linspace(0, 1, 101, dtype=np.float32)
    out = cal.apply(p)
    assert np.all(np.diff(out) >= 0) and out.dtype == np.float32
    assert np.allclose(cal.apply_torch(torch.from_numpy(p)).numpy(), out, atol=1e-5)
    assert np.array_equal(Calibration().apply(p), p)


def test_card_round_trip_and_bad_values():
    cal = Calibration(a=0.8, b=0.1, method="operating-point")
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict(None).is_identity and Calibration.from_dict({}).is_identity
    with pytest.raises(ValueError, match="slope a > 0"):
        Calibration(a=-1.0, b=0.0, method="platt")
    with pytest.raises(ValueError, match="method must be one of"):
        Calibration(method="isotonic")
    with pytest.raises(ValueError, match="numbers a and b"):
        Calibration.from_dict({"a": "x"})
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(np.full(10, 0.3), np.zeros(10))


def test_ece_hand_values_and_reliability_curve():
    # two bins used: 0.1 with 1/4 lesion, 0.9 with 3/4 lesion -> |0.25-0.1| and |0.75-0.9| each on half
    p = np.array([0.1] * 4 + [0.9] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(p, y, bins=10) == pytest.approx(0.15)
    curve = reliability_curve(p, y, bins=10)
    assert curve["confidence"] == [0.1, 0.9] and curve["lesion_fraction"] == [0.25, 0.75]
    assert curve["share"] == [0.5, 0.5]


def test_sample_pixels_weights_images_equally_and_checks_sizes():
    big, small = np.ones((40, 40)), np.zeros((5, 7))
    p, t = sample_pixels([big, small], [big, small], max_pixels=60)
    assert p.size == 30 + 30 and p.sum() == 30 and t.sum() == 30
    with pytest.raises(ValueError, match="differ in size"):
        sample_pixels([big], [small])
