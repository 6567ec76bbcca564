"""The training queue: a plain file of runs, trained one after another, resumed, reported."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from smallcovid.training.config import TrainConfig
from tinydata import load_script


TINY_RUN = "--folds 2 --epochs 2 --batch-size 2 --image-size 32 --seed 3 --device cpu --model-option filters=4"


def queue_module():
    return load_script("scripts/train_queue.py")


def test_queue_file_parsing(tmp_path, monkeypatch):
    q = queue_module()
    monkeypatch.setenv("DATA", "/data/x")
    f = tmp_path / "queue.txt"
    f.write_text("# comment\n\nrun-a  --model unet --data $DATA   # trailing\nrun-b --model segnet --data $DATA\n")
    assert q.parse_queue(f) == [("run-a", ["--model", "unet", "--data", "/data/x"]),
                                ("run-b", ["--model", "segnet", "--data", "/data/x"])]
    f.write_text("justanid\n")
    with pytest.raises(ValueError, match="RUN_ID"):
        q.parse_queue(f)


def test_queue_trains_resumes_skips_failures_and_reports(tiny_data, tmp_path):
    q = queue_module()
    runs = tmp_path / "runs"
    f = tmp_path / "queue.txt"
    common = f"--data {tiny_data} --folds 2 --epochs 1 --batch-size 2 --image-size 32 --seed 3 --device cpu " \
             "--model-option filters=4"
    f.write_text(f"good  --model smallcovid-net {common}\nbad   --model smallcovid-net --data {tmp_path}/nowhere\n")
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    assert (runs / "good" / "summary.json").is_file()
    state = json.loads((runs / "queue-state.json").read_text())
    assert state["bad"]["rc"] == 2
    lines = q.status(f, runs)
    assert "NOT running" in lines[0]
    assert "good" in lines[1] and "done" in lines[1] and "CV Dice" in lines[1]
    assert "bad" in lines[2] and "FAILED" in lines[2]
    # a second pass trains nothing again; a changed line is tried anew
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    assert (runs / "good.log").read_text().count("=== ") == 1
    f.write_text(f"good  --model smallcovid-net {common}\nbad   --model smallcovid-net {common}\n")
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    assert (runs / "bad" / "summary.json").is_file()


def test_interrupted_run_is_resumed(tiny_data, tmp_path):
    q = queue_module()
    runs = tmp_path / "runs"
    f = tmp_path / "queue.txt"
    f.write_text(f"r --model smallcovid-net --data {tiny_data} {TINY_RUN}\n")
    (runs / "r").mkdir(parents=True)
    # a run folder with a config but no summary: the queue continues it with --resume
    from smallcovid.training.config import TrainConfig

    cfg = TrainConfig(model="smallcovid-net", data=str(tiny_data), folds=2, epochs=2, batch_size=2, image_size=32,
                      seed=3, device="cpu", model_config={"filters": 4})
    (runs / "r" / "config.json").write_text(cfg.to_json())
    line = q.status(f, runs)[1]
    assert "paused" in line and "0/4 epochs" in line
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    assert "--resume" in (runs / "r.log").read_text() and (runs / "r" / "summary.json").is_file()


def test_a_run_short_of_its_plateau_is_extended_up_to_plateau_max(tiny_data, tmp_path, monkeypatch):
    q = queue_module()
    runs = tmp_path / "runs"
    f = tmp_path / "queue.txt"
    line = (f"r --model smallcovid-net --data {tiny_data} --folds 2 --epochs 3 --batch-size 2 --image-size 32 "
            "--seed 3 --device cpu --model-option filters=4 --schedule restarts --cycle-epochs 1 --lr 1e-3")
    assert q.split_plateau_max(["--a", "--plateau-max", "7", "--b"]) == (["--a", "--b"], 7)
    with pytest.raises(ValueError, match="plateau-max"):
        q.split_plateau_max(["--plateau-max", "x"])
    f.write_text(line + "\n")
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    summary = json.loads((runs / "r" / "summary.json").read_text())
    # Make fold 1 one that ran into the cap with its best epoch last (short of its plateau).
    path = runs / "r" / "fold_1" / "resume" / "resume.json"
    record = json.loads(path.read_text())
    record["meta"].update(epoch=3, best_epoch=3)
    path.write_text(json.dumps(record))
    summary["plateau"]["ok"] = False
    summary["plateau"]["per_fold"][0].update(ok=False, epochs_run=3, best_epoch=3)
    (runs / "r" / "summary.json").write_text(json.dumps(summary))
    assert q.next_cap(runs / "r", None) is None and q.next_cap(runs / "r", 5) is None  # next cycle ends at 7
    assert q.next_cap(runs / "r", 7) == 7
    f.write_text(line + " --plateau-max 7\n")
    assert "extends to 7 epochs next" in q.status(f, runs)[1]
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    log = (runs / "r.log").read_text()
    assert "--extend-epochs 7" in log and "--plateau-max" not in log
    extended = json.loads((runs / "r" / "summary.json").read_text())
    assert extended["plateau"]["extensions"] == [{"from": 3, "to": 7, "folds": [1]}]
    assert extended["plateau"]["per_fold"][0]["epochs_run"] > 3
    # The run as it stood at the old cap is kept beside it, and the status line says so.
    kept = json.loads((runs / "r.cap3" / "summary.json").read_text())
    assert kept["plateau"]["per_fold"][0]["best_epoch"] == 3 and not kept["plateau"].get("extensions")
    d = kept["tuned"]["dice"]
    assert q.kept_caps(runs / "r") == f"; cap 3 kept in r.cap3 (CV Dice {d['mean']:.3f} ± {d['std']:.3f})"
    assert q.kept_caps(runs / "r.cap3") == ""
    # Listed twice (first to its cap, then on to the plateau), the first line reads the kept run.
    f.write_text(line + "\n" + line + " --plateau-max 7\n")
    first, second = q.status(f, runs)[1:]
    assert first.startswith("r ") and "done" in first and "(kept in r.cap3)" in first
    assert f"CV Dice {d['mean']:.3f}" in first and "kept in r.cap3 (CV Dice" in second


def test_status_counts_the_final_model_and_weighs_pretraining_passes(tmp_path):
    q = queue_module()
    runs, pool = tmp_path / "runs", tmp_path / "pool"
    pool.mkdir()
    for i in range(40):  # 40 pool slices over 4 training slices: a pass weighs 10 epochs
        (pool / f"u{i}.png").write_bytes(b"")
    run = runs / "kd"
    cfg = dataclasses.asdict(TrainConfig(model="smallcovid-net", data="d", folds=2, epochs=4, final=True,
                                         unlabeled=str(pool), teachers=("t",), distill_epochs=2))
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "splits.json").write_text(json.dumps({"folds": [{"train": list("abcd"), "val": ["e"]}] * 2}))
    (run / "clock.json").write_text(json.dumps({"elapsed_s": 600.0}))

    def history(path, n, best="0.5"):  # the final model and pretraining have no validation Dice
        path.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{e},{best}\n" for e in range(1, n + 1))
        path.joinpath("history.csv").write_text("epoch,val_dice_best\n" + rows)

    for k in (1, 2):
        history(run / f"fold_{k}" / "pretrain", 2, best="")
        history(run / f"fold_{k}", 4)
    history(run / "final" / "pretrain", 1, best="")
    line = q.status_line("kd", [], runs, {}, running="kd")
    # 8 fold epochs + 0 final epochs of 12; 5 of 6 passes; work done 8 + 50 of 12 + 60 -> 600 s * 14 / 58
    assert "8/12 epochs, pretraining 5/6 passes" in line and "ETA ≤ 2m24s" in line
    history(run / "final", 3, best="")
    line = q.status_line("kd", [], runs, {}, running="kd")
    assert "11/12 epochs" in line and "best val Dice 0.500 (2 folds)" in line


def test_status_names_the_folds_a_running_run_will_extend(tmp_path):
    """Folds already at the cap short of their plateau: the line says the extension comes after the ETA."""
    q = queue_module()
    runs = tmp_path / "runs"
    run = runs / "r"
    (run / "fold_1" / "resume").mkdir(parents=True)
    (run / "fold_2" / "resume").mkdir(parents=True)
    cfg = dataclasses.asdict(TrainConfig(model="smallcovid-net", data="d", folds=2, epochs=3,
                                         schedule="restarts", cycle_epochs=1))
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "clock.json").write_text(json.dumps({"elapsed_s": 60.0}))

    def meta(k, epoch, best):
        rows = [{"epoch": e, "val_dice_best": 0.5} for e in range(1, epoch + 1)]
        (run / f"fold_{k}" / "resume" / "resume.json").write_text(
            json.dumps({"meta": {"epoch": epoch, "best_epoch": best, "best": 0.5, "history": rows}}))
        (run / f"fold_{k}" / "history.csv").write_text(
            "epoch,val_dice_best\n" + "".join(f"{e},0.5\n" for e in range(1, epoch + 1)))

    meta(1, 3, 3)  # at the cap, best in its last quarter
    meta(2, 2, 1)  # still training
    line = q.status_line("r", ["--plateau-max", "7"], runs, {}, running="r")
    # 5 epochs in 60 s: fold 1's 4 more epochs take about 48 s
    assert line.endswith("; then fold 1 extends to 7 epochs (+4 epochs, about 0m48s, not in the ETA)"), line
    assert "extend" not in q.status_line("r", ["--plateau-max", "5"], runs, {}, running="r")
    assert "extend" not in q.status_line("r", [], runs, {}, running="r")
    meta(1, 3, 1)  # at the cap, plateau reached
    assert "extend" not in q.status_line("r", ["--plateau-max", "7"], runs, {}, running="r")


def test_a_line_with_only_folds_is_done_when_those_folds_trained(tiny_data, tmp_path):
    q = queue_module()
    runs = tmp_path / "runs"
    f = tmp_path / "queue.txt"
    f.write_text(f"p --model smallcovid-net --data {tiny_data} {TINY_RUN} --only-folds 2\n")
    assert q.only_folds(["--a", "--only-folds", "2", "3", "--b"]) == [2, 3] and q.only_folds(["--a"]) is None
    assert q.status(f, runs)[1].split()[1] == "queued"
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)
    assert not (runs / "p" / "summary.json").exists() and not (runs / "p" / "fold_1").exists()
    line = q.status(f, runs)[1]
    assert "done" in line and "fold 2 best val Dice" in line and "epoch" in line
    q.run_queue(f, runs, threads=1, follow=None, python=sys.executable)  # nothing left to train
    assert (runs / "p.log").read_text().count("=== ") == 1


def test_status_says_running_only_while_a_process_holds_the_run(tmp_path):
    """A run trained by hand or left behind by a reordered queue: the run folder's lock, not how
    recently it was written, tells running from paused."""
    q = queue_module()
    runs = tmp_path / "runs"
    run = runs / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig(model="smallcovid-net", data="d"))))
    (run / "fold_1").mkdir()
    (run / "fold_1" / "history.csv").write_text("epoch,val_dice_best\n1,0.5\n")  # written just now
    assert " paused " in q.status_line("r", [], runs, {}, running=None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom smallcovid.training.runlock import hold_run\n"
         f"with hold_run({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert " running " in q.status_line("r", [], runs, {}, running=None)
    finally:
        holder.kill()
        holder.wait()
    assert " paused " in q.status_line("r", [], runs, {}, running=None)
    # The runner's first unfinished line is not necessarily the run it trains (the queue file may
    # have been edited during a run): with locks, only a held folder is running.
    assert " paused " in q.status_line("r", [], runs, {}, running="r")
