"""Builders for the app tests: tiny untrained weights, small labeled folders, PNG bytes.

Untrained weights are enough for the app tests: they assert that the numbers the
app shows equal what :mod:`smallcovid.inference.metrics` computes on the same maps, not
that the models are any good.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

# Small configs, as in test_models.FAST_OVERRIDES, so building and running stays fast on 2 cores.
TINY_OVERRIDES: dict[str, dict] = {
    "smallcovid-net": {"filters": 8},
    "unet": {"decoder_channels": (32, 16, 16, 8, 8)},
    "segnet": {"width": 0.125},
    "mask-rcnn": {"image_size": 64, "fpn_channels": 32, "representation_size": 64, "mask_head_channels": 32},
}


def fake_cv(seed: int) -> dict:
    """A ``cv`` block in the format ``smallcovid.training.cvsummary`` writes into final model cards."""
    rng = np.random.default_rng(seed)
    per_fold = []
    for k in (1, 2, 3):
        row = {m: float(rng.uniform(0.5, 0.8)) for m in ("dice", "precision", "recall", "iou", "specificity")}
        row.update({"pooled_dice": row["dice"], "threshold": 0.8, "dice_ground-glass": 0.6, "dice_consolidation": 0.4})
        per_fold.append({"fold": k, "best_epoch": 3 + k, "at_threshold": row, "tuned": dict(row, threshold=0.6)})
    agg = {m: {"mean": float(np.mean([f["at_threshold"][m] for f in per_fold])),
               "std": float(np.std([f["at_threshold"][m] for f in per_fold]))}
           for m in per_fold[0]["at_threshold"]}
    return {"at_threshold": agg, "tuned": agg, "per_fold": per_fold, "recommended_threshold": 0.6, "folds": 3}


FIT_STEPS = {"smallcovid-net": (60, 1e-2), "segnet": (30, 1e-2)}  # a few seconds each on one core


def _fit(model, steps: int, lr: float) -> None:
    """A few Adam steps on bright-disc images, so probabilities spread over [0, 1] (bright = lesion)."""
    import torch

    imgs, masks = zip(*[blob_slice(64, s) for s in range(8)])
    x = torch.from_numpy(np.stack(imgs) / 255.0).float()[:, None]
    m = torch.from_numpy(np.stack(masks) > 0).float()[:, None]
    types = m[:, 0].long()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model.loss(x, m, types).backward()
        opt.step()
    model.eval()


def make_tiny_weights(folder: Path, names: list[str] | None = None,
                      with_cv: tuple[str, ...] = ("smallcovid-net", "unet")) -> Path:
    """Save tiny models + cards (input size 64, threshold 0.5) into ``folder``.

    smallcovid-net and segnet get a few training steps (see FIT_STEPS) so their maps
    vary with the threshold; unet and mask-rcnn stay untrained. Cards of ``with_cv``
    models carry a made-up ``cv`` block and training facts, like a final model's card.
    """
    import torch

    from smallcovid.models import list_models

    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # modest on a shared 2-core machine; restored below
    try:
        for i, name in enumerate(names or list_models()):
            _save_tiny(folder, i, name, name in with_cv)
    finally:
        torch.set_num_threads(threads)
    return folder


def _save_tiny(folder: Path, seed: int, name: str, with_cv: bool) -> None:
    import torch

    from smallcovid.models import build_model
    from smallcovid.models.checkpoint import save_weights

    torch.manual_seed(seed)
    model = build_model(name, **TINY_OVERRIDES.get(name, {}))
    if name in FIT_STEPS:
        _fit(model, *FIT_STEPS[name])
    card = {"input_size": 64, "threshold": 0.5}
    if with_cv:
        card.update(
            training={"data": "tiny-test-set", "n_slices": 9, "protocol": "default",
                      "config": {"epochs": 5, "lr": 0.002, "optimizer": "adamw", "batch_size": 4, "folds": 3},
                      "device": "cpu (test)"},
            cv=fake_cv(seed), training_time_s=12.0, command="python train.py --model " + name)
    save_weights(model, folder / f"{name}.safetensors", card=card)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def blob_slice(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit gray 'slice' with one or two bright discs and their 0/255 mask.

    The discs are near white, as soft tissue is in the lung window of the training slices,
    so the slice is not taken for one exported in a wider window (and re-windowed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 3))):
        r, c = rng.uniform(0.25, 0.75, 2) * size
        rad = size * rng.uniform(0.08, 0.18)
        mask |= (yy - r) ** 2 + (xx - c) ** 2 <= rad ** 2
    img = np.clip(60 + 170 * mask + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
    return img, (mask * 255).astype(np.uint8)


def make_labeled_folder(root: Path, n: int = 6, size: int = 64) -> Path:
    """``root/images/case_<i>.png`` + ``root/masks/case_<i>.png`` (DESIGN.md layout)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, mask = blob_slice(size, seed=i)
        (root / "images" / f"case_{i}.png").write_bytes(png_bytes(img))
        (root / "masks" / f"case_{i}.png").write_bytes(png_bytes(mask))
    return root


def finished_job(jobs_dir: Path, data: Path, weights: Path, run_name: str = "job-1") -> int:
    """A 'done' job row with a run folder as training writes it (history, summary, final model
    copied from ``weights``); returns the job id."""
    import json
    import shutil
    import time

    from smallcovid.training.config import TrainConfig
    from smallcovid.training.jobs import JobStore

    store = JobStore(jobs_dir / "jobs.db")
    cfg = TrainConfig(model="smallcovid-net", data=str(data), folds=3, epochs=2, image_size=64, final=True)
    run = jobs_dir / "runs" / run_name
    job_id = store.add("done-job", cfg, run)
    for k in (1, 2, 3):
        (run / f"fold_{k}").mkdir(parents=True, exist_ok=True)
        (run / f"fold_{k}" / "history.csv").write_text(
            "epoch,train_loss,val_loss,val_dice,lr\n1,1.0,1.1,0.3,0.001\n2,0.8,0.9,0.5,0.0005\n")
    (run / "final").mkdir(exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"smallcovid-net{suffix}", run / "final" / f"smallcovid-net{suffix}")
    (run / "summary.json").write_text(json.dumps({**fake_cv(0), "device": "cpu", "elapsed_s": 6.0}))
    (run / "train.log").write_text("line one\nfold 3/3 done\n")
    store.update(job_id, status="done", run_dir=str(run), finished=time.time())
    return job_id
