"""Fold ensembles: the mean of the fold models' maps, with the right card, from a run folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.ensemble import load_ensemble, load_model
from smallcovid.inference.predictor import load_predictor
from smallcovid.inference.volume import prob_levels
from smallcovid.models.calibration import Calibration


def test_ensemble_is_the_mean_of_its_fold_models(copy_run):
    ens = load_model("smallcovid-net", weights=copy_run, device="cpu", ensemble="folds")
    final = json.loads((copy_run / "final" / "smallcovid-net.json").read_text())
    assert len(ens.members) == 2 and ens.threshold == final["threshold"]
    img = np.random.default_rng(0).random((53, 47)).astype(np.float32)
    singles = [load_predictor("smallcovid-net", weights=copy_run / f"fold_{k}" / "smallcovid-net.safetensors",
                              device="cpu") for k in (1, 2)]
    raw = np.mean([p.predict_images([img])[0].lesion for p in singles], axis=0)
    # The members' raw maps, averaged, then the card's calibration.
    assert np.allclose(ens.predict_images([img])[0].lesion, ens.calibration.apply(raw), atol=1e-6)
    # A real calibration is applied at the model's resolution, before the maps are resized back.
    ens.calibration = Calibration(a=1.5, b=-0.25, method="platt")
    assert np.allclose(ens.predict_images([img])[0].lesion, ens.calibration.apply(raw), atol=0.02)
    # The volume path (uint8 levels in one pass) gives the same numbers as predict_images.
    maps = ens.predict_images([img, img[:40]])
    for (levels, kind), m in zip(ens.predict_levels([img, img[:40]]), maps):
        assert np.array_equal(levels, prob_levels(m.lesion)) and np.array_equal(kind, m.kind)


def test_run_without_final_model_takes_threshold_and_calibration_from_its_summary(copy_run):
    shutil.rmtree(copy_run / "final")
    summary = json.loads((copy_run / "summary.json").read_text())
    summary["calibration"] = {"method": "platt", "a": 1.5, "b": -0.25, "threshold": 0.35}
    (copy_run / "summary.json").write_text(json.dumps(summary))
    ens = load_ensemble("smallcovid-net", weights=copy_run, device="cpu")
    assert ens.threshold == 0.35 and ens.calibration.a == 1.5 and ens.calibration.b == -0.25
    summary["calibration"] = None
    (copy_run / "summary.json").write_text(json.dumps(summary))
    ens = load_ensemble("smallcovid-net", weights=copy_run, device="cpu")
    assert ens.threshold == summary["recommended_threshold"]


def test_too_few_or_foreign_fold_models_are_refused(copy_run, tmp_path):
    shutil.rmtree(copy_run / "fold_2")
    with pytest.raises(SmallCovidError, match="no fold models of 'smallcovid-net' found"):
        load_ensemble("smallcovid-net", weights=copy_run, device="cpu")
    with pytest.raises(SmallCovidError, match="ensemble must be one of none, folds"):
        load_model("smallcovid-net", weights=copy_run, ensemble="bagging")


def test_members_run_two_at_a_time_with_the_same_result(copy_run):
    import torch

    ens = load_model("smallcovid-net", weights=copy_run, device="cpu", ensemble="folds")
    img = np.random.default_rng(1).random((61, 45)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = ens.predict_images([img])[0]
        assert ens._pool is None  # one thread: the members run one after the other
        torch.set_num_threads(2)
        paired = ens.predict_images([img])[0]
        assert ens._pool is not None
    finally:
        torch.set_num_threads(before)
    assert np.allclose(alone.lesion, paired.lesion, atol=1e-6) and np.allclose(alone.types, paired.types, atol=1e-6)
