"""Command line: ``train.py`` and ``python -m smallcovid predict | evaluate | train`` as a user runs them.

Each command runs in a subprocess (OMP_NUM_THREADS=1) on the tiny labeled folder;
predict / evaluate use the session's tiny trained run. The four-model training
loop is marked slow; the default run trains smallcovid-net only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from smallcovid.models import list_models
from tinydata import TINY_IMAGE_SIZE, TINY_MODEL_CONFIG

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def smallcovid(*args: str) -> subprocess.CompletedProcess:
    return run("-m", "smallcovid", *args)


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# ------------------------------------------------------------------ train.py

def train_cli(model: str, data: Path, out: Path, epochs: int = 1) -> subprocess.CompletedProcess:
    opts = [f"--model-option={k}={json.dumps(v)}" for k, v in TINY_MODEL_CONFIG[model].items()]
    return run("train.py", "--model", model, "--data", str(data), "--folds", "2", "--epochs", str(epochs),
               "--image-size", str(TINY_IMAGE_SIZE[model]), "--batch-size", "2", "--out", str(out),
               "--run-id", model, "--threads", "1", "--device", "cpu", "--seed", "1", *opts, timeout=900)


def check_train_output(p: subprocess.CompletedProcess, run_dir: Path, model: str) -> None:
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert f"run folder: {run_dir}" in out
    assert f"{model}: 2-fold cross-validation on 6 slices" in out
    table = out[out.index("cross-validation"):].splitlines()
    header = next(line for line in table if line.startswith("fold"))
    for col in ("best ep", "thr", "Dice", "prec", "recall", "IoU", "tuned thr"):
        assert col in header
    rows = [line.split() for line in table if line[:1] in ("1", "2")]
    assert [r[0] for r in rows] == ["1", "2"] and all(len(r) == 10 for r in rows)
    assert all(0 <= float(x) <= 1 for r in rows for x in r[3:7])
    assert any(line.startswith("mean") for line in table) and any(line.startswith("± std") for line in table)
    assert "fold 1/2 epoch 1/1" in out  # per-epoch progress lines
    assert "recommended threshold" in out
    # the run folder
    assert json.loads((run_dir / "config.json").read_text())["model"] == model
    assert len(json.loads((run_dir / "splits.json").read_text())["folds"]) == 2
    for k in (1, 2):
        for name in (f"{model}.safetensors", f"{model}.json", "history.csv", "metrics.json"):
            assert (run_dir / f"fold_{k}" / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == model and len(summary["per_fold"]) == 2
    assert not list(run_dir.rglob("*.tmp"))


def test_train_cli_smallcovid_net(tiny_data, tmp_path):
    p = train_cli("smallcovid-net", tiny_data, tmp_path)
    check_train_output(p, tmp_path / "smallcovid-net", "smallcovid-net")
    assert p.stderr.strip() == ""  # stderr is for errors only; log lines go to stdout


@pytest.mark.slow
@pytest.mark.parametrize("model", list_models())
def test_train_predict_evaluate_every_model(model, tiny_data, tmp_path, inputs):
    p = train_cli(model, tiny_data, tmp_path)
    check_train_output(p, tmp_path / model, model)
    out = tmp_path / "pred"
    p = smallcovid("predict", "--model", model, "--weights", str(tmp_path / model), *map(str, inputs.values()),
                   "--out", str(out), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    check_prediction_files(out, inputs)
    p = smallcovid("evaluate", "--model", model, "--weights", str(tmp_path / model), "--data", str(tiny_data),
                   "--device", "cpu")
    assert p.returncode == 0, p.stderr
    assert model in p.stdout and "Dice" in p.stdout


def test_train_cli_refused_run_subprocess(tiny_data, tmp_path):
    # refused after the data loaded (and was logged): still exactly one line on stderr
    p = run("train.py", "--model", "smallcovid-net", "--data", str(tiny_data), "--folds", "9",
            "--out", str(tmp_path), "--threads", "1")
    assert_one_line_error(p, "folds must be between 2 and 6")
    assert not list(tmp_path.iterdir())


def _train_main():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def call_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a CLI ``main`` in-process: (exit code, stdout, stderr); argparse exits are caught."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args, needle", [
    (["--model", "unet", "--data", "{tmp}/none"], "does not exist"),
    (["--model", "unet", "--data", "{data}", "--image-size", "50"], "image_size"),
    (["--model", "unet", "--data", "{data}", "--steps-per-epoch", "0"], "steps_per_epoch"),
    (["--model", "unet", "--data", "{data}", "--threshold", "1.2"], "threshold"),
    (["--model", "unet", "--data", "{data}", "--model-option", "colour=3"], "colour"),
    (["--model", "unet", "--data", "{data}", "--folds", "9"], "folds"),
    (["--model", "unet", "--data", "{data}", "--run-id", "../escape"], "plain folder name"),
    (["--resume", "{tmp}/none"], "not a run folder"),
    (["--data", "{data}"], "--model and --data are required"),
    (["--model", "resnet", "--data", "{data}"], "resnet"),
    (["--model", "unet", "--data", "{data}", "--threads", "0"], "--threads"),
])
def test_train_cli_bad_arguments(tiny_data, tmp_path, capsys, one_thread, args, needle):
    argv = [a.format(tmp=tmp_path, data=tiny_data) for a in args]
    rc, out, err = call_main(_train_main(), ["--threads", "1", *argv, "--out", str(tmp_path / "runs")], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # nothing written


def help_flags(text: str) -> list[str]:
    """The long options a --help text offers, in order of first mention."""
    return list(dict.fromkeys(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)))


def test_train_subcommand_has_the_same_flags_as_train_py():
    script = run("train.py", "--help", timeout=120)
    sub = smallcovid("train", "--help")
    assert script.returncode == 0 and sub.returncode == 0, script.stderr + sub.stderr
    flags = help_flags(script.stdout)
    assert {"--model", "--data", "--folds", "--resume", "--final", "--threads"} <= set(flags)
    assert help_flags(sub.stdout) == flags
    assert "--job-id" not in flags and "--jobs-db" not in flags  # internal: set by the app's job executor
    top = smallcovid("--help")
    assert all(name in top.stdout for name in ("predict", "evaluate", "bench", "train"))


def test_train_subcommand_reports_bad_arguments_like_train_py(tiny_data, tmp_path, capsys, one_thread):
    from smallcovid.cli.main import main

    argv = ["--threads", "1", "--model", "unet", "--data", str(tiny_data), "--folds", "9",
            "--out", str(tmp_path / "runs")]
    rc, _, err = call_main(main, ["train", *argv], capsys)
    assert rc == 2 and "folds" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = call_main(main, ["train", "--threads", "0"], capsys)
    assert rc == 2 and err.startswith("python -m smallcovid train: error: --threads"), err
    assert not (tmp_path / "runs").exists()


def test_console_command_is_declared_and_importable():
    import importlib
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    target = project["scripts"]["smallcovid"]
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), target


# ------------------------------------------------------------------ predict

@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A 45x61 PNG, pydicom's CT_small.dcm (128x128) and a 33x41x3 NIfTI volume."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(2)
    img = d / "IMG.png"
    Image.fromarray(rng.integers(0, 255, (45, 61), dtype=np.uint8)).save(img)
    dcm = Path(get_testdata_file("CT_small.dcm"))
    vol = d / "VOL.nii.gz"
    affine = np.array([[0.7, 0, 0, -10], [0, 0.7, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(rng.normal(-700, 200, (33, 41, 3)).astype(np.float32), affine), vol)
    return {"IMG": img, "CT_small": dcm, "VOL": vol}


def check_prediction_files(out: Path, inputs: dict[str, Path]) -> None:
    sizes = {"IMG": (45, 61), "CT_small": (128, 128)}
    for stem, (h, w) in sizes.items():
        prob = np.asarray(Image.open(out / f"{stem}_prob.png"))
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        classes = np.asarray(Image.open(out / f"{stem}_classes.png"))
        assert prob.shape == mask.shape == classes.shape == (h, w)
        assert prob.dtype == mask.dtype == classes.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(classes)) <= {0, 1, 2}
        np.testing.assert_array_equal(classes > 0, mask > 0)
    vol = nib.load(inputs["VOL"])
    for name in ("VOL_mask.nii.gz", "VOL_classes.nii.gz"):
        pred = nib.load(out / name)
        assert pred.shape == vol.shape and pred.get_data_dtype() == np.uint8
        np.testing.assert_allclose(pred.affine, vol.affine)
    assert set(np.unique(np.asarray(nib.load(out / "VOL_mask.nii.gz").dataobj))) <= {0, 1}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_predict_writes_outputs_at_input_size(tiny_run, inputs, tmp_path):
    out = tmp_path / "pred"
    p = smallcovid("predict", "--weights", str(tiny_run[0]), *map(str, inputs.values()), "--out", str(out),
                   "--threshold", "0.5", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == ""
    check_prediction_files(out, inputs)
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [f"{s}_{k}.png" for s in ("IMG", "CT_small") for k in ("prob", "mask", "classes")]
        + ["VOL_mask.nii.gz", "VOL_classes.nii.gz"])
    # the mask is the probability map at the given threshold (up to 8-bit rounding of the PNG)
    prob = np.asarray(Image.open(out / "IMG_prob.png")).astype(float) / 255
    mask = np.asarray(Image.open(out / "IMG_mask.png")) > 0
    sure = np.abs(prob - 0.5) > 1 / 255
    np.testing.assert_array_equal(mask[sure], prob[sure] >= 0.5)


def test_predict_bad_inputs_exit_2_and_write_nothing(tiny_run, inputs, tmp_path):
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(inputs["IMG"].read_bytes()[:100])
    text = tmp_path / "notes.png"
    text.write_text("these are not the pixels you are looking for\n")
    missing = tmp_path / "missing.dcm"
    out = tmp_path / "pred"
    p = smallcovid("predict", "--weights", str(tiny_run[0]), str(truncated), str(text), str(missing),
                   str(inputs["IMG"]), "--out", str(out), "--device", "cpu")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 3, p.stderr
    for line, path in zip(lines, (truncated, text, missing)):
        assert line.startswith(f"error: {path.name}") or line.startswith(f"error: {path}"), line
    # nothing for the bad inputs; the good one still got its outputs
    assert sorted(f.name for f in out.iterdir()) == ["IMG_classes.png", "IMG_mask.png", "IMG_prob.png"]


def test_predict_bad_threshold_and_unknown_model_subprocess(tiny_run, inputs, tmp_path):
    out = tmp_path / "pred"
    p = smallcovid("predict", "--weights", str(tiny_run[0]), str(inputs["IMG"]), "--out", str(out),
                   "--threshold", "1.5")
    assert_one_line_error(p, "threshold")
    p = smallcovid("predict", "--model", "resnet", str(inputs["IMG"]), "--out", str(out))
    assert_one_line_error(p, "resnet")
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--threshold", "abc"], "threshold"),
    (["--threshold", "0"], "threshold"),
    (["--threshold", "nan"], "threshold"),
    (["--model", "resnet"], "resnet"),
    (["--model", "unet"], "unet"),  # the run holds a smallcovid-net
    (["--window", "brain"], "brain"),
    (["--device", "tpu"], "tpu"),
    (["--weights", "{tmp}/nope"], "nope"),
])
def test_predict_bad_options_exit_2_one_line(tiny_run, inputs, tmp_path, capsys, args, needle):
    from smallcovid.cli.main import main

    out = tmp_path / "pred"
    argv = ["predict", "--weights", str(tiny_run[0]), str(inputs["IMG"]), "--out", str(out),
            *[a.format(tmp=tmp_path) for a in args]]
    rc, _, err = call_main(main, argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not out.exists()


def test_predict_output_path_is_a_file(tiny_run, inputs, tmp_path, capsys):
    from smallcovid.cli.main import main

    (tmp_path / "out").write_text("x")
    rc, _, err = call_main(main, ["predict", "--weights", str(tiny_run[0]), str(inputs["IMG"]),
                                  "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and "not a folder" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ evaluate

def independent_counts(run_dir: Path, data: Path) -> tuple[dict, float]:
    """Predict with the Predictor, threshold and count with numpy only (no smallcovid.inference.metrics)."""
    import torch

    from smallcovid.data.dataset import load_dataset
    from smallcovid.inference.predictor import load_predictor

    torch.set_num_threads(1)
    pred = load_predictor(weights=run_dir, device="cpu")
    ds = load_dataset(data)
    maps = pred.predict_images([s.image for s in ds.samples])
    rows = []
    for m, s in zip(maps, ds.samples):
        p, t = m.lesion >= pred.threshold, s.mask
        rows.append((np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)))
    c = np.array(rows, dtype=float)
    tp, fp, fn = c.T

    def ratio(num, den, empty):
        return np.where(den > 0, num / np.maximum(den, 1), empty)

    per = {"dice": ratio(2 * tp, 2 * tp + fp + fn, (tp + fp + fn == 0) * 1.0),
           "precision": ratio(tp, tp + fp, (fn == 0) * 1.0),
           "recall": ratio(tp, tp + fn, (fp == 0) * 1.0),
           "iou": ratio(tp, tp + fp + fn, (tp + fp + fn == 0) * 1.0)}
    T, F, N = tp.sum(), fp.sum(), fn.sum()
    pooled = {"dice": 2 * T / (2 * T + F + N) if T + F + N else 1.0,
              "precision": T / (T + F) if T + F else float(N == 0),
              "recall": T / (T + N) if T + N else float(F == 0),
              "iou": T / (T + F + N) if T + F + N else 1.0}
    return {"mean": {k: v.mean() for k, v in per.items()}, "std": {k: v.std() for k, v in per.items()},
            "pooled": pooled, "per_image": per}, pred.threshold


@pytest.mark.usefixtures("one_thread")
def test_evaluate_matches_an_independent_count(tiny_run, tiny_data, tmp_path):
    out_json = tmp_path / "out.json"
    p = smallcovid("evaluate", "--model", "smallcovid-net", "--weights", str(tiny_run[0]), "--data",
                   str(tiny_data), "--json", str(out_json), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    for word in ("Dice", "precision", "recall", "IoU", "pooled", "smallcovid-net", "6 labeled slices"):
        assert word in p.stdout
    doc = json.loads(out_json.read_text())
    got = doc["models"]["smallcovid-net"]
    ref, thr = independent_counts(tiny_run[0], tiny_data)
    assert doc["n_images"] == 6 and got["n_images"] == 6 and got["threshold"] == pytest.approx(thr)
    for k in ("dice", "precision", "recall", "iou"):
        assert got["mean"][k] == pytest.approx(ref["mean"][k], abs=1e-9), k
        assert got["std"][k] == pytest.approx(ref["std"][k], abs=1e-9), k
        assert got["pooled"][k] == pytest.approx(ref["pooled"][k], abs=1e-9), k
        assert [got["per_image"][f"slice_{i:02d}"][k] for i in range(6)] == pytest.approx(ref["per_image"][k])
        # the printed table shows the same mean ± std
        assert f"{ref['mean'][k]:.3f}±{ref['std'][k]:.3f}" in p.stdout
    # a non-trivial check: not everything empty (else the counts would not test much)
    assert any(got["per_image"][s]["dice"] not in (0.0, 1.0) for s in got["per_image"]) or thr


@pytest.mark.parametrize("args, needle", [
    (["--data", "/nonexistent/folder"], "does not exist"),
    (["--threshold", "2"], "threshold"),
    (["--model", "all"], "--weights"),
])
def test_evaluate_bad_options_exit_2(tiny_run, tiny_data, tmp_path, capsys, args, needle):
    from smallcovid.cli.main import main

    base = {"--model": "smallcovid-net", "--weights": str(tiny_run[0]), "--data": str(tiny_data)}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    rc, _, err = call_main(main, ["evaluate", *[x for kv in base.items() for x in kv],
                                  "--json", str(tmp_path / "o.json")], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "o.json").exists()


# ------------------------------------------------------------------ weights in a run folder

def test_run_folder_weights_choice(copy_run):
    from smallcovid.inference.predictor import load_predictor

    pred = load_predictor(weights=copy_run, device="cpu")
    assert pred.card.get("training_time_s") is not None  # the finished final model
    assert pred.threshold == json.loads((copy_run / "summary.json").read_text())["recommended_threshold"]
    # an interrupted final model (no summary.json yet) is half-trained: use fold 1's best instead
    (copy_run / "summary.json").unlink()
    pred = load_predictor(weights=copy_run, device="cpu")
    assert pred.card["fold"] == 1
    assert "training_time_s" in load_predictor("smallcovid-net", weights=copy_run / "final", device="cpu").card
