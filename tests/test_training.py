"""The training engine: config validation, run folder, progress, resume, corrupt checkpoints, write failures.

Every run is smallcovid-net with 8 filters and depth 2 at 32x32 on the 6-slice tiny
folder (2 folds x 2 epochs, 2 batches per epoch): a few seconds on one busy core.
Resumed runs are compared to an uninterrupted run with the same seed *exactly*:
on CPU, one process and one thread, PyTorch is deterministic for these ops.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.models.checkpoint import load_weights
from smallcovid.training.config import TrainConfig
from smallcovid.training.loop import Progress, TrainingCancelled, train
from tinydata import assert_close_tree, comparable_summary

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent
MODEL = "smallcovid-net"


# ------------------------------------------------------------------ TrainConfig

@pytest.mark.parametrize("kw, match", [
    ({"model": "resnet"}, "unknown model"),
    ({"protocol": "fast"}, "protocol"),
    ({"optimizer": "adam"}, "optimizer"),
    ({"folds": 1}, "folds"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"image_size": 48}, "image_size"),
    ({"image_size": 16}, "image_size"),
    ({"image_size": 2048}, "image_size"),
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.0}, "threshold"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ({"patience": -1}, "patience"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"model_config": {"filterz": 3}}, "filterz"),
    ({"model_config": {"filters": 0}}, "filters"),
])
def test_config_validation(kw, match):
    base = dict(model=MODEL, data="d")
    base.update(kw)
    with pytest.raises(SmallCovidError, match=match) as info:
        TrainConfig(**base)
    assert "\n" not in str(info.value)


def test_config_json_round_trip_and_paper_protocol():
    cfg = TrainConfig(model=MODEL, data="d", model_config={"filters": 8})
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(SmallCovidError, match="unknown training option"):
        TrainConfig.from_dict({"model": MODEL, "data": "d", "colour": "red"})
    p = TrainConfig.paper(model=MODEL, data="d")
    assert (p.optimizer, p.lr, p.epochs, p.steps_per_epoch, p.threshold, p.protocol) == ("sgd", 1e-4, 20, 600, 0.8, "paper")


# ------------------------------------------------------------------ a tiny run

def test_run_folder_layout(tiny_run, tiny_cfg):
    run, summary = tiny_run
    cfg = tiny_cfg(final=True)
    assert json.loads((run / "config.json").read_text()) == json.loads(cfg.to_json())
    splits = json.loads((run / "splits.json").read_text())
    assert splits["seed"] == cfg.seed and len(splits["folds"]) == 2
    for k in (1, 2):
        fold = run / f"fold_{k}"
        model, card = load_weights(fold / f"{MODEL}.safetensors")
        assert card["architecture"] == MODEL and card["input_size"] == 32 and card["fold"] == k
        with open(fold / "history.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        assert all(r["val_dice"] != "" and float(r["train_loss"]) > 0 for r in rows)
        m = json.loads((fold / "metrics.json").read_text())
        assert m["fold"] == k and m["n_val"] == 3 and m["best_epoch"] in (1, 2)
        assert set(m["at_threshold"]["mean"]) >= {"dice", "precision", "recall", "iou", "specificity"}
    s = json.loads((run / "summary.json").read_text())
    assert s["model"] == MODEL and s["folds"] == 2 and s["n_slices"] == 6
    for key in ("dice", "precision", "recall", "iou"):
        assert set(s["at_threshold"][key]) == {"mean", "std"}
        assert 0.0 <= s["at_threshold"][key]["mean"] <= 1.0
    assert len(s["per_fold"]) == 2 and 0 < s["recommended_threshold"] < 1
    assert "train.py" in s["command"] and "--final" in s["command"]
    # final model + card
    final = run / "final" / f"{MODEL}.safetensors"
    model, card = load_weights(final)
    assert card["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest() == s["final"]["sha256"]
    from smallcovid.training.cvsummary import operating_threshold

    assert card["threshold"] == operating_threshold(s)[0]  # calibrated when a calibration was fitted
    assert s["plateau"]["per_fold"] and {"best_epoch", "epochs_run", "ok", "curve"} <= set(s["plateau"]["per_fold"][0])
    assert card["cv"]["plateau"] == s["plateau"]
    assert card["cv"]["at_threshold"] == s["at_threshold"] and card["cv"]["folds"] == 2
    # every slice once, scored by the fold that held it out; a fold's slices average to its Dice
    rows = s["per_slice"]
    assert sorted(r["slice"] for r in rows) == sorted(x for f in splits["folds"] for x in f["val"])
    for k, fold in enumerate(splits["folds"], start=1):
        mine = [r for r in rows if r["fold"] == k]
        assert sorted(r["slice"] for r in mine) == sorted(fold["val"])
        assert np.mean([r["dice"] for r in mine]) == pytest.approx(s["per_fold"][k - 1]["tuned"]["dice"], abs=1e-4)
    assert all(0 <= r["lesion_share"] <= 1 and 0 <= r["recall"] <= 1 for r in rows)
    assert card["cv"]["per_slice"] == rows
    assert card["input_size"] == 32 and card["params"] > 0 and card["training"]["n_slices"] == 6
    assert not list(run.rglob("*.tmp"))


def test_progress_events_with_eta(tiny_cfg, tmp_path):
    events: list[Progress] = []
    train(tiny_cfg(), tmp_path / "run", progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds.count("epoch") == 4 and kinds.count("batch") == 8 and kinds[-1] == "done"
    assert [e.fold for e in events if e.kind == "epoch"] == [1, 1, 2, 2]
    first_epoch = kinds.index("epoch")
    assert all(e.eta_s is None for e in events[:first_epoch])  # nothing timed yet
    timed = [e for e in events[first_epoch:]]
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in timed)
    epochs = [e for e in events if e.kind == "epoch"]
    assert epochs[-1].eta_s == 0.0 and epochs[0].eta_s > 0
    assert all(e.val_dice is not None and 0 <= e.val_dice <= 1 for e in epochs)
    assert all(b.elapsed_s <= a.elapsed_s for a, b in zip(events[1:], events))
    batch = next(e for e in events if e.kind == "batch")
    assert (batch.step, batch.steps, batch.epochs, batch.folds) == (1, 2, 2, 2)


def test_same_folder_with_other_config_is_refused(tiny_cfg, copy_run):
    with pytest.raises(SmallCovidError, match="different configuration"):
        train(tiny_cfg(final=True, seed=99), copy_run)


def test_a_run_folder_trains_in_one_process_at_a_time(tiny_run, tiny_cfg, copy_run, monkeypatch):
    """A second process on a run folder being trained is refused after a short wait, naming the
    owner; the lock goes with its owner, however that ends (here: SIGKILL), so the run then resumes."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    from smallcovid.training import runlock
    from smallcovid.training.plateau import extend_run
    from smallcovid.training.runlock import RunBusyError, hold_run

    monkeypatch.setattr(runlock, "WAIT_S", 0.3)

    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom smallcovid.training.runlock import hold_run\n"
         "with hold_run(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n", str(copy_run)],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert owner.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in copy_run.rglob("*") if p.is_file()}
        with pytest.raises(RunBusyError, match=f"pid {owner.pid}"):
            train(tiny_cfg(final=True), copy_run)
        with pytest.raises(RunBusyError, match="another process"):
            extend_run(copy_run, 99)
        assert {p: p.stat().st_mtime_ns for p in copy_run.rglob("*") if p.is_file()} == before
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    summary = train(tiny_cfg(final=True), copy_run)
    assert_close_tree(comparable_summary(summary), comparable_summary(tiny_run[1]))
    # A process that lets go within the wait (a cancelled job still exiting) is waited for.
    monkeypatch.setattr(runlock, "WAIT_S", 10.0)
    held, release = threading.Event(), threading.Event()

    def briefly():
        with hold_run(copy_run):
            held.set()
            release.wait(10)

    other = threading.Thread(target=briefly)
    other.start()
    held.wait(5)
    threading.Timer(1.0, release.set).start()
    t0 = time.monotonic()
    with hold_run(copy_run):
        waited = time.monotonic() - t0
    other.join()
    assert 0.8 < waited < 5


def test_finished_run_reruns_to_the_same_summary(tiny_run, tiny_cfg, copy_run):
    summary = train(tiny_cfg(final=True), copy_run)
    assert_close_tree(comparable_summary(summary), comparable_summary(tiny_run[1]))


# ------------------------------------------------------------------ resume

def _stop_after(n: int):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > n

    return should_stop


# 14 batches in all: folds 1 and 2 have 2 epochs x 2 batches, the final model 2 epochs x 3.
@pytest.mark.parametrize("batches, left", [(3, 12), (7, 8), (13, 3)],
                         ids=["fold1-epoch2", "fold2-epoch2", "final-epoch2"])
def test_resume_after_cancel_equals_uninterrupted(tiny_run, tiny_cfg, tmp_path, batches, left):
    run = tmp_path / "run"
    with pytest.raises(TrainingCancelled):
        train(tiny_cfg(final=True), run, should_stop=_stop_after(batches))
    assert not (run / "summary.json").exists()
    events = []
    resumed = train(tiny_cfg(final=True), run, progress=events.append)
    # exact equality: same process, one thread, CPU
    assert_close_tree(comparable_summary(resumed), comparable_summary(tiny_run[1]))
    assert resumed["final"]["sha256"] == tiny_run[1]["final"]["sha256"]  # bit-identical final weights
    # the resumed run only trained what was left after the last completed epoch
    assert sum(e.kind == "batch" for e in events) == left
    # ... and its ETA counts the epochs done before the interruption (0 at the end, not more)
    assert [e for e in events if e.kind == "epoch"][-1].eta_s == 0.0


def test_corrupt_checkpoint_restarts_the_fold(tiny_run, tiny_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    with pytest.raises(TrainingCancelled):
        train(tiny_cfg(final=True), run, should_stop=_stop_after(2))  # fold 1, epoch 1 done
    (state,) = (run / "fold_1" / "resume").glob("resume*.safetensors")
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])  # truncated by a crash / full disk
    events = []
    with caplog.at_level(logging.WARNING):
        resumed = train(tiny_cfg(final=True), run, progress=events.append)
    assert "afresh" in caplog.text
    assert [e.epoch for e in events if e.kind == "epoch" and e.fold == 1] == [1, 2]  # fold 1 from scratch
    with open(run / "fold_1" / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]
    assert_close_tree(comparable_summary(resumed), comparable_summary(tiny_run[1]))


def test_corrupt_resume_record_restarts_the_fold(tiny_run, tiny_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    with pytest.raises(TrainingCancelled):
        train(tiny_cfg(final=True), run, should_stop=_stop_after(6))  # fold 2, epoch 1 done
    record = run / "fold_2" / "resume" / "resume.json"
    record.write_text(record.read_text()[:40])
    with caplog.at_level(logging.WARNING):
        resumed = train(tiny_cfg(final=True), run)
    assert "unreadable checkpoint" in caplog.text
    assert_close_tree(comparable_summary(resumed), comparable_summary(tiny_run[1]))


def test_resume_does_not_train_an_early_stopped_fold_further(tiny_cfg, tmp_path):
    cfg = tiny_cfg(epochs=5, patience=1, lr=1e-6)  # nothing improves after epoch 1 -> stop at 2
    clean = train(cfg, tmp_path / "clean")
    rows = (tmp_path / "clean" / "fold_1" / "history.csv").read_text()
    assert len(rows.splitlines()) - 1 < 5  # it did stop early

    reached_fold2 = {"flag": False}

    def progress(p):
        reached_fold2["flag"] |= p.fold == 2

    with pytest.raises(TrainingCancelled):
        train(cfg, tmp_path / "run", progress=progress, should_stop=lambda: reached_fold2["flag"])
    resumed = train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "fold_1" / "history.csv").read_text() == rows
    assert_close_tree(comparable_summary(resumed), comparable_summary(clean))


# ------------------------------------------------------------------ write failures

def _final_name_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.is_file()]


def _assert_no_partial_files(run: Path) -> None:
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    for p in run.rglob("*.json"):
        json.loads(p.read_text())  # every JSON under its final name is complete
    for p in run.rglob(f"{MODEL}.safetensors"):
        load_weights(p)  # every weights file loads and matches its card's sha256


@pytest.mark.parametrize("target", ["weights", "resume-state", "replace-summary"])
def test_disk_full_fails_cleanly_and_resumes(tiny_run, tiny_cfg, tmp_path, monkeypatch, target):
    import smallcovid.core.fsutil
    import smallcovid.models.checkpoint
    import smallcovid.training.state

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_replace = os.replace
    if target == "weights":
        monkeypatch.setattr(smallcovid.models.checkpoint, "save_file", disk_full)
    elif target == "resume-state":
        monkeypatch.setattr(smallcovid.training.state, "save_file", disk_full)
    else:
        def replace(src, dst):
            if str(dst).endswith("summary.json"):
                disk_full()
            real_replace(src, dst)
        monkeypatch.setattr(smallcovid.core.fsutil.os, "replace", replace)
    run = tmp_path / "run"
    with pytest.raises(OSError) as info:
        train(tiny_cfg(final=True), run)
    assert info.value.errno == errno.ENOSPC
    _assert_no_partial_files(run)
    assert not (run / "summary.json").exists()
    if target == "weights":
        assert not (run / "fold_1" / f"{MODEL}.safetensors").exists()
    if target == "resume-state":
        assert not list((run / "fold_1" / "resume").glob("resume*.safetensors"))
    monkeypatch.undo()  # space freed: the same call finishes the run
    resumed = train(tiny_cfg(final=True), run)
    assert_close_tree(comparable_summary(resumed), comparable_summary(tiny_run[1]))
    _assert_no_partial_files(run)


def _train_main():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_train_cli_reports_disk_full_in_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    import smallcovid.models.checkpoint

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(smallcovid.models.checkpoint, "save_file", disk_full)
    rc = _train_main()(["--model", MODEL, "--data", str(tiny_data), "--folds", "2", "--epochs", "1",
                        "--image-size", "32", "--model-option", "filters=8", "--model-option", "depth=2",
                        "--out", str(tmp_path), "--run-id", "r", "--threads", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and lines == ["error: training stopped: No space left on device"]
    assert "Traceback" not in err
    _assert_no_partial_files(tmp_path / "r")


# ------------------------------------------------------------------ structure

ENGINE = ("progress", "tensors", "state", "config", "schedule", "precision", "runfolder", "pseudo", "fold", "distill", "semi", "oof", "calibrate", "cvsummary", "loop")


def _training_imports(module: str) -> tuple[set[str], bool]:
    """(smallcovid.training modules ``module`` imports, whether any import sits inside a function)."""
    import ast

    tree = ast.parse((REPO / "smallcovid" / "training" / f"{module}.py").read_text())
    names: set[str] = set()
    nested = False
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested |= any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(fn))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smallcovid.training."):
            names.add(node.module.rsplit(".", 1)[1])
    return names, nested


def test_engine_imports_point_one_way():
    order = {m: i for i, m in enumerate(ENGINE)}
    for module in ENGINE:
        deps, nested = _training_imports(module)
        assert not nested, f"{module}.py imports inside a function"
        later = {d for d in deps if d in order and order[d] >= order[module]}
        assert not later, f"{module}.py imports {later}, which come after it in {ENGINE}"


def test_public_names_stay_importable():
    from smallcovid.inference.predictor import resolve_device as old
    from smallcovid.training import loop, progress, tensors
    from smallcovid.core.devices import resolve_device

    assert old is resolve_device
    assert loop.Progress is progress.Progress and loop.TrainingCancelled is progress.TrainingCancelled
    assert loop.to_tensors is tensors.to_tensors


def test_device_resolution_and_description():
    import torch

    from smallcovid.core.devices import describe_device, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(SmallCovidError, match="tpu"):
        resolve_device("tpu")
    text = describe_device(torch.device("cpu"))
    from smallcovid.core.devices import cpu_model
    assert cpu_model() in text and "x86_64" not in cpu_model()
    n = torch.get_num_threads()
    assert text.startswith("cpu (") and text.endswith(f"{n} thread{'' if n == 1 else 's'})")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert describe_device(torch.device("cpu")).endswith(", 1 thread)")
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ time across resumes, thresholds, names

def test_elapsed_time_adds_up_across_a_cancel_and_a_resume(tiny_cfg, tmp_path):
    import time

    run = tmp_path / "run"
    first: list[Progress] = []
    seen_clock_at_epoch = []

    def slow(p: Progress) -> None:
        first.append(p)
        if p.kind == "epoch":  # saved with each epoch: a killed process keeps its time up to there
            seen_clock_at_epoch.append((run / "clock.json").is_file())
        if p.kind == "batch":
            time.sleep(0.3)

    # fold 1: epoch 1 (2 batches), then 1 batch of epoch 2, then the cancel
    with pytest.raises(TrainingCancelled):
        train(tiny_cfg(final=True), run, progress=slow, should_stop=_stop_after(3))
    assert seen_clock_at_epoch == [True]
    spent = json.loads((run / "clock.json").read_text())["elapsed_s"]
    assert spent >= 0.9 and spent > first[-1].elapsed_s  # three batches' sleeps: the cut epoch's one counts too

    events: list[Progress] = []
    summary = train(tiny_cfg(final=True), run, progress=events.append)
    assert all(e.elapsed_s >= spent for e in events)
    assert summary["elapsed_s"] >= spent + (events[-1].elapsed_s - events[0].elapsed_s)
    assert json.loads((run / "summary.json").read_text())["elapsed_s"] == summary["elapsed_s"]
    _, card = load_weights(run / "final" / f"{MODEL}.safetensors")
    assert card["training_time_s"] == summary["elapsed_s"]  # one total: the card's and the summary's
    assert json.loads((run / "clock.json").read_text())["elapsed_s"] >= summary["elapsed_s"]


def test_clock_record_and_spent_time_checks(tmp_path, caplog):
    from smallcovid.training.progress import spent_seconds
    from smallcovid.training.progress import Clock

    assert spent_seconds(tmp_path) == 0.0
    (tmp_path / "clock.json").write_text('{"elapsed_s": 12.5}')
    assert spent_seconds(tmp_path) == 12.5
    assert Clock(4, spent_s=12.5).elapsed() >= 12.5
    for bad in ("{not json", '{"elapsed_s": -3}', '{"elapsed_s": "soon"}', "[]"):
        (tmp_path / "clock.json").write_text(bad)
        with caplog.at_level(logging.WARNING):
            assert spent_seconds(tmp_path) == 0.0
        assert "clock.json" in caplog.text
        caplog.clear()
    for bad in (-1.0, float("inf"), float("nan"), "3"):
        with pytest.raises(ValueError, match="spent_s"):
            Clock(4, spent_s=bad)


def test_a_cancel_in_the_final_model_names_the_final_model(tiny_cfg, tmp_path):
    # 13 batches: both folds (8) and the final model's first epoch (3) and 2 batches of its second
    with pytest.raises(TrainingCancelled, match=r"^final model \(all data\) cancelled at epoch 2$"):
        train(tiny_cfg(final=True), tmp_path / "run", should_stop=_stop_after(13))


def test_operating_threshold_is_the_calibrated_one_when_calibrated():
    from smallcovid.training.cvsummary import operating_threshold, threshold_text

    assert operating_threshold({"recommended_threshold": 0.5, "calibration": {"threshold": 0.1}}) == (0.1, 0.5)
    assert operating_threshold({"recommended_threshold": 0.55, "calibration": None}) == (0.55, None)
    assert operating_threshold({"recommended_threshold": 0.55}) == (0.55, None)
    assert threshold_text({"recommended_threshold": 0.5, "calibration": {"threshold": 0.1}}) == \
        "0.10 on calibrated probabilities (0.50 on raw probabilities)"
    assert threshold_text({"recommended_threshold": 0.55, "calibration": None}) == \
        "0.55 on raw probabilities (no calibration fitted)"
    for bad in ({}, {"recommended_threshold": 1.5}, {"recommended_threshold": "0.5"},
                {"recommended_threshold": 0.5, "calibration": {"a": 1.0}}, {"recommended_threshold": 0.5,
                                                                           "calibration": [0.1]}):
        with pytest.raises(ValueError, match="summary"):
            operating_threshold(bad)


def test_console_summary_states_the_threshold_the_card_uses(tiny_run):
    from smallcovid.training.console import format_summary
    from smallcovid.training.cvsummary import operating_threshold, threshold_text

    _, summary = tiny_run
    _, card = load_weights(Path(summary["final"]["weights"]))
    assert (card["threshold"], card.get("threshold_uncalibrated")) == operating_threshold(summary)
    text = format_summary(summary)
    line = next(x for x in text.splitlines() if x.startswith("recommended threshold"))
    assert line == ("recommended threshold (out-of-fold), the one the final model's card uses: "
                    + threshold_text(summary))
    assert f"{card['threshold']:.2f} on " in line
    calibrated = {**summary, "recommended_threshold": 0.5, "calibration": {"threshold": 0.1}}
    line = next(x for x in format_summary(calibrated).splitlines() if x.startswith("recommended threshold"))
    assert line.endswith("the one the final model's card uses: 0.10 on calibrated probabilities "
                         "(0.50 on raw probabilities)")
    no_final = {k: v for k, v in calibrated.items() if k != "final"}
    assert "the one the fold models use: 0.10 on calibrated" in format_summary(no_final)


def test_restarts_schedule_and_plateau_stop(tiny_cfg):
    """Cosine cycles of c, 2c, 4c epochs; a fold stops at the end of a whole cycle without a new best."""
    from smallcovid.training.schedule import cycle_ends, lr_at, plateau_epochs
    from smallcovid.training.plateau import fold_plateau

    cfg = tiny_cfg(schedule="restarts", cycle_epochs=4, epochs=40, lr=1e-3)
    assert cycle_ends(4, 40) == [4, 12, 28] and cycle_ends(10, 75) == [10, 30, 70]
    lrs = [lr_at(cfg, s, 400, steps_per_epoch=10) for s in range(400)]
    assert max(lrs) == pytest.approx(1e-3, rel=0.05)
    assert lrs[39] < 0.05e-3 and lrs[40] > 0.9e-3  # end of cycle 1 (4 epochs), restart
    assert lrs[119] < 0.05e-3 and lrs[120] > 0.9e-3  # end of cycle 2 (8 more epochs)
    assert plateau_epochs(cfg, [5, 11, 12]) == 12 and plateau_epochs(cfg, [30, 30, 3]) == 40  # capped at epochs
    assert plateau_epochs(tiny_cfg(), [3]) is None
    meta = {"epoch": 28, "best_epoch": 12, "history": [{"val_dice_best": 0.5}] * 28}
    assert fold_plateau(meta)["ok"] and not fold_plateau({**meta, "best_epoch": 25})["ok"]
    with pytest.raises(SmallCovidError, match="schedule"):
        tiny_cfg(schedule="linear")


def test_restarts_run_stops_folds_at_a_plateau(tiny_cfg, tmp_path):
    cfg = tiny_cfg(schedule="restarts", cycle_epochs=1, epochs=30, lr=1e-7, final=True)  # nothing improves
    s = train(cfg, tmp_path / "run")
    pl = s["plateau"]
    for f in pl["per_fold"]:
        assert f["epochs_run"] < 30 and f["best_epoch"] <= 0.75 * f["epochs_run"]
    assert pl["ok"] and pl["final_epochs"] in (1, 3, 7, 15)


def test_extend_a_restarts_run_past_its_cap(tiny_cfg, tmp_path, monkeypatch):
    """Folds that ran into the cap short of their plateau train on after --extend-epochs, exactly
    as with the higher cap from the start (the learning rate of an epoch does not depend on the cap)."""
    from smallcovid.training import plateau
    from smallcovid.training.plateau import extend_run

    short = tiny_cfg(schedule="restarts", cycle_epochs=1, epochs=3, lr=1e-3, final=True)
    at_cap = train(short, tmp_path / "run")
    monkeypatch.setattr(plateau, "PLATEAU_SHARE", 0.0)  # every fold at the cap counts as short of its plateau
    assert extend_run(tmp_path / "run", 7) == [k for k in (1, 2) if json.loads(
        (tmp_path / "run" / f"fold_{k}" / "resume" / "resume.json").read_text())["meta"]["epoch"] >= 3]
    monkeypatch.undo()
    assert not (tmp_path / "run" / "summary.json").exists()
    final_at_cap = json.loads((tmp_path / "run" / "final" / "resume" / "resume.json").read_text())["meta"]["epoch"]
    # What the old cap gave stays a finished run folder beside it, without the training lock.
    snap = tmp_path / "run.cap3"
    assert plateau.snapshot_dir(tmp_path / "run", 3) == snap
    assert json.loads((snap / "summary.json").read_text()) == json.loads(json.dumps(at_cap))
    assert TrainConfig.from_dict(json.loads((snap / "config.json").read_text())).epochs == 3
    assert list((snap / "final").glob("*.safetensors")) and not (snap / ".train.lock").exists()
    cfg = TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    # The folds' median best epoch moving to a later cycle (so the final model must train on):
    monkeypatch.setattr(plateau, "plateau_epochs", lambda c, bests: c.epochs)
    extended = train(cfg, tmp_path / "run")
    straight = train(tiny_cfg(schedule="restarts", cycle_epochs=1, epochs=7, lr=1e-3, final=True), tmp_path / "long")
    monkeypatch.undo()
    for a, b in zip(extended["plateau"]["per_fold"], straight["plateau"]["per_fold"]):
        assert a["epochs_run"] == b["epochs_run"] and a["best_epoch"] == b["best_epoch"]
        assert a["curve"] == pytest.approx(b["curve"], abs=1e-6)
    # The final model went on from where it stood at the old cap, to the same weights as straight.
    assert extended["plateau"]["final_epochs"] == straight["plateau"]["final_epochs"] == 7 > final_at_cap
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "run" / "final" / "history.csv"))]
    assert epochs == list(range(1, 8))  # continued, not trained again
    ext_model, _ = load_weights(next((tmp_path / "run" / "final").glob("*.safetensors")))
    straight_model, _ = load_weights(next((tmp_path / "long" / "final").glob("*.safetensors")))
    for (name, a), b in zip(ext_model.state_dict().items(), straight_model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    with pytest.raises(SmallCovidError, match="above"):
        extend_run(tmp_path / "run", 7)
    with pytest.raises(SmallCovidError, match="restarts"):
        train(tiny_cfg(epochs=1), tmp_path / "cos")
        extend_run(tmp_path / "cos", 5)


def test_extend_reopens_only_folds_short_of_their_plateau(tiny_cfg, tmp_path):
    """A fold that passed the plateau check at the cap keeps its model; the record of the
    extension makes the run's command reproduce it."""
    from smallcovid.training.runfolder import read_extensions
    from smallcovid.training.plateau import extend_run, fold_plateau

    train(tiny_cfg(schedule="restarts", cycle_epochs=1, epochs=3, lr=1e-3, final=True), tmp_path / "run")
    for k, best in ((1, 3), (2, 1)):  # fold 1: best epoch at the cap; fold 2: a plateau
        path = tmp_path / "run" / f"fold_{k}" / "resume" / "resume.json"
        record = json.loads(path.read_text())
        record["meta"].update(epoch=3, best_epoch=best)
        path.write_text(json.dumps(record))
    metas = [json.loads((tmp_path / "run" / f"fold_{k}" / "resume" / "resume.json").read_text())["meta"] for k in (1, 2)]
    assert not fold_plateau(metas[0])["ok"] and fold_plateau(metas[1])["ok"]
    assert extend_run(tmp_path / "run", 7) == [1]
    assert read_extensions(tmp_path / "run") == [{"from": 3, "to": 7, "folds": [1]}]
    assert (tmp_path / "run" / "fold_2" / "metrics.json").exists()
    assert not (tmp_path / "run" / "fold_1" / "metrics.json").exists()
    (tmp_path / "run" / "fold_2" / "metrics.json").unlink()  # even unfinished, a kept fold keeps its cap
    s = train(TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text())), tmp_path / "run")
    assert s["plateau"]["per_fold"][0]["epochs_run"] > 3 and s["plateau"]["per_fold"][1]["epochs_run"] == 3
    assert s["plateau"]["extensions"] == [{"from": 3, "to": 7, "folds": [1]}]
    assert "--epochs 3 " in s["command"] and "&& python train.py --resume runs/run --extend-epochs 7" in s["command"]
    with pytest.raises(SmallCovidError, match="nothing to extend"):
        extend_run(tmp_path / "run", 15)


def test_cancel_during_an_image_decode_is_not_an_input_error(monkeypatch):
    # The worker's SIGTERM handler raises TrainingCancelled wherever the process is; inside
    # a decoder that wraps any Exception as a corrupt file, a cancel used to fail the job.
    from PIL import Image

    from smallcovid.io import decoders

    def stopped(*args, **kwargs):
        raise TrainingCancelled("stopped by signal")

    monkeypatch.setattr(Image, "open", stopped)
    with pytest.raises(TrainingCancelled):
        decoders.decode_image(b"\x89PNG....", "x.png", "PNG")


def test_only_folds_trains_those_folds_as_a_whole_run_does_then_resume_finishes(tiny_run, tiny_cfg, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SmallCovidError, match="1..2"):
        train(tiny_cfg(final=True), run, only_folds=[3])
    events = []
    part = train(tiny_cfg(final=True), run, only_folds=[2], progress=events.append)
    assert [e for e in events if e.kind == "epoch"][-1].eta_s == 0.0  # the ETA counts fold 2 alone
    assert part["partial"] and part["folds"] == [2] and [r["fold"] for r in part["plateau"]] == [2]
    assert not (run / "fold_1").exists() and not (run / "summary.json").exists() and not (run / "final").exists()
    assert json.loads((run / "partial.json").read_text()) == part
    # fold 2 alone is the same fold 2 as the whole run's (same seed: same batches and weights)
    whole = tiny_run[0] / "fold_2" / f"{MODEL}.safetensors"
    assert (run / "fold_2" / f"{MODEL}.safetensors").read_bytes() == whole.read_bytes()
    resumed = train(tiny_cfg(final=True), run)  # the rest of the run: fold 1, the summary, the final model
    assert_close_tree(comparable_summary(resumed), comparable_summary(tiny_run[1]))


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    from smallcovid.core.devices import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD  EPYC 9B14\nflags\t\t: fpu\n")
    assert cpu_model(str(info)) == "AMD EPYC 9B14"
    info.write_text("processor\t: 0\n")
    assert cpu_model(str(info)) == ""
    assert cpu_model(str(tmp_path / "missing")) == ""


def test_a_calibration_that_raises_the_held_out_error_is_declined(tiny_cfg, tmp_path, monkeypatch):
    """Raw probabilities stay when the nested fit would miscalibrate: the summary and card say why."""
    import smallcovid.training.cvsummary as cvsummary

    fitted = {"method": "platt", "a": 0.5, "b": -0.3, "threshold": 0.3, "ece_before": 0.019, "ece_after": 0.034}
    monkeypatch.setattr(cvsummary, "calibrate_folds", lambda maps, samples: dict(fitted))
    summary = train(tiny_cfg(final=True), tmp_path / "run")
    assert summary["calibration"] is None
    assert summary["calibration_declined"] == {**{k: fitted[k] for k in ("method", "a", "b", "ece_before",
                                                                          "ece_after")},
                                               "why": "the nested calibration error was not lower than the raw "
                                                      "probabilities'"}
    _, card = load_weights(Path(summary["final"]["weights"]))
    assert card["threshold"] == summary["recommended_threshold"] and "calibration" not in card
    assert card["calibration_declined"]["ece_after"] == 0.034
    fitted["ece_after"] = 0.01  # lower: kept
    summary = train(tiny_cfg(final=True), tmp_path / "run2")
    assert summary["calibration"]["ece_after"] == 0.01 and "calibration_declined" not in summary
