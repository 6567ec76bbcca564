"""Resumable training state (training/state.py): exact round trip for every registered model."""

from __future__ import annotations

import json

import pytest
import torch

from smallcovid.models import build_model, list_models
from smallcovid.training.state import load_state, save_state
from test_models import FAST_OVERRIDES, blob_batch


def _stepped(name: str, seed: int):
    torch.manual_seed(seed)
    model = build_model(name, **FAST_OVERRIDES.get(name, {})).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, mask, types = blob_batch()
    model.loss(images, mask, types).backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name", list_models())
def test_state_round_trip_is_exact_and_a_snapshot(name, tmp_path):
    model, optimizer = _stepped(name, seed=0)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    save_state(tmp_path, model, optimizer, {"epoch": 3, "best": 0.5})
    # The file is a snapshot: training on after the save must not change what was saved.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    fresh, fresh_opt = _stepped(name, seed=1)
    assert load_state(tmp_path, fresh, fresh_opt) == {"epoch": 3, "best": 0.5}
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    want, got = optimizer.state_dict(), fresh_opt.state_dict()
    assert got["param_groups"] == json.loads(json.dumps(want["param_groups"]))  # JSON turns tuples to lists
    for idx, slots in want["state"].items():
        assert set(got["state"][idx]) == set(slots)
        for key in ("exp_avg", "exp_avg_sq"):
            # AdamW's moments were not touched by the in-place edit above.
            torch.testing.assert_close(got["state"][idx][key], slots[key], rtol=0, atol=0)


def test_damaged_or_mismatched_checkpoint_is_refused(tmp_path):
    model, optimizer = _stepped("smallcovid-net", seed=0)
    save_state(tmp_path, model, optimizer, {"epoch": 1})
    save_state(tmp_path, model, optimizer, {"epoch": 2})
    files = list(tmp_path.glob("resume*.safetensors"))
    assert [f.name for f in files] == ["resume-2.safetensors"]  # the previous pair is cleaned up
    data = bytearray(files[0].read_bytes())
    data[-1] ^= 0xFF
    files[0].write_bytes(bytes(data))
    assert load_state(tmp_path, model, optimizer) is None
    doc = json.loads((tmp_path / "resume.json").read_text())
    (tmp_path / "resume.json").write_text(json.dumps({**doc, "tensors": "resume-9.safetensors"}))
    assert load_state(tmp_path, model, optimizer) is None
