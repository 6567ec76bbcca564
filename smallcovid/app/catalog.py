"""The models a user can pick: shipped weights plus models installed from training jobs.

Shipped: ``<weights_dir>/<name>.safetensors`` + ``.json`` for each registered name.
Installed: ``<jobs dir>/installed/<label>.safetensors`` + ``.json`` written by
:meth:`smallcovid.training.jobqueue.JobManager.install`. Also turns model cards into the
rows the Models and Compare pages show.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from smallcovid.core.vocab import TABLE_METRICS
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
        source: ``"shipped"`` or ``"installed"``.
    """

    key: str
    label: str
    name: str
    weights: Path
    source: str

    @property
    def mtime(self) -> float:
        """Modification time of the weights (part of the model-cache key)."""
        try:
            return self.weights.stat().st_mtime
        except OSError:
            return 0.0


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


def available_models() -> list[ModelEntry]:
    """Shipped models (registry order) followed by installed ones."""
    d = weights_dir()
    shipped = [ModelEntry(n, n, n, d / f"{n}.safetensors", "shipped")
               for n, card in shipped_cards().items() if card is not None]
    return shipped + installed_models()


# ------------------------------------------------------------------ model cards -> rows

def _cv(card: dict) -> dict:
    cv = card.get("cv")
    return cv if isinstance(cv, dict) else {}


def cv_fold_rows(card: dict, key: str = "at_threshold") -> list[dict]:
    """Per-fold CV rows: fold, best epoch, threshold, Dice, precision, recall, IoU, per-type Dice."""
    rows = []
    for f in _cv(card).get("per_fold", []) or []:
        m = f.get(key, {}) or {}
        row = {"fold": f.get("fold"), "best epoch": f.get("best_epoch"), "threshold": m.get("threshold")}
        row.update({k: m.get(k) for k in TABLE_METRICS})
        row.update({k.removeprefix("dice_") + " Dice": v for k, v in m.items() if k.startswith("dice_")})
        rows.append(row)
    return rows


def cv_mean_std(card: dict, key: str = "at_threshold") -> dict[str, tuple[float, float]]:
    """Metric -> (mean, std) over folds from the card (Dice, precision, recall, IoU, per-type Dice)."""
    agg = _cv(card).get(key, {}) or {}
    out = {}
    for k, v in agg.items():
        if isinstance(v, dict) and "mean" in v and k != "threshold":
            out[k] = (float(v["mean"]), float(v.get("std", 0.0)))
    return out


def cv_table_rows(card: dict, key: str = "at_threshold") -> list[dict]:
    """:func:`cv_fold_rows` followed by a "mean" and a "std" row (over folds) for the metric columns."""
    rows = cv_fold_rows(card, key)
    if not rows:
        return []
    ms = cv_mean_std(card, key)
    mean, std = {"fold": "mean"}, {"fold": "std"}
    for col in rows[0]:
        src = col if col in ms else f"dice_{col.removesuffix(' Dice')}" if col.endswith(" Dice") else None
        if src in ms:
            mean[col], std[col] = ms[src]
    for r in rows:
        r["fold"] = str(r["fold"])  # one column type next to "mean" / "std"
    return rows + [mean, std]


def paper_vs_ours(name: str, card: dict | None, paper: dict) -> list[dict]:
    """Rows metric / paper (test split) / ours (CV mean ± std at the card's protocol threshold)."""
    ours = cv_mean_std(card) if card else {}
    reported = paper.get(name)
    rows = []
    for i, k in enumerate(("dice", "precision", "recall")):
        mean_std = ours.get(k)
        rows.append({
            "metric": k,
            "paper (test split)": None if reported is None else float(reported[i]),
            "ours (CV mean)": None if mean_std is None else mean_std[0],
            "ours (CV std)": None if mean_std is None else mean_std[1],
        })
    return rows


def card_facts(card: dict) -> dict[str, str]:
    """Short label -> text facts of a card: architecture, parameters, input size, threshold, training."""
    training = card.get("training", {}) if isinstance(card.get("training"), dict) else {}
    cfg = training.get("config", {}) if isinstance(training.get("config"), dict) else {}
    facts = {
        "architecture": str(card.get("architecture", "?")),
        "parameters": f"{card['params']:,}" if isinstance(card.get("params"), int) else "?",
        "input size": f"{card.get('input_size', '?')} px",
        "threshold": str(card.get("threshold", "?")),
    }
    if training:
        facts["training data"] = f"{training.get('data', '?')} ({training.get('n_slices', '?')} slices)"
        facts["protocol"] = (f"{training.get('protocol', '?')}: {cfg.get('epochs', '?')} epochs, "
                             f"lr {cfg.get('lr', '?')}, {cfg.get('optimizer', '?')}, batch {cfg.get('batch_size', '?')}, "
                             f"{_cv(card).get('folds', cfg.get('folds', '?'))}-fold CV")
        facts["device"] = str(training.get("device", "?"))
    if isinstance(card.get("training_time_s"), (int, float)):
        facts["training time"] = f"{card['training_time_s'] / 60:.1f} min"
    if card.get("command"):
        facts["reproduce"] = str(card["command"])
    return facts
