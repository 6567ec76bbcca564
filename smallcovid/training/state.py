"""Resumable training state without pickles: tensors in safetensors, the rest in JSON.

The state of a fold (model, optimizer, epoch, best score, history) is written as
``resume-<epoch>.safetensors`` + ``resume.json``; the JSON goes last and names the
tensor file with its sha256, so a crash between the two writes leaves the previous
complete pair in place, and a damaged file is detected on load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from smallcovid.core.fsutil import atomic_path, atomic_write_text
from smallcovid.core.fsutil import sha256_file as _sha256

log = logging.getLogger(__name__)


def save_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    """Write model + optimizer tensors and ``meta`` (JSON-serialisable) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt.{idx}.{key}"] = val.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    # A new tensor file per save: resume.json (written last) names the file it belongs to,
    # so a kill between the two writes leaves the previous complete pair in place.
    name = f"resume-{meta.get('epoch', 0)}.safetensors"
    with atomic_path(folder / name) as tmp:
        save_file(tensors, str(tmp))
    doc = {
        "meta": meta,
        "param_groups": opt["param_groups"],
        "opt_scalars": scalars,
        "tensors": name,
        "sha256": _sha256(folder / name),
    }
    atomic_write_text(folder / "resume.json", json.dumps(doc))
    for old in folder.glob("resume*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict | None:
    """Restore state saved by :func:`save_state`; returns ``meta`` or None if absent/invalid."""
    js = folder / "resume.json"
    if not js.is_file():
        return None
    try:
        doc = json.loads(js.read_text())
        st = folder / Path(str(doc.get("tensors", "resume.safetensors"))).name
        if not st.is_file() or doc.get("sha256") != _sha256(st):
            log.warning("%s: checkpoint does not match its record; starting the fold afresh", folder)
            return None
        tensors = load_file(str(st))
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable checkpoint (%s); starting the fold afresh", folder, exc)
        return None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, sc in doc["opt_scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    return doc["meta"]
