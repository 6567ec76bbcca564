"""Training throughput: real optimiser steps per precision, for every registered model."""

from __future__ import annotations

import pytest
import torch

from smallcovid.models import build_model, list_models
from smallcovid.models.fuse import uses_channels_last
from smallcovid.training.throughput import PRECISIONS, _synthetic_batch, train_samples_per_s


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_model_trains_in_each_precision(name, precision, one_thread):
    sps = train_samples_per_s(name, precision=precision, image_size=65, batch_size=2, steps=1, warmup=0)
    assert 0 < sps < float("inf")


def test_every_timed_and_warmup_step_is_an_optimiser_step(one_thread):
    calls = []
    orig = torch.optim.AdamW.step

    def counting_step(self, *a, **kw):
        calls.append(1)
        return orig(self, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", counting_step)
        train_samples_per_s("smallcovid-net", precision="fp32", image_size=33, batch_size=2, steps=3, warmup=1)
    assert len(calls) == 4


@pytest.mark.parametrize("name", list_models())
def test_dense_models_train_channels_last_on_cpu_and_nchw_is_measurable(name, one_thread, monkeypatch):
    """Training's memory format (channels-last for dense models on CPU, in fp32 as in bf16), and
    ``nchw=True`` keeps the NCHW reference that the bench compares it with."""
    seen = []
    orig = torch.nn.Conv2d.forward

    def spy(self, x):
        if x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:  # a one-channel map is both formats at once
            seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return orig(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    model = build_model(name, **({"image_size": 64} if name == "mask-rcnn" else {}))
    dense = uses_channels_last(model, torch.device("cpu"))
    assert dense == (name != "mask-rcnn") and not uses_channels_last(model, torch.device("meta"))
    train_samples_per_s(name, precision="fp32", image_size=64, batch_size=2, steps=1, warmup=0)
    assert seen and all(s == dense for s in seen)
    seen.clear()
    train_samples_per_s(name, precision="fp32", image_size=64, batch_size=2, steps=1, warmup=0, nchw=True)
    assert seen and not any(seen)


def test_synthetic_batch_has_a_lesion_per_slice():
    img, msk, typ = _synthetic_batch(3, 47, torch.Generator().manual_seed(0))
    assert img.shape == msk.shape == (3, 1, 47, 47) and typ.shape == (3, 47, 47) and typ.dtype == torch.int64
    assert (msk.flatten(1).sum(1) > 0).all() and 0 <= float(img.min()) and float(img.max()) <= 1


@pytest.mark.parametrize("kw, match", [({"precision": "fp16"}, "fp16.*fp32, bf16"),
                                        ({"precision": "fp32", "steps": 0}, "must be >= 1")])
def test_bad_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        train_samples_per_s("smallcovid-net", **kw)
