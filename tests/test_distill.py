"""Distillation: teachers' soft labels on unlabeled slices -> student pretraining -> fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.training import distill
from smallcovid.training.distill import soft_labels
from smallcovid.training.loop import train


class _Flat(torch.nn.Module):
    """A fake teacher: lesion probability ``p`` everywhere, type ``kind`` more likely; records input sizes."""

    def __init__(self, p: float, kind: int) -> None:
        super().__init__()
        self.p, self.kind, self.seen = p, kind, []

    def predict(self, x):
        self.seen.append(x.shape[-1])
        n, _, h, w = x.shape
        types = torch.full((n, 3, h, w), 0.1)
        types[:, self.kind] = 0.8
        return type("P", (), {"lesion_prob": torch.full((n, 1, h, w), self.p), "type_prob": types})()


def test_soft_labels_average_teachers_at_their_own_input_sizes():
    pool = torch.rand(3, 1, 24, 24)
    a, b = _Flat(0.9, 2), _Flat(0.7, 2)
    prob, types = soft_labels([a, b], [24, 16], pool, torch.device("cpu"), batch_size=2)
    assert prob.shape == (3, 1, 24, 24) and types.shape == (3, 24, 24)
    assert a.seen == [24, 24] and b.seen == [16, 16]  # each teacher at its own size, in batches of 2
    assert torch.allclose(prob, torch.full_like(prob, 0.8)) and (types == 2).all()
    prob, types = soft_labels([_Flat(0.5, 1)], [24], pool, torch.device("cpu"))
    assert (types == -100).all()  # unsure: no lesion type
    prob, types = soft_labels([_Flat(0.1, 1)], [24], pool, torch.device("cpu"))
    assert (types == 0).all()
    with pytest.raises(SmallCovidError, match="at least one teacher"):
        soft_labels([], [], pool, torch.device("cpu"))


def test_distilled_run_pretrains_on_the_teachers_labels_then_fine_tunes(tiny_cfg, tiny_run, unlabeled_dir,
                                                                         tmp_path, monkeypatch, one_thread):
    teacher_run, _ = tiny_run
    stages = []
    real = distill.train_fold

    def spy(ctx, train_set, val_set, **kw):
        t = kw.get("train_tensors")
        stages.append((ctx.fold, ctx.stage, None if t is None else t[0].shape[0], val_set is None))
        return real(ctx, train_set, val_set, **kw)

    monkeypatch.setattr(distill, "train_fold", spy)
    cfg = tiny_cfg(epochs=1, final=True, unlabeled=str(unlabeled_dir), teachers=(str(teacher_run),),
                   distill_epochs=2)
    summary = train(cfg, tmp_path / "run")
    # Per fold: pretraining on the 5 pool slices only (no validation), then the labeled fine-tuning.
    assert stages == [(1, "pretrain", 5, True), (1, "", None, False), (2, "pretrain", 5, True),
                      (2, "", None, False), (0, "pretrain", 5, True), (0, "", None, True)]
    pre = tmp_path / "run" / "fold_1" / "pretrain"
    assert (pre / distill.SOFT_LABELS).is_file() and (pre / "smallcovid-net.safetensors").is_file()
    assert len((pre / "history.csv").read_text().splitlines()) == 3  # header + 2 pretraining epochs
    rec = summary["semi_supervised"]
    assert rec["method"].startswith("distillation") and rec["teachers"][0]["run"] == teacher_run.name
    assert rec["n_unlabeled"] == 5 and rec["distill_epochs"] == 2
    assert "--teachers" in summary["command"] and "--distill-epochs 2" in summary["command"]
    card = json.loads((tmp_path / "run" / "final" / "smallcovid-net.json").read_text())
    assert card["semi_supervised"]["teachers"] == rec["teachers"]


def test_a_teacher_trained_on_other_folds_is_refused(tiny_cfg, tiny_run, unlabeled_dir, tmp_path):
    teacher_run, _ = tiny_run
    other_seed = tiny_cfg(seed=11, epochs=1, unlabeled=str(unlabeled_dir), teachers=(str(teacher_run),),
                          distill_epochs=1)
    with pytest.raises(SmallCovidError, match="trained on other slices"):
        train(other_seed, tmp_path / "run")
    with pytest.raises(SmallCovidError, match="not a finished training run"):
        train(tiny_cfg(unlabeled=str(unlabeled_dir), teachers=(str(tmp_path / "none"),)), tmp_path / "run2")
    with pytest.raises(SmallCovidError, match="teachers"):
        tiny_cfg(teachers=(str(teacher_run),))  # no unlabeled folder


def test_soft_labels_are_cached_for_a_resumed_fold(tiny_cfg, tiny_run, unlabeled_dir, tmp_path, monkeypatch,
                                                   one_thread):
    teacher_run, _ = tiny_run
    cfg = tiny_cfg(epochs=1, unlabeled=str(unlabeled_dir), teachers=(str(teacher_run),), distill_epochs=1)
    train(cfg, tmp_path / "run")
    calls = []
    monkeypatch.setattr(distill, "soft_labels", lambda *a, **k: calls.append(1))
    from smallcovid.training.context import FoldContext

    ctx = FoldContext(type("R", (), {"out": tmp_path / "run", "cfg": cfg})(), 1)
    from smallcovid.data.dataset import load_dataset

    x, m, t = distill.fold_soft_labels(ctx, torch.zeros(5, 1, 32, 32), load_dataset(cfg.data))
    assert not calls and m.shape == (5, 1, 32, 32) and 0 <= float(m.min()) and float(m.max()) <= 1


def test_a_detector_student_gets_the_soft_labels_cut_at_one_half(tiny_cfg, tmp_path):
    from smallcovid.training.context import FoldContext, RunContext
    from smallcovid.training.fold import _resume_or_start
    from smallcovid.training.progress import Clock

    cfg = tiny_cfg("mask-rcnn")
    run = RunContext(cfg, tmp_path, torch.device("cpu"), Clock(1), folds=2)
    soft = (torch.rand(3, 1, cfg.image_size, cfg.image_size), torch.rand(3, 1, cfg.image_size, cfg.image_size),
            torch.full((3, cfg.image_size, cfg.image_size), -100))
    state = _resume_or_start(FoldContext(run, 1, stage="pretrain"), None, None, train_tensors=soft)
    assert set(state.train_t[1].unique().tolist()) == {0.0, 1.0} and (state.train_t[2] >= 0).all()
    assert state.steps == 2  # one pass over the 3 slices in batches of 2
