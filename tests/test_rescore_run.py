"""scripts/rescore_run.py: a finished run scored again under inference-only options (merge, test-time augmentation)."""

from __future__ import annotations

import json

import pytest

from smallcovid.models.checkpoint import load_weights
from smallcovid.training.loop import train
from smallcovid.training.oof import oof_maps
from smallcovid.training.config import TrainConfig
from smallcovid.data.dataset import load_dataset, load_splits
from smallcovid.inference.evaluation import evaluate_maps
from tinydata import load_script


def _script():
    return load_script("scripts/rescore_run.py")


def test_rescored_run_is_scored_under_the_new_merge_and_trains_nothing(tiny_cfg, tmp_path):
    mod = _script()
    run = tmp_path / "mr"
    train(tiny_cfg("mask-rcnn", final=True, schedule="restarts", cycle_epochs=1, epochs=3, lr=2e-3), run)
    options = mod.parse_options(["merge=mask", "merge_min_score=0.05"], "mask-rcnn")
    assert options == {"merge": "mask", "merge_min_score": 0.05}
    summary = mod.rescore(run, options, tmp_path / "mr-mask")
    out = tmp_path / "mr-mask"
    assert summary["rescored"]["model_options"] == options
    assert json.loads((out / "summary.json").read_text())["rescored"]["from"] == "mr"
    # Every model, the final one included, now merges by mask probability; the source run is untouched.
    for sub in ("fold_1", "fold_2", "final"):
        model, card = load_weights(out / sub / "mask-rcnn.safetensors")
        assert (model.config.merge, model.config.merge_min_score) == ("mask", 0.05), sub
        src, _ = load_weights(run / sub / "mask-rcnn.safetensors")
        assert src.config.merge == "score_x_mask"
        assert (out / sub / "history.csv").read_text() == (run / sub / "history.csv").read_text()
    # The summary's figures are those of the fold models under the new merge.
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    data = load_dataset(cfg.data)
    maps, sets = oof_maps(out, cfg, data, load_splits(out / "splits.json", data.stems))
    for fold, m, val in zip(summary["per_fold"], maps, sets):
        thr = fold["tuned"]["threshold"]
        assert fold["tuned"]["dice"] == pytest.approx(evaluate_maps(m, val.samples, thr).summary.mean["dice"])
    final_card = json.loads((out / "final" / "mask-rcnn.json").read_text())
    assert final_card["config"]["merge"] == "mask" and final_card["cv"]["tuned"] == summary["tuned"]


def test_only_inference_options_and_finished_runs(tiny_cfg, tmp_path):
    mod = _script()
    with pytest.raises(SystemExit, match="merge=VALUE, merge_min_score=VALUE, tta=VALUE"):
        mod.parse_options(["fpn_channels=8"], "mask-rcnn")
    with pytest.raises(SystemExit, match="under tta=VALUE$"):
        mod.parse_options(["merge=mask"], "unet")
    assert mod.parse_options(["tta=d4"], "segnet") == {"tta": "d4"}
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(SystemExit, match="not a finished run"):
        mod.rescore(tmp_path / "unfinished", {"merge": "mask"}, tmp_path / "x")


def test_test_time_augmentation_rescored_without_resume_checkpoints(tiny_cfg, tmp_path):
    """A dense run under tta=d4, after its resume checkpoints were deleted: scored, never trained."""
    mod = _script()
    run = tmp_path / "sn"
    train(tiny_cfg("smallcovid-net", final=True, schedule="restarts", cycle_epochs=1, epochs=3), run)
    for ckpt in run.glob("*/resume/resume*.safetensors"):
        ckpt.unlink()  # kept only the records, as a run pruned to save space
    source = json.loads((run / "summary.json").read_text())
    summary = mod.rescore(run, {"tta": "d4"}, tmp_path / "sn-d4")
    out = tmp_path / "sn-d4"
    for sub in ("fold_1", "fold_2", "final"):
        assert (out / sub / "history.csv").read_text() == (run / sub / "history.csv").read_text(), sub
        assert load_weights(out / sub / "smallcovid-net.safetensors")[0].config.tta == "d4"
    new, old = load_weights(out / "final" / "smallcovid-net.safetensors"), load_weights(run / "final" / "smallcovid-net.safetensors")
    assert all((a == b).all() for a, b in zip(new[0].state_dict().values(), old[0].state_dict().values()))
    assert new[1]["training_time_s"] == old[1]["training_time_s"] and new[1]["cv"]["tuned"] == summary["tuned"]
    assert new[1]["threshold"] == pytest.approx(summary["calibration"]["threshold"] if summary["calibration"]
                                                else summary["recommended_threshold"])
    for key in ("device", "elapsed_s", "command"):
        assert summary[key] == source[key]
    # the figures are the fold models' under eight views
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    data = load_dataset(cfg.data)
    maps, sets = oof_maps(out, cfg, data, load_splits(out / "splits.json", data.stems))
    plain, _ = oof_maps(run, TrainConfig.from_dict(json.loads((run / "config.json").read_text())), data,
                        load_splits(run / "splits.json", data.stems))
    for fold, m, val in zip(summary["per_fold"], maps, sets):
        assert fold["tuned"]["dice"] == pytest.approx(evaluate_maps(m, val.samples, fold["tuned"]["threshold"]).summary.mean["dice"])
    assert any(abs(a.lesion - b.lesion).max() > 1e-4 for ms, ps in zip(maps, plain) for a, b in zip(ms, ps))
