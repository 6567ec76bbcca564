"""Test-time augmentation (smallcovid.models.tta): views, averaging, the config field, overrides."""

from __future__ import annotations

import pytest
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.models import build_model, list_models, make_config
from smallcovid.models.base import Prediction
from smallcovid.models.checkpoint import load_weights, save_weights
from smallcovid.models.tta import TTA_MODES, TTA_VIEWS, predict_views

from test_models import FAST_OVERRIDES, fast_model

torch.set_num_threads(2)


def _asymmetric_predict(images: torch.Tensor) -> Prediction:
    """A stand-in "model" whose output depends on where a pixel is, so every view differs."""
    n, _, h, w = images.shape
    ramp = torch.linspace(0, 1, w).expand(h, w)[None, None].expand(n, 1, h, w)
    lesion = (0.5 * images + 0.5 * ramp).clamp(0, 1)
    types = torch.softmax(torch.cat([images, ramp, 1 - images], dim=1) * 3, dim=1)
    return Prediction(lesion_prob=lesion, type_prob=types)


def test_views_are_the_eight_orientations_and_each_is_undone():
    assert TTA_MODES == ("none", "flip", "d4") == tuple(TTA_VIEWS) and len(set(TTA_VIEWS["d4"])) == 8
    x = torch.rand(2, 1, 7, 11)  # odd, non-square: a quarter turn swaps the sides
    ident = Prediction(lesion_prob=x, type_prob=torch.cat([x, x, x], 1) / 3)
    for mode in TTA_MODES:  # an equivariant predictor is unchanged by any averaging
        out = predict_views(lambda im: Prediction(lesion_prob=im, type_prob=torch.cat([im, im, im], 1) / 3), x, mode)
        assert torch.allclose(out.lesion_prob, ident.lesion_prob) and out.lesion_prob.shape == (2, 1, 7, 11)


def test_d4_average_is_the_mean_over_views_and_types_still_sum_to_one():
    x = torch.rand(1, 1, 6, 9)
    out = predict_views(_asymmetric_predict, x, "d4")
    # the ramp (left to right) averaged over mirror and turns is no longer a function of x alone
    expected = torch.stack([
        torch.flip(torch.rot90(_asymmetric_predict(torch.rot90(torch.flip(x, (-1,)) if m else x, t, (-2, -1))).lesion_prob,
                               -t, (-2, -1)), (-1,)) if m else
        torch.rot90(_asymmetric_predict(torch.rot90(x, t, (-2, -1))).lesion_prob, -t, (-2, -1))
        for m, t in TTA_VIEWS["d4"]]).mean(0)
    assert torch.allclose(out.lesion_prob, expected, atol=1e-6)
    assert torch.allclose(out.type_prob.sum(1), torch.ones(1, 6, 9), atol=1e-5)
    assert not torch.allclose(out.lesion_prob, _asymmetric_predict(x).lesion_prob)
    flip = predict_views(_asymmetric_predict, x, "flip").lesion_prob
    plain, mirrored = _asymmetric_predict(x).lesion_prob, torch.flip(_asymmetric_predict(torch.flip(x, (-1,))).lesion_prob, (-1,))
    assert torch.allclose(flip, (plain + mirrored) / 2, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_tta_from_its_config_and_per_call(name, tmp_path):
    model = fast_model(name).eval()
    x = torch.rand(1, 1, 64, 64)
    plain = model.predict(x)
    d4 = build_model(name, **FAST_OVERRIDES.get(name, {}), tta="d4")
    d4.load_state_dict(model.state_dict())
    by_config = d4.eval().predict(x)
    assert torch.allclose(by_config.lesion_prob, model.predict(x, tta="d4").lesion_prob, atol=1e-5)
    assert torch.allclose(d4.predict(x, tta="none").lesion_prob, plain.lesion_prob, atol=1e-5)
    # the mode travels with the weights
    save_weights(d4, tmp_path / f"{name}.safetensors")
    loaded, card = load_weights(tmp_path / f"{name}.safetensors")
    assert loaded.config.tta == "d4" and card["config"]["tta"] == "d4"


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(SmallCovidError, match="tta must be one of none, flip, d4, got 'd8'"):
        make_config("unet", tta="d8")
    with pytest.raises(SmallCovidError, match="got 'x'"):
        fast_model("smallcovid-net").predict(torch.rand(1, 1, 32, 32), tta="x")
