"""Command line: ``train.py`` and ``python -m smallcovid predict | evaluate | train`` as a user runs them.

Each command runs in a subprocess (OMP_NUM_THREADS=1) on the tiny labeled folder;
predict / evaluate use the session's tiny trained run. The four-model training
loop is marked slow; the default run trains smallcovid-net only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
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


def test_ensemble_choices_are_the_engines():
    from smallcovid.cli.main import ENSEMBLES
    from smallcovid.inference.ensemble import ENSEMBLES as ENGINE

    assert ENSEMBLES == ENGINE


def test_parsing_and_help_import_no_torch():
    code = ("import sys, contextlib, io\n"
            "from smallcovid.cli.main import build_parser\n"
            "p = build_parser()\n"
            "p.parse_args(['predict', '--model', 'unet', 'a.nii.gz', '--out', 'o', '--ensemble', 'folds'])\n"
            "p.parse_args(['evaluate', '--model', 'all', '--data', 'd'])\n"
            "for argv in (['--help'], ['predict', '--help'], ['train', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            p.parse_args(argv)\n"
            "        except SystemExit as exc:\n"
            "            assert exc.code == 0\n"
            "assert 'torch' not in sys.modules\n")
    p = run("-c", code)
    assert p.returncode == 0, p.stderr[-2000:]


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


def check_slice_report(out: Path, stem: str, spacing_xy: tuple[float, float] | None) -> None:
    """``<stem>_report.json`` matches the written PNGs (areas in mm² when the pixel size is known)."""
    classes = np.asarray(Image.open(out / f"{stem}_classes.png"))
    lungs = np.asarray(Image.open(out / f"{stem}_lungs.png"))
    rep = json.loads((out / f"{stem}_report.json").read_text())
    area = 1.0 if spacing_xy is None else spacing_xy[0] * spacing_xy[1]
    assert rep["units"]["area"] == ("pixels" if spacing_xy is None else "mm2")
    assert rep["lung_mm2"] == pytest.approx(np.count_nonzero(lungs) * area, abs=0.01)
    assert rep["lesion_mm2"] == pytest.approx(np.count_nonzero(classes) * area, abs=0.01)
    assert rep["ggo_mm2"] == pytest.approx(np.count_nonzero(classes == 1) * area, abs=0.01)
    inside = np.count_nonzero((classes > 0) & (lungs > 0))
    lung = np.count_nonzero(lungs)
    assert rep["involvement_pct"] == (None if lung == 0 else pytest.approx(100 * inside / lung, abs=0.01))
    assert len(rep["weights_sha256"]) == 64 and rep["date"] and rep["input"]


def check_prediction_files(out: Path, inputs: dict[str, Path]) -> None:
    sizes = {"IMG": (45, 61), "CT_small": (128, 128)}
    for stem, (h, w) in sizes.items():
        prob = np.asarray(Image.open(out / f"{stem}_prob.png"))
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        classes = np.asarray(Image.open(out / f"{stem}_classes.png"))
        lungs = np.asarray(Image.open(out / f"{stem}_lungs.png"))
        assert prob.shape == mask.shape == classes.shape == lungs.shape == (h, w)
        assert prob.dtype == mask.dtype == classes.dtype == lungs.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(classes)) <= {0, 1, 2}
        assert set(np.unique(lungs)) <= {0, 1, 2}
        np.testing.assert_array_equal(classes > 0, mask > 0)
    check_slice_report(out, "IMG", None)
    check_slice_report(out, "CT_small", (0.661468, 0.661468))
    check_volume_outputs(out, "VOL", nib.load(inputs["VOL"]))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


VOLUME_FILES = ("mask.nii.gz", "classes.nii.gz", "lungs.nii.gz", "report.json")


def check_volume_outputs(out: Path, stem: str, like) -> dict:
    """The three NIfTI outputs carry ``like``'s affine and shape; the report matches them. Returns the report."""
    maps = {}
    for kind in ("mask", "classes", "lungs"):
        img = nib.load(out / f"{stem}_{kind}.nii.gz")
        assert img.shape == tuple(like.shape) and img.get_data_dtype() == np.uint8, (stem, kind)
        np.testing.assert_allclose(img.affine, like.affine, atol=1e-5)
        maps[kind] = np.asarray(img.dataobj)
    mask, classes, lungs = maps["mask"], maps["classes"], maps["lungs"]
    assert set(np.unique(mask)) <= {0, 1} and set(np.unique(classes)) <= {0, 1, 2} and set(np.unique(lungs)) <= {0, 1, 2}
    np.testing.assert_array_equal(classes > 0, mask > 0)
    rep = json.loads((out / f"{stem}_report.json").read_text())
    zooms = [float(z) for z in like.header.get_zooms()[:3]]
    assert rep["spacing_mm"] == pytest.approx([zooms[1], zooms[0], zooms[2]], rel=1e-4)  # x = columns = NIfTI axis 1
    ml = np.prod(rep["spacing_mm"]) / 1000
    assert rep["lung_ml"] == pytest.approx(np.count_nonzero(lungs) * ml, abs=0.011)
    assert rep["lesion_ml"] == pytest.approx(np.count_nonzero(mask) * ml, abs=0.011)
    assert rep["ggo_ml"] == pytest.approx(np.count_nonzero(classes == 1) * ml, abs=0.011)
    assert rep["consolidation_ml"] == pytest.approx(np.count_nonzero(classes == 2) * ml, abs=0.011)
    lung = np.count_nonzero(lungs)
    inside = np.count_nonzero((mask > 0) & (lungs > 0))
    assert rep["involvement_pct"] == (None if lung == 0 else pytest.approx(100 * inside / lung, abs=0.01))
    for side, v in (("right", 1), ("left", 2)):
        n = np.count_nonzero(lungs == v)
        assert rep["per_lung"][side]["lung_ml"] == pytest.approx(n * ml, abs=0.011)
        assert rep["per_lung"][side]["lesion_ml"] == pytest.approx(np.count_nonzero((lungs == v) & (mask > 0)) * ml,
                                                                     abs=0.011)
    area = rep["spacing_mm"][0] * rep["spacing_mm"][1]
    assert [s["index"] for s in rep["slices"]] == list(range(mask.shape[2]))
    assert [s["lesion_mm2"] for s in rep["slices"]] == pytest.approx(
        [np.count_nonzero(mask[:, :, k]) * area for k in range(mask.shape[2])], abs=0.011)
    assert [s["lung_mm2"] for s in rep["slices"]] == pytest.approx(
        [np.count_nonzero(lungs[:, :, k]) * area for k in range(mask.shape[2])], abs=0.011)
    assert rep["model"] and 0 < rep["threshold"] < 1 and rep["date"] and "weights_sha256" in rep
    return rep


def test_predict_writes_outputs_at_input_size(tiny_run, inputs, tmp_path):
    out = tmp_path / "pred"
    p = smallcovid("predict", "--weights", str(tiny_run[0]), *map(str, inputs.values()), "--out", str(out),
                   "--threshold", "0.5", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    # stderr: one lung QC line per input whose report holds QC findings, the same summary: the
    # noise volume holds no lungs; the real CT slice raises none; the noise PNG has no anatomy,
    # so whatever its lungs are, its line must match its report.
    from smallcovid.inference.qc import qc_summary

    vol_qc = json.loads((out / "VOL_report.json").read_text())["qc"]
    assert [f["code"] for f in vol_qc] == ["no_lungs"]
    assert json.loads((out / "CT_small_report.json").read_text())["qc"] == []
    expected = [f"warning: {inputs[stem]}: {qc_summary(qc)}" for stem in ("IMG", "CT_small", "VOL")
                if (qc := json.loads((out / f"{stem}_report.json").read_text())["qc"])]
    assert sorted(p.stderr.splitlines()) == sorted(expected)
    check_prediction_files(out, inputs)
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [f"{s}_{k}.png" for s in ("IMG", "CT_small") for k in ("prob", "mask", "classes", "lungs")]
        + ["IMG_report.json", "CT_small_report.json"] + [f"VOL_{k}" for k in VOLUME_FILES])
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
    # one error line per bad input; the good one (a noise PNG) may add its lung QC warning
    lines = [x for x in p.stderr.strip().splitlines() if not x.startswith("warning: ")]
    assert len(lines) == 3, p.stderr
    for line, path in zip(lines, (truncated, text, missing)):
        assert line.startswith(f"error: {path.name}") or line.startswith(f"error: {path}"), line
    # nothing for the bad inputs; the good one still got its outputs
    assert sorted(f.name for f in out.iterdir()) == ["IMG_classes.png", "IMG_lungs.png", "IMG_mask.png",
                                                      "IMG_prob.png", "IMG_report.json"]


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


# ------------------------------------------------------------------ volumes: DICOM series and NIfTI


def write_series(folder: Path, uid: str, n: int, seed: int, **changes) -> list[Path]:
    """``n`` slices of a DICOM series built from CT_small.dcm (2.5 mm apart), shuffled file names;
    ``changes`` set further DICOM attributes (e.g. SeriesDescription)."""
    from dicomhelpers import series_slice

    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(n))
    random.Random(seed).shuffle(order)  # file names do not follow slice order
    paths = []
    for i, k in enumerate(order):
        ds = series_slice(k, uid, z0=-75.0, step=2.5, offset=10, **changes)
        path = folder / f"{uid[-4:]}_{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    random.Random(seed + 1).shuffle(paths)
    return paths


def series_like(paths: list[Path]):
    """The input geometry of a series as a NIfTI image: the affine from smallcovid.io.series, (rows, cols, slices)."""
    from smallcovid.io.series import read_series

    vol = read_series(paths)
    return nib.Nifti1Image(np.zeros(vol.voxels.transpose(1, 2, 0).shape, np.uint8), vol.affine)


def phantom_nifti(path: Path) -> nib.Nifti1Image:
    """A 4-slice full-field HU volume (the bench's synthetic CT, 128x128, 2.7 mm) with an oblique affine."""
    from smallcovid.cli.benchvolume import synthetic_ct

    data = np.ascontiguousarray(synthetic_ct(4, 128).transpose(1, 2, 0))
    c, s_ = np.cos(0.3), np.sin(0.3)
    affine = np.array([[2.7 * c, -2.7 * s_, 0, -40], [2.7 * s_, 2.7 * c, 0, 12], [0, 0, 3.0, 60], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    nib.save(img, path)
    return img


def test_predict_volumes_dicom_series_folders_and_nifti(tmp_path):
    """Series as shuffled files, a folder with two series, a shared SeriesDescription and a NIfTI, in one run."""
    from smallcovid.io.seriesnames import series_stem

    a = write_series(tmp_path / "loose", "2.25.1111.7", 5, seed=1)  # no SeriesDescription: a hash of the UID
    two = tmp_path / "two"
    b = write_series(two, "2.25.2222.7", 3, seed=2, SeriesDescription="Lung 1.0 / B70f")
    c = write_series(two, "2.25.3333.7", 4, seed=3)
    (two / "notes.txt").write_text("not a slice\n")
    d = write_series(tmp_path / "loose", "2.25.4444.1", 3, seed=4, SeriesDescription="CHEST 1mm")
    e = write_series(tmp_path / "loose", "2.25.4444.2", 3, seed=5, SeriesDescription="CHEST 1mm")  # as d
    single = write_series(tmp_path / "one" / "study-7", "2.25.5555.7", 4, seed=6)
    vol = phantom_nifti(tmp_path / "PHANTOM.nii.gz")
    mixed = a + d + e
    random.Random(9).shuffle(mixed)  # files of three series interleaved on the command line
    out = tmp_path / "out"
    p = smallcovid("predict", "--model", "smallcovid-net", *map(str, mixed), str(two), str(tmp_path / "one" / "study-7"),
                   str(tmp_path / "PHANTOM.nii.gz"), "--out", str(out), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    d_first = min(map(mixed.index, d)) < min(map(mixed.index, e))  # the series met first on the command line keeps the plain stem
    stems = {series_stem("2.25.1111.7"): a, "Lung_1.0_B70f": b, series_stem("2.25.3333.7"): c,
             "CHEST_1mm" if d_first else "CHEST_1mm-2": d, "CHEST_1mm-2" if d_first else "CHEST_1mm": e,
             "study-7": single}
    assert len(stems) == 6
    assert sorted(f.name for f in out.iterdir()) == sorted(f"{s}_{k}" for s in [*stems, "PHANTOM"] for k in VOLUME_FILES)
    for stem, paths in stems.items():
        rep = check_volume_outputs(out, stem, series_like(paths))
        assert len(rep["slices"]) == len(paths)
    rep = check_volume_outputs(out, "PHANTOM", vol)
    assert rep["lung_ml"] > 0 and rep["per_lung"]["right"]["lung_ml"] > 0 and rep["per_lung"]["left"]["lung_ml"] > 0
    assert rep["framing"]["cropped_slices"] == 4  # full field of view: every slice cropped to its lungs
    card = json.loads((REPO / "weights" / "smallcovid-net.json").read_text())
    assert rep["weights_sha256"] == card["sha256"] and rep["threshold"] == card["threshold"]
    assert rep["model"] == "smallcovid-net" and rep["input"] == "PHANTOM.nii.gz"


def test_predict_process_matches_predict_one(tmp_path):
    """``python -m smallcovid predict`` (first volume read and its lungs found while the model loads,
    fast exit) writes the same bytes as :func:`predict_one` in-process (lungs found there)."""
    from smallcovid.cli.predict import predict_one
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.io import read_scan

    phantom_nifti(tmp_path / "PHANTOM.nii.gz")
    p = smallcovid("predict", "--model", "smallcovid-net", str(tmp_path / "PHANTOM.nii.gz"), "--out",
                   str(tmp_path / "cli"), "--device", "cpu")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout.startswith(f"{tmp_path / 'PHANTOM.nii.gz'}: wrote PHANTOM_mask.nii.gz")  # flushed before the exit
    pred = load_predictor("smallcovid-net", device="cpu")
    (tmp_path / "lib").mkdir()
    predict_one(pred, read_scan(tmp_path / "PHANTOM.nii.gz"), None, pred.threshold, tmp_path / "lib", "PHANTOM")
    for name in VOLUME_FILES:
        a, b = (tmp_path / d / f"PHANTOM_{name}" for d in ("cli", "lib"))
        if name.endswith(".json"):
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            assert {**ja, "date": None} == {**jb, "date": None}
        else:
            assert a.read_bytes() == b.read_bytes(), name


def test_predict_series_problems_exit_2_and_keep_the_rest(tmp_path):
    good = write_series(tmp_path / "good", "2.25.6666.7", 3, seed=7)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "readme.txt").write_text("no DICOM here\n")
    broken = write_series(tmp_path / "broken", "2.25.7777.7", 3, seed=8)
    broken[0].write_bytes(broken[0].read_bytes()[:400])  # header cut: not part of any series any more
    out = tmp_path / "out"
    p = smallcovid("predict", "--model", "smallcovid-net", *map(str, good), str(bad), *map(str, broken),
                   "--out", str(out), "--device", "cpu")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2 and "bad" in lines[0] and "DICOM" in lines[0], p.stderr
    assert broken[0].name in lines[1], p.stderr
    from smallcovid.io.seriesnames import series_stem

    assert sorted(f.name for f in out.iterdir()) == sorted(
        [f"{series_stem('2.25.6666.7')}_{k}" for k in VOLUME_FILES] +
        [f"{series_stem('2.25.7777.7')}_{k}" for k in VOLUME_FILES])


def test_report_matches_ground_truth_on_labeled_slices(tmp_path):
    """3 labeled slices in full 512x512 HU frames, predicted as ground truth: the quantification path.

    The model is replaced by an oracle returning the ground-truth lesions of each crop it is
    shown; everything else is the real ``predict`` path (NIfTI in, lungs, framing, NIfTI and
    report out). Reported involvement vs ground truth over the lungs found on the crops:
    within 2 percentage points.
    """
    import importlib.util

    from smallcovid.cli.predict import predict_one
    from smallcovid.inference.framing import lungs_for, volume_boxes
    from smallcovid.inference.lungs import lung_masks_display
    from smallcovid.io import read_scan

    spec = importlib.util.spec_from_file_location("measure_fov", REPO / "scripts" / "measure_fov.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    try:
        data = mf.load(mf.find_data(), 3)
    except FileNotFoundError:
        pytest.skip("labeled slices not available (../shared/data/covid-semiseg/train or SMALLCOVID_DATA_DIR)")
    frames, truth, crop_lungs = [], [], []
    folder = mf.find_data()
    for name, img, mask in data:
        hu, place = mf.full_frame(img)
        gt = np.zeros(hu.shape, np.uint8)
        gt[place] = np.asarray(Image.open(folder / "classes" / f"{name}.png"))
        frames.append(hu)
        truth.append(gt)
        crop_lungs.append((lung_masks_display(img), mask))
    spacing = (0.7, 0.7, 5.0)
    nib.save(nib.Nifti1Image(np.stack(frames, -1).astype(np.int16), np.diag([*spacing, 1.0])), tmp_path / "gt.nii.gz")
    scan = read_scan(tmp_path / "gt.nii.gz")
    boxes = volume_boxes(scan, lungs_for(scan))
    crops = [(t if b is None else t[b.slices]) for t, b in zip(truth, boxes)]

    class Oracle:
        name, threshold, card = "ground-truth", 0.5, {}

        def predict_images(self, images, batch_size=8):
            from smallcovid.inference.predictor import ProbMaps

            out = []
            for im in images:
                gt = crops.pop(0)
                assert gt.shape == im.shape
                types = np.stack([gt == 0, gt == 1, gt == 2]).astype(np.float32)
                out.append(ProbMaps(lesion=(gt > 0).astype(np.float32), types=types, seconds=0.0))
            return out

    predict_one(Oracle(), scan, None, 0.5, tmp_path, "gt")
    assert not crops
    rep = check_volume_outputs(tmp_path, "gt", nib.load(tmp_path / "gt.nii.gz"))
    gt = np.stack(truth)
    ml = 0.7 * 0.7 * 5.0 / 1000
    assert rep["lesion_ml"] == pytest.approx(np.count_nonzero(gt) * ml, abs=0.011)  # the oracle's lesions, all kept
    assert rep["ggo_ml"] == pytest.approx(np.count_nonzero(gt == 1) * ml, abs=0.011)
    lung = sum(np.count_nonzero(lm) for lm, _ in crop_lungs)
    inside = sum(np.count_nonzero((lm > 0) & m) for lm, m in crop_lungs)
    assert abs(rep["involvement_pct"] - 100 * inside / lung) <= 2.0, (rep["involvement_pct"], 100 * inside / lung)


# ------------------------------------------------------------------ evaluate

def independent_counts(run_dir: Path, data: Path) -> tuple[dict, float]:
    """Predict with the Predictor, threshold and count with numpy only (no smallcovid.inference.metrics)."""
    import torch

    from smallcovid.data.dataset import load_dataset
    from smallcovid.inference.framing import lungs_for
    from smallcovid.inference.lesionzone import grown_lungs
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.io import Slice

    torch.set_num_threads(1)
    pred = load_predictor(weights=run_dir, device="cpu")
    ds = load_dataset(data)
    maps = pred.predict_images([s.image for s in ds.samples])
    rows = []
    for m, s in zip(maps, ds.samples):
        # Lesions count only inside the grown lungs (as in every output); the count is numpy's own.
        zone = grown_lungs(lungs_for(Slice(s.image, "display", None, s.stem)))
        p, t = (m.lesion >= pred.threshold) & zone, s.mask
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
    # the final model trained on these very slices: said, and counted in the JSON
    assert "note: 6 of these 6 slices are training slices of smallcovid-net" in p.stdout
    assert got["in_sample_slices"] == 6
    # each fold model trained on the slices outside its validation fold: the ensemble on all of them
    p = smallcovid("evaluate", "--model", "smallcovid-net", "--weights", str(tiny_run[0]), "--ensemble", "folds",
                   "--data", str(tiny_data), "--json", str(out_json), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    assert json.loads(out_json.read_text())["models"]["smallcovid-net"]["in_sample_slices"] == 6
    # out of fold: each slice scored by the fold model that held it out, as the run's summary did
    p = smallcovid("evaluate", "--model", "smallcovid-net", "--weights", str(tiny_run[0]), "--ensemble", "folds",
                   "--out-of-fold", "--threshold", "0.5", "--data", str(tiny_data), "--json", str(out_json),
                   "--device", "cpu")
    assert p.returncode == 0, p.stderr
    oof = json.loads(out_json.read_text())["models"]["smallcovid-net"]
    assert oof["in_sample_slices"] == 0 and "note:" not in p.stdout and "out of fold" in p.stdout
    splits = json.loads((tiny_run[0] / "splits.json").read_text())["folds"]
    assert sorted(oof["per_image"]) == sorted(s for f in splits for s in f["val"])
    p = smallcovid("evaluate", "--model", "smallcovid-net", "--out-of-fold", "--data", str(tiny_data))
    assert p.returncode == 2 and "--ensemble folds" in p.stderr


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
    from smallcovid.training.cvsummary import operating_threshold

    # the run's operating threshold (the calibrated one when a calibration was fitted)
    assert pred.threshold == operating_threshold(json.loads((copy_run / "summary.json").read_text()))[0]
    # an interrupted final model (no summary.json yet) is half-trained: use fold 1's best instead
    (copy_run / "summary.json").unlink()
    pred = load_predictor(weights=copy_run, device="cpu")
    assert pred.card["fold"] == 1
    assert "training_time_s" in load_predictor("smallcovid-net", weights=copy_run / "final", device="cpu").card


@pytest.mark.usefixtures("one_thread")
def test_predict_and_evaluate_tta_flag(tiny_run, inputs, tiny_data, tmp_path):
    """--tta overrides the card's test-time augmentation: recorded in the report, other maps."""
    probs = {}
    for mode in ("card", "d4"):
        out = tmp_path / mode
        p = smallcovid("predict", "--weights", str(tiny_run[0]), str(inputs["IMG"]), "--out", str(out),
                       "--device", "cpu", "--tta", mode)
        assert p.returncode == 0, p.stderr
        assert json.loads((out / "IMG_report.json").read_text())["tta"] == ("none" if mode == "card" else "d4")
        probs[mode] = np.asarray(Image.open(out / "IMG_prob.png")).astype(int)
    assert probs["card"].shape == probs["d4"].shape and (probs["card"] != probs["d4"]).any()
    out_json = tmp_path / "ev.json"
    p = smallcovid("evaluate", "--model", "smallcovid-net", "--weights", str(tiny_run[0]), "--data",
                   str(tiny_data), "--json", str(out_json), "--device", "cpu", "--tta", "flip")
    assert p.returncode == 0, p.stderr
    assert json.loads(out_json.read_text())["models"]["smallcovid-net"]["n_images"] == 6
    p = smallcovid("predict", "--weights", str(tiny_run[0]), str(inputs["IMG"]), "--out", str(tmp_path / "x"),
                   "--tta", "d8")
    assert p.returncode == 2 and "--tta" in p.stderr and "d4" in p.stderr
