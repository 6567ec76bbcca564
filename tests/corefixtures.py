"""Fixtures of the core-package tests (imported by conftest.py; data built by tinydata.py).

``tiny_data``: session-wide, read-only labeled folder of 6 odd-sized slices;
``unlabeled_dir``: a folder of 5 unlabeled odd-sized slices;
``labeled_dir``: a fresh copy per test, free to modify; ``tiny_cfg``: a TrainConfig
factory for a ~1 s run; ``tiny_run``: one finished 2-fold run with final/ weights,
shared by the session; ``copy_run``: a private copy of it; ``one_thread``: run a
test with one torch thread (the test machines are small and busy).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tinydata import TINY_IMAGE_SIZE, TINY_MODEL_CONFIG, write_labeled_folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A labeled folder: 6 slices of odd sizes (45x61 ...), blob lesions, masks 0/255, classes 0/1/2.

    Shared by the whole session: do not modify it (use ``labeled_dir`` for that).
    """
    return write_labeled_folder(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture
def labeled_dir(tmp_path) -> Path:
    """A fresh tiny labeled folder that a test may change."""
    return write_labeled_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_cfg(tiny_data):
    """Factory: ``tiny_cfg(model="smallcovid-net", **overrides)`` -> TrainConfig of a tiny fast run."""
    from smallcovid.training.config import TrainConfig

    def make(model: str = "smallcovid-net", **kw):
        base = dict(model=model, data=str(tiny_data), folds=2, epochs=2, batch_size=2,
                    image_size=TINY_IMAGE_SIZE[model], seed=3, device="cpu",
                    model_config=dict(TINY_MODEL_CONFIG[model]))
        base.update(kw)
        return TrainConfig(**base)

    return make


@pytest.fixture(scope="session")
def tiny_run(tiny_cfg, tmp_path_factory) -> tuple[Path, dict]:
    """A finished smallcovid-net run (2 folds x 2 epochs, image 32, final=True): (run dir, summary)."""
    import torch

    from smallcovid.training.loop import train

    run = tmp_path_factory.mktemp("runs") / "tiny-run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(tiny_cfg(final=True), run)
    finally:
        torch.set_num_threads(before)
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    return run, summary


@pytest.fixture
def copy_run(tiny_run, tmp_path) -> Path:
    """A private copy of ``tiny_run``'s folder (for tests that modify a run)."""
    dest = tmp_path / "run"
    shutil.copytree(tiny_run[0], dest)
    return dest


@pytest.fixture
def one_thread():
    """Run a test with one torch thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def unlabeled_dir(tmp_path) -> Path:
    """Five unlabeled 8-bit slices of odd sizes with a bright blob each."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "unlabeled" / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(41, 37), (50, 50), (33, 47), (45, 45), (39, 52)]):
        img = rng.integers(0, 60, (h, w)).astype(np.uint8)
        img[h // 3: h // 3 + 9, w // 4: w // 4 + 11] = 200
        Image.fromarray(img).save(folder / f"Data-1_vol{i % 2}_{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder.parent
