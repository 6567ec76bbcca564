"""The models a user can pick: shipped weights plus models installed from training jobs.

Shipped: ``<weights_dir>/<name>.safetensors`` + ``.json`` for each registered name.
Installed: ``<jobs dir>/installed/<label>.safetensors`` + ``.json`` written by
:meth:`smallcovid.training.jobqueue.JobManager.install`. Also the thresholds the pages
start from. What a card says (rows, facts, curves) is :mod:`smallcovid.app.cardview`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import TTA_MODES, TTA_VIEWS_TEXT
from smallcovid.inference.predictor import weights_dir
from smallcovid.models import list_models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """A selectable model.

    Attributes:
        key: unique id (the registry name for shipped models, ``job:<label>`` for installed).
        label: what the UI shows.
        name: registry architecture name (``smallcovid-net``, ``unet``, ``segnet``, ``mask-rcnn``).
        weights: path of the ``.safetensors`` file (its card sits next to it).
        source: ``"shipped"``, ``"installed"`` or ``"ensemble"`` (the shipped fold models of
            ``name`` averaged; ``weights`` is their ``weights/<name>-folds/`` folder).
        tta: test-time augmentation that overrides the card's (:mod:`smallcovid.models.tta`);
            None runs the card's own (see :func:`with_tta`).
    """

    key: str
    label: str
    name: str
    weights: Path
    source: str
    tta: str | None = None

    @property
    def mtime(self) -> float:
        """Modification time of the weights (part of the model-cache key); for an
        ensemble, of its newest fold model."""
        try:
            if self.weights.is_dir():
                return max((f.stat().st_mtime for f in self.weights.glob("*.safetensors")), default=0.0)
            return self.weights.stat().st_mtime
        except OSError:
            return 0.0


#: What the app calls each test-time augmentation mode (``None``: the card's own).
TTA_LABELS = {None: "as each model card says", "none": "off (1 pass)", "flip": "2 views (mirror)",
              "d4": "8 views (flips and quarter turns)"}


def with_tta(entry: ModelEntry, mode: str | None) -> ModelEntry:
    """``entry`` run with test-time augmentation ``mode`` instead of its card's (None: unchanged).

    The key and label name the mode, so results computed one way are never shown as the other's.

    Raises:
        SmallCovidError: ``mode`` is not a test-time augmentation mode.
    """
    if mode is None:
        return entry
    if mode not in TTA_MODES:
        raise SmallCovidError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return replace(entry, key=f"{entry.key}@tta={mode}", label=f"{entry.label} · {TTA_VIEWS_TEXT[mode]}", tta=mode)


def read_card(path: str | Path) -> dict | None:
    """The JSON model card at ``path`` (or next to a ``.safetensors`` path); None when missing or unreadable."""
    p = Path(path).with_suffix(".json")
    try:
        card = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def shipped_cards() -> dict[str, dict | None]:
    """Registry name -> its shipped card (None where the weights are not shipped yet)."""
    d = weights_dir()
    out: dict[str, dict | None] = {}
    for name in list_models():
        has_weights = (d / f"{name}.safetensors").is_file()
        out[name] = read_card(d / f"{name}.json") if has_weights else None
    return out


def installed_models() -> list[ModelEntry]:
    """Models installed from finished jobs, newest first; unreadable cards are skipped."""
    from smallcovid.training.jobqueue import installed_dir

    d = installed_dir()
    if not d.is_dir():
        return []
    files = sorted(d.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    entries = []
    registered = set(list_models())
    for f in files:
        card = read_card(f)
        if card is None or card.get("architecture") not in registered:
            log.warning("skipping installed model %s: missing or invalid card", f)
            continue
        entries.append(ModelEntry(f"job:{f.stem}", f"{f.stem} (trained here)", card["architecture"], f, "installed"))
    return entries


def ensemble_entries() -> dict[str, ModelEntry]:
    """Registry name -> its fold-ensemble entry, for shipped models whose fold models ship too."""
    from smallcovid.inference.ensemble import fold_weight_files, shipped_folds_dir

    out = {}
    for name, card in shipped_cards().items():
        folder = shipped_folds_dir(name)
        if card is None or not folder.is_dir():
            continue
        try:
            n = len(fold_weight_files(folder, name))
        except SmallCovidError:
            continue
        out[name] = ModelEntry(f"{name}:folds", f"{name} ×{n}", name, folder, "ensemble")
    return out


def available_models() -> list[ModelEntry]:
    """Shipped models (registry order) followed by installed ones."""
    d = weights_dir()
    shipped = [ModelEntry(n, n, n, d / f"{n}.safetensors", "shipped")
               for n, card in shipped_cards().items() if card is not None]
    return shipped + installed_models()


# ------------------------------------------------------------------ thresholds

PAPER_THRESHOLD = 0.8  # the paper's fixed threshold


def card_threshold(item) -> float | None:
    """The card ``threshold`` of a :class:`ModelEntry`, a card dict or a number; None when it has none."""
    if isinstance(item, ModelEntry):
        item = read_card(item.weights)
    if isinstance(item, dict):
        item = item.get("threshold")
    try:
        value = float(item)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if 0.0 < value <= 1.0 else None


def default_threshold(entries_or_cards) -> float:
    """The app's starting threshold: the median of the models' card thresholds, rounded to 0.05.

    Calibrated probabilities (cards with ``calibration``) are comparable across models,
    so one shared slider value serves them all; the exact per-model values stay one
    toggle away ('Card thresholds'), and the paper's 0.8 one click away. Accepts
    :class:`ModelEntry` objects, card dicts or numbers; with no usable card threshold
    it is :data:`PAPER_THRESHOLD`. Always within [0.05, 0.95].
    """
    values = sorted(v for v in (card_threshold(x) for x in entries_or_cards) if v is not None)
    if not values:
        return PAPER_THRESHOLD
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return min(0.95, max(0.05, round(round(median * 20) / 20, 2)))
