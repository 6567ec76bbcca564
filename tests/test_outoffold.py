"""Out-of-fold maps of a fold ensemble (smallcovid.inference.outoffold) and the Compare page's choice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import viewerhelpers as vh
from apphelpers import blob_slice, make_labeled_folder, png_bytes
from smallcovid.app import analysis
from smallcovid.data.dataset import load_dataset
from smallcovid.data.fingerprint import fingerprint_record
from smallcovid.inference.ensemble import EnsemblePredictor, load_ensemble
from smallcovid.inference.evaluation import evaluate_maps, predict_set
from smallcovid.inference.framing import segment_slice
from smallcovid.inference.outoffold import held_out_predictor, predict_out_of_fold
from smallcovid.inference.predictor import Predictor
from smallcovid.io import Slice, read_scan
from smallcovid.models import build_model
from smallcovid.models.calibration import Calibration
from smallcovid.models.checkpoint import load_weights, save_weights

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _member(seed: int, trained_on) -> Predictor:
    torch.manual_seed(seed)
    card = {"training_slices": fingerprint_record(trained_on)}
    return Predictor(build_model("smallcovid-net", filters=4, depth=2).eval(), image_size=32, card=card,
                     calibration=Calibration())


def test_each_slice_is_scored_by_the_members_that_held_it_out(tmp_path):
    data = load_dataset(make_labeled_folder(tmp_path / "set", n=5, size=40))
    s = data.samples
    images = [x.image for x in s]
    # Member 0 held out slices 0 and 1, member 1 slice 2, member 2 slices 3 and 1; every member
    # trained on slice 4; none on slice 1 except member 1.
    members = [_member(0, images[2:5]), _member(1, images[0:2] + images[3:5]), _member(2, [images[0], images[2], images[4]])]
    ens = EnsemblePredictor(members, card={}, threshold=0.5)  # identity calibration: members' own maps
    maps, in_sample = predict_out_of_fold(ens, data)
    assert in_sample == 1

    def own(pred, k):
        return segment_slice(pred, Slice(s[k].image, "display", None, s[k].stem))[0]

    assert np.array_equal(maps[0].lesion, own(members[0], 0).lesion)  # held out by member 0 only
    assert np.array_equal(maps[2].lesion, own(members[1], 2).lesion)
    assert np.allclose(maps[1].lesion, own(ens.with_members([members[0], members[2]]), 1).lesion)
    assert np.allclose(maps[4].lesion, own(ens, 4).lesion)  # every member trained on it: the whole ensemble
    assert not np.array_equal(maps[0].lesion, own(members[1], 0).lesion)  # the members do differ
    with pytest.raises(Exception, match="at least 2"):
        EnsemblePredictor(members[:1], card={}, threshold=0.5)


def _fold_weights(tiny_weights: Path, tmp_path: Path, trained_on: list[list[np.ndarray]]) -> Path:
    """A weights folder whose smallcovid-net ships len(trained_on) fold models that differ,
    fold k's card listing ``trained_on[k - 1]`` as its training slices."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    folds = weights / "smallcovid-net-folds"
    folds.mkdir()
    shipped, _ = load_weights(weights / "smallcovid-net.safetensors")
    for k, images in enumerate(trained_on, start=1):
        torch.manual_seed(k)  # members that differ: fold 1 the shipped tiny model, the others new ones
        model = shipped if k == 1 else build_model("smallcovid-net", **shipped.config.__dict__)
        save_weights(model, folds / f"fold_{k}.safetensors",
                     card={"input_size": 64, "training_slices": fingerprint_record(images)})
    return weights


def test_segment_page_out_of_fold_runs_the_fold_model_that_held_the_slice_out(app_env, tiny_weights, tmp_path,
                                                                               monkeypatch):
    img, _ = blob_slice(64, seed=5)
    weights = _fold_weights(tiny_weights, tmp_path, [[img], []])  # fold 2 held the slice out
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader(key="scan_files").set_value(("slice.png", png_bytes(img), "image/png")).run()
    at.toggle(key="models_folds").set_value(True).run()
    label = next(o for o in at.multiselect(key="models").value if o.startswith("smallcovid-net"))
    assert not at.exception and not at.error
    assert any(label in w.value for w in at.warning if "in-sample" in w.value)

    def shown_area() -> int:
        return vh.rows(at)[label]["area"]

    whole = shown_area()
    at.checkbox(key="seg_oof").check().run()
    assert not at.exception and not at.error
    assert not [w for w in at.warning if "in-sample" in w.value and label in w.value]
    assert any(c.value.startswith(f"{label}: out of fold") for c in at.caption)
    ens = load_ensemble("smallcovid-net", device="cpu")
    scan = read_scan(png_bytes(img), "slice.png")
    threshold = vh.rows(at)[label]["threshold"]
    held_out = held_out_predictor(ens, scan.pixels)[0]
    assert len(held_out.members) == 1 and held_out.members[0] is ens.members[1]
    expected = int((held_out.predict_scan(scan).lesion >= threshold).sum())
    assert shown_area() == expected
    assert whole == int((ens.predict_scan(scan).lesion >= threshold).sum()) != expected  # the choice shows


def test_compare_page_out_of_fold_scores_the_fold_ensemble_on_held_out_slices(app_env, tiny_weights, tmp_path,
                                                                              monkeypatch):
    folder = make_labeled_folder(tmp_path / "set", n=4, size=48)
    data = load_dataset(folder)
    weights = _fold_weights(tiny_weights, tmp_path, [[x.image for x in data.samples[2:]],
                                                     [x.image for x in data.samples[:2]]])
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/compare.py").run()
    at.text_input(key="cmp_path").set_value(str(folder)).run()
    assert not [c for c in at.checkbox if c.key == "cmp_oof"]  # no fold ensemble chosen: no choice
    at.toggle(key="cmp_models_folds").set_value(True).run()
    label = next(o for o in at.multiselect(key="cmp_models").options if o.startswith("smallcovid-net"))
    at.multiselect(key="cmp_models").set_value([label])
    at.slider(key="cmp_thr").set_value(0.5)
    at.checkbox(key="cmp_oof").check()
    at.button(key="cmp_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    maps, in_sample = predict_out_of_fold(load_ensemble("smallcovid-net", device="cpu"), data)
    assert in_sample == 0
    r = evaluate_maps(maps, data.samples, 0.5)
    whole = evaluate_maps(predict_set(load_ensemble("smallcovid-net", device="cpu"), data), data.samples, 0.5)
    assert r.summary.mean["dice"] != pytest.approx(whole.summary.mean["dice"], abs=1e-3)  # the choice matters here
    assert at.dataframe[0].value.loc[label, "Dice"] == analysis.format_mean_std(r.summary.mean["dice"],
                                                                                 r.summary.std["dice"])
    assert not [w for w in at.warning if "in-sample" in w.value]  # every slice held out by one member
    assert any("out of fold" in c.value for c in at.caption)
    at.checkbox(key="cmp_oof").uncheck().run()  # in-sample again: said, and the table is stale until rerun
    assert any("press Run comparison" in c.value for c in at.caption)
    # The Models page points there, for the architecture whose fold models ship only.
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/models.py").run()
    assert not at.exception
    pointers = [c.value for c in at.caption if "*Out of fold*" in c.value]
    assert len(pointers) == 1
