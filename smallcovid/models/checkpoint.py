"""Save and load trained models as ``<name>.safetensors`` + ``<name>.json`` (model card).

Weights are only ever read with safetensors (no pickle-based loader anywhere),
so a weights file cannot execute code. The card names the architecture and its
config (enough to rebuild the model), the parameter count and the sha256 of the
weights file, which is checked on load. Both files are written atomically (temp
file in the same folder, then ``os.replace``), so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.core.fsutil import atomic_path, atomic_write_text, sha256_file
from smallcovid.models.base import SegmentationModel, num_parameters
from smallcovid.models.registry import build_model

WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"


def _json_default(value: Any) -> Any:
    # Cards often carry numpy scalars (metrics) and paths; anything else is a bug.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"model card value of type {type(value).__name__} is not JSON-serialisable")


def save_weights(
    model: SegmentationModel,
    path: str | Path,
    card: dict | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> dict:
    """Write ``<dir>/<name>.safetensors`` and the ``<dir>/<name>.json`` model card.

    Args:
        model: the model to save (any device; tensors are copied to CPU).
        path: the weights path; must end in ``.safetensors``.
        card: extra card fields (training data, metrics, ...); the fields below
            are computed here and take precedence.
        dtype: store floating-point tensors in this dtype, e.g. ``torch.float16``
            to halve the file; loading casts back to the model's dtype.

    Returns:
        The card as written: ``card`` plus architecture, config, params,
        weights_file, weights_dtype, sha256 and smallcovid_version.
    """
    from smallcovid import __version__

    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise SmallCovidError(f"{path}: weights path must end in {WEIGHTS_SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors that share storage (tied or viewed weights).
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))

    float_dtypes = sorted(
        {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
    )
    full_card = {
        **(card or {}),
        "architecture": model.name,
        "config": model.config_dict(),
        "params": num_parameters(model),
        "weights_file": path.name,
        "weights_dtype": ",".join(float_dtypes),
        "sha256": sha256_file(path),
        "smallcovid_version": __version__,
    }
    text = json.dumps(full_card, indent=2, default=_json_default) + "\n"
    card_path = path.with_suffix(CARD_SUFFIX)
    atomic_write_text(card_path, text)
    # Return what a reader will see (tuples in configs come back as lists).
    return json.loads(text)


def _resolve(path: Path) -> tuple[Path, Path | None]:
    """(card path, explicit weights path or None) for a file or folder argument."""
    if path.is_dir():
        cards = sorted(path.glob(f"*{CARD_SUFFIX}"))
        pairs = [c for c in cards if c.with_suffix(WEIGHTS_SUFFIX).is_file()]
        if len(pairs) != 1:
            raise InputFileError(
                path,
                f"expected exactly one <name>{WEIGHTS_SUFFIX} + <name>{CARD_SUFFIX} pair, "
                f"found {len(pairs)}",
            )
        return pairs[0], None
    if path.suffix == WEIGHTS_SUFFIX:
        return path.with_suffix(CARD_SUFFIX), path
    if path.suffix == CARD_SUFFIX:
        return path, None
    raise InputFileError(
        path, f"is not a {WEIGHTS_SUFFIX} weights file, a {CARD_SUFFIX} model card or a folder"
    )


def read_card(card_path: Path) -> dict:
    """A model card as a dict; raises InputFileError naming the file when missing or malformed."""
    if not card_path.is_file():
        raise InputFileError(card_path, "model card not found (it must sit next to the weights file)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"is not a readable JSON model card ({exc.__class__.__name__})"
        raise InputFileError(card_path, problem) from None
    if not isinstance(card, dict) or not isinstance(card.get("architecture"), str) or not isinstance(
        card.get("config"), dict
    ):
        raise InputFileError(card_path, "model card lacks an 'architecture' name and a 'config' object")
    return card


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict]:
    """Rebuild a model from its card and load its weights (safetensors only).

    Args:
        path: the ``.safetensors`` file, its ``.json`` card, or a folder holding
            exactly one such pair.
        device: where to put the model.

    Returns:
        ``(model, card)`` with the model in eval mode on ``device``.

    Raises:
        SmallCovidError: missing or unreadable files, an unknown architecture or
            config, a sha256 mismatch or tensors that do not fit the architecture;
            the message is one sentence naming the file.
    """
    card_path, weights_path = _resolve(Path(path))
    card = read_card(card_path)
    if weights_path is None:
        # Only the file name is taken from the card, so a card cannot point elsewhere.
        name = str(card.get("weights_file") or card_path.stem + WEIGHTS_SUFFIX)
        weights_path = card_path.parent / Path(name).name
    architecture = card["architecture"]
    try:
        model = build_model(architecture, config=card["config"])
    except SmallCovidError as exc:
        raise InputFileError(card_path, f"describes a model that cannot be built: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputFileError(card_path, f"has an invalid config for {architecture} ({exc})") from None

    try:
        data = weights_path.read_bytes()
    except OSError:
        raise InputFileError(weights_path, "weights file not found or not readable") from None
    expected = card.get("sha256")
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise InputFileError(
            weights_path, "sha256 does not match its model card (the file is corrupt or was replaced)"
        )
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        problem = f"is not a valid safetensors file ({exc.__class__.__name__})"
        raise InputFileError(weights_path, problem) from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise InputFileError(
            weights_path, f"tensors do not match the {architecture} architecture described by its card"
        ) from None
    return model.to(device).eval(), card
