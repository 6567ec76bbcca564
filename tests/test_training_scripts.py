"""The shipped training commands parse: every active line of ``scripts/queue.txt`` and every
run of ``scripts/train_gpu.sh`` is a valid ``train.py`` command for a registered model, so a
typo fails here rather than hours into a queue or on a borrowed GPU."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from smallcovid.cli.train import build_parser, config_from_args
from smallcovid.models import build_model, list_models
from smallcovid.training.queuefile import parse_queue, split_plateau_max

REPO = Path(__file__).resolve().parent.parent


def _config(flags: list[str]):
    cfg, _ = config_from_args(build_parser().parse_args(flags))
    build_model(cfg.model, **dict(cfg.model_config))  # the options are ones the model accepts
    return cfg


def test_every_queue_line_is_a_valid_training_command(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA", str(tmp_path / "labeled"))
    monkeypatch.setenv("UNLABELED", str(tmp_path / "unlabeled"))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    lines = parse_queue(REPO / "scripts" / "queue.txt")
    assert lines, "the queue has no active line"
    for run_id, flags in lines:
        train_flags, cap = split_plateau_max(flags)
        cfg = _config(train_flags)
        assert cfg.seed == 0 and cfg.folds == 5, f"{run_id}: runs pair over the seed-0 five folds"
        if cap is not None:
            assert cfg.schedule == "restarts" and cap > cfg.epochs, f"{run_id}: --plateau-max needs restarts"


def test_gpu_script_runs_valid_commands_for_every_model(tmp_path):
    script = REPO / "scripts" / "train_gpu.sh"
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    common = shlex.split(text.split("common=(", 1)[1].split(")", 1)[0].replace('"$DATA"', str(tmp_path))
                         .replace('"$OUT/runs"', str(tmp_path / "runs")))
    runs = [shlex.split(line)[1:-1] for line in text.splitlines() if line.startswith("run ") and line.endswith("&")]
    models = {flags[0] for flags in runs}
    assert models == set(list_models())
    for name, *flags in runs:
        cfg = _config(["--model", name, "--run-id", f"{name}-gpu", *common, *flags])
        assert cfg.device == "cuda" and cfg.image_size == 256 and cfg.final and cfg.schedule == "restarts"


# The queue line that holds each model's recipe (the shipped one, or the one training to ship).
RECIPE_LINE = {"smallcovid-net": "smallcovid-net-r775-f5", "unet": "unet-r-cp", "segnet": "segnet-r",
               "mask-rcnn": "mask-rcnn-r"}


@pytest.mark.parametrize("name", sorted(RECIPE_LINE))
def test_gpu_script_uses_the_queues_recipe(name, monkeypatch, tmp_path):
    """The GPU script trains each model with its queue recipe (copy-paste, learning rate, cycle,
    model options), so its results compare with the CPU runs."""
    for var in ("DATA", "UNLABELED", "RUNS"):
        monkeypatch.setenv(var, str(tmp_path))
    queue = [split_plateau_max(f)[0] for r, f in parse_queue(REPO / "scripts" / "queue.txt") if r == RECIPE_LINE[name]]
    assert queue, f"no queue line {RECIPE_LINE[name]}"
    recipe = _config(queue[-1])
    text = (REPO / "scripts" / "train_gpu.sh").read_text()
    line = next(shlex.split(ln)[1:-1] for ln in text.splitlines() if ln.startswith(f"run {name} "))
    gpu = _config(["--model", name, "--data", str(tmp_path), *line[1:]])
    assert recipe.model == name
    for field in ("copy_paste", "lr", "cycle_epochs", "model_config", "schedule"):
        assert getattr(gpu, field) == getattr(recipe, field), f"{name}: {field}"


@pytest.mark.parametrize("name", list_models())
def test_gpu_script_scores_each_model_under_its_cards_test_time_augmentation(name):
    """A shipped card that averages test-time views gets its GPU-trained successor scored under them."""
    card = REPO / "weights" / f"{name}.json"
    if not card.is_file():
        pytest.skip(f"no shipped card for {name}")
    mode = json.loads(card.read_text())["config"].get("tta", "none")
    text = (REPO / "scripts" / "train_gpu.sh").read_text()
    rescored = f'if [ "$name" = {name} ]; then\n    $PY scripts/rescore_run.py "$run_dir" --model-option tta='
    if mode == "none":  # a one-pass card: its successor is not rescored under any views
        assert rescored not in text, (name, mode)
    else:
        assert rescored + mode in text, (name, mode)
