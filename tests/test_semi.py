"""Semi-supervised training (teacher -> pseudo-labels -> student) and bf16 training on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.training import semi
from smallcovid.training.loop import train
from smallcovid.training.pseudo import area_matched, load_unlabeled, pseudo_label, unlabeled_files, unlabeled_hash


def test_unlabeled_folder_loading_and_hash(unlabeled_dir, tmp_path):
    files = unlabeled_files(unlabeled_dir)
    assert [f.suffix for f in files] == [".png"] * 5  # images/ found, the text file skipped
    x = load_unlabeled(unlabeled_dir, 32)
    assert x.shape == (5, 1, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    h = unlabeled_hash(unlabeled_dir)
    (files[0]).write_bytes(files[0].read_bytes() + b"\0")
    assert unlabeled_hash(unlabeled_dir) != h
    with pytest.raises(SmallCovidError, match="does not exist"):
        unlabeled_files(tmp_path / "nowhere")


def test_pseudo_labels_keep_the_most_confident_and_mark_unsure_types():
    class Sure(torch.nn.Module):
        """Probability 0.99 in a square for the first image, 0.55 (unsure) for the second."""

        def predict(self, x):
            p = torch.zeros(x.shape[0], 1, *x.shape[-2:])
            p[0, :, 2:6, 2:6] = 0.99
            p[1:, :, 2:6, 2:6] = 0.55
            types = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            types[:, 2] = 1.0
            return type("P", (), {"lesion_prob": p, "type_prob": types})()

    images = torch.rand(2, 1, 8, 8)
    x, m, t = pseudo_label(Sure(), images, torch.device("cpu"), keep=0.5)
    assert x.shape[0] == 1 and torch.equal(x[0], images[0])
    assert m[0, 0, 2:6, 2:6].eq(1).all() and m.sum() == 16 and t[0, 3, 3] == 2
    x, m, t = pseudo_label(Sure(), images, torch.device("cpu"), keep=1.0)
    assert (t[1, 2:6, 2:6] == -100).all()  # unsure pixels carry no lesion type
    with pytest.raises(SmallCovidError, match="keep fraction"):
        pseudo_label(Sure(), images, torch.device("cpu"), keep=0)


def test_semi_supervised_run_never_trains_on_its_validation_slices(tiny_cfg, unlabeled_dir, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    seen = []
    real = semi.train_fold

    def spy(ctx, train_set, val_set, **kw):
        seen.append((ctx.fold, ctx.stage, set(train_set.stems), set(val_set.stems) if val_set else set(),
                     None if kw.get("pseudo") is None else kw["pseudo"][0].shape[0]))
        return real(ctx, train_set, val_set, **kw)

    monkeypatch.setattr(semi, "train_fold", spy)
    cfg = tiny_cfg(epochs=1, student_epochs=1, unlabeled=str(unlabeled_dir), pseudo_keep=0.6, final=True,
                   student_lr=1e-5)
    summary = train(cfg, tmp_path / "run")
    assert [(f, s) for f, s, *_ in seen] == [(1, "teacher"), (1, "student"), (2, "teacher"), (2, "student"),
                                             (0, "teacher"), (0, "student")]
    for fold, stage, train_stems, val_stems, n_pseudo in seen:
        assert not train_stems & val_stems
        assert n_pseudo == (3 if stage == "student" else None)  # ceil(0.6 * 5) pool slices, never labeled ones
    for k in (1, 2):
        assert (tmp_path / "run" / f"fold_{k}" / "teacher" / "smallcovid-net.safetensors").is_file()
        assert (tmp_path / "run" / f"fold_{k}" / "smallcovid-net.safetensors").is_file()
    rec = summary["semi_supervised"]
    assert rec["n_unlabeled"] == 5 and rec["unlabeled_sha256"] == unlabeled_hash(unlabeled_dir)
    card = json.loads((tmp_path / "run" / "final" / "smallcovid-net.json").read_text())
    assert card["semi_supervised"]["unlabeled_sha256"] == rec["unlabeled_sha256"]
    assert "--unlabeled" in summary["command"] and "--student-epochs 1" in summary["command"]
    assert "--student-lr 1e-05" in summary["command"] and "--pseudo-select area-matched" in summary["command"]
    assert rec["student_lr"] == 1e-5 and rec["selection"] == "area-matched"
    student_lr = float((tmp_path / "run" / "fold_1" / "history.csv").read_text().splitlines()[1].split(",")[-1])
    teacher_lr = float((tmp_path / "run" / "fold_1" / "teacher" / "history.csv").read_text().splitlines()[1].split(",")[-1])
    assert student_lr <= 1e-5 < teacher_lr


def test_area_matched_selection_follows_the_labeled_lesion_areas():
    # Ten pool slices: the five most confident all have huge lesions (0.4 of the slice),
    # the labeled slices' lesions cover 0.01..0.04.
    score = torch.tensor([0.99, 0.98, 0.97, 0.96, 0.95, 0.5, 0.45, 0.4, 0.35, 0.3])
    area = torch.tensor([0.4, 0.4, 0.4, 0.4, 0.4, 0.011, 0.021, 0.031, 0.045, 0.012])
    reference = torch.tensor([0.01, 0.02, 0.03, 0.04])
    picked = area_matched(score, area, reference, 4)
    assert picked.tolist() == [0, 5, 6, 7]  # one per labeled quartile; only the top bin takes a huge lesion
    by_confidence = torch.argsort(score, descending=True)[:4].sort().values
    assert by_confidence.tolist() == [0, 1, 2, 3]
    # Bins that cannot fill their seats hand them to the most confident slices left.
    assert area_matched(score, torch.full((10,), 0.4), reference, 3).tolist() == [0, 1, 2]
    assert len(area_matched(score, area, reference, 10).unique()) == 10
    with pytest.raises(SmallCovidError, match="at least one labeled slice"):
        area_matched(score, area, torch.tensor([]), 2)


def test_pseudo_select_is_checked(tiny_cfg):
    with pytest.raises(SmallCovidError, match="pseudo_select must be one of area-matched, confidence"):
        tiny_cfg(pseudo_select="random")
    with pytest.raises(SmallCovidError, match="student_lr"):
        tiny_cfg(student_lr=0.0)


def test_bf16_training_on_cpu_runs_and_records_its_precision(tiny_cfg, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_cfg(epochs=1, precision="bf16")
    summary = train(cfg, tmp_path / "run")
    hist = (tmp_path / "run" / "fold_1" / "history.csv").read_text().splitlines()
    loss = float(hist[1].split(",")[1])
    assert np.isfinite(loss) and "--precision bf16" in summary["command"]
    with pytest.raises(SmallCovidError, match="precision must be one of"):
        tiny_cfg(precision="fp8")
