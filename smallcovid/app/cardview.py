"""What a model card says, as the Models, Compare and Train pages show it.

Rows of the per-fold cross-validation table, the card's facts, the paper beside ours,
training curves, calibration and the run folder an installed model came from. Cards are
plain dicts (read by :func:`smallcovid.app.catalog.read_card`); missing fields give empty
rows or None, never an error.
"""

from __future__ import annotations

from smallcovid.core.vocab import TABLE_METRICS, TTA_TEXT, TTA_VIEWS_TEXT


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


def protocol_threshold(card: dict) -> float | None:
    """The fixed threshold of the card's ``at_threshold`` CV figures (the paper's 0.8), or None."""
    folds = _cv(card).get("per_fold") or []
    thr = (folds[0].get("at_threshold") or {}).get("threshold") if folds else None
    return None if thr is None else float(thr)


def cv_operating_rows(card: dict) -> list[dict]:
    """:func:`cv_table_rows` at each fold's tuned threshold (the one a model is used at), plus a
    ``Dice at <protocol threshold>`` column: at the paper's fixed 0.8 a model whose probabilities
    are seldom that high scores near 0, which says more about the threshold than the model."""
    rows = cv_table_rows(card, "tuned")
    fixed = cv_table_rows(card, "at_threshold")
    thr = protocol_threshold(card)
    if not rows or len(fixed) != len(rows) or thr is None:
        return rows
    for r, f in zip(rows, fixed):
        r[f"Dice at {thr:g}"] = f.get("dice")
    return rows


def paper_vs_ours(name: str, card: dict | None, paper: dict) -> list[dict]:
    """Rows metric / paper (test split) / ours (CV mean ± std at each fold's tuned threshold)."""
    ours = cv_mean_std(card, "tuned") if card else {}
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


def _tta_fact(card: dict, config: dict) -> str:
    """The card's test-time augmentation, and what the others measured on its run (``tta_cv``)."""
    text = TTA_TEXT.get(config.get("tta", "none"), str(config.get("tta")))
    measured = card.get("tta_cv") if isinstance(card.get("tta_cv"), dict) else {}
    parts = []
    for mode, entry in measured.items():
        d = entry.get("dice") if isinstance(entry, dict) else None
        p = d.get("paired") if isinstance(d, dict) else None
        if isinstance(p, dict) and isinstance(d.get("mean"), (int, float)):
            parts.append(f"{TTA_VIEWS_TEXT.get(mode, mode)}: CV Dice {d['mean']:.3f} ({p['mean']:+.3f} ± {p['sd']:.3f} "
                         f"paired, better in {p['better_folds']} of {p['folds']} folds)")
    return text + (f"; measured on the same folds: {'; '.join(parts)}" if parts else "")


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
        facts["protocol"] = (f"{training.get('protocol', '?')}: {_epochs_text(card, cfg)}, "
                             f"lr {cfg.get('lr', '?')}, {cfg.get('optimizer', '?')}, batch {cfg.get('batch_size', '?')}, "
                             f"{_cv(card).get('folds', cfg.get('folds', '?'))}-fold CV")
        facts["device"] = str(training.get("device", "?"))
    config = card.get("config") if isinstance(card.get("config"), dict) else {}
    facts["test-time augmentation"] = _tta_fact(card, config)
    declined = card.get("calibration_declined")
    if isinstance(declined, dict) and "calibration" not in card:
        facts["calibration"] = (f"none: {str(declined.get('method', 'platt')).capitalize()} scaling fitted on the other "
                                f"folds raised the calibration error ({declined.get('ece_before', float('nan')):.3f} "
                                f"-> {declined.get('ece_after', float('nan')):.3f}), so the raw probabilities stay")
    if isinstance(card.get("training_time_s"), (int, float)):
        facts["training time"] = f"{card['training_time_s'] / 60:.1f} min"
    if card.get("command"):
        facts["reproduce"] = str(card["command"])
    return facts


def _epochs_text(card: dict, cfg: dict) -> str:
    """``"20 epochs"``; for a warm-restarts run with a plateau record, the epochs each fold and the
    final model actually trained (folds stop at their plateau; an extended run has several caps)."""
    plateau = _cv(card).get("plateau")
    folds = plateau.get("per_fold") if isinstance(plateau, dict) else None
    runs = [f.get("epochs_run") for f in folds if isinstance(f, dict)] if isinstance(folds, list) else []
    if cfg.get("schedule") != "restarts" or not runs or not all(isinstance(r, int) for r in runs):
        return f"{cfg.get('epochs', '?')} epochs"
    text = (f"warm restarts (cycles of {cfg.get('cycle_epochs', '?')} epochs, doubling), cap {cfg.get('epochs', '?')}; "
            f"folds trained {', '.join(str(r) for r in runs)} epochs")
    final = plateau.get("final_epochs")
    return text + (f", the final model {final}" if isinstance(final, int) else "")


# ------------------------------------------------------------------ more from a card

PAPER_AUTHORS = "Salazar Urbina, Ventura Molina, Flores Cortes, Méndez Agüero, Jiménez Alcantar"
PAPER_AFFILIATION = "Instituto Politécnico Nacional"
PAPER_CITATION = (
    f"{PAPER_AUTHORS}; {PAPER_AFFILIATION}. SmallCovid-Net: the lightweight COVID-19 lesion segmentation network this project reimplements, compared "
    "there with U-Net, SegNet and Mask R-CNN on MedSeg CT slices (its Table 1: Dice / precision / recall on a "
    "10-slice test split)."
)
DATA_CITATIONS = (
    "MedSeg, COVID-19 CT segmentation dataset, medicalsegmentation.com/covid19 (the 100 axial slices).",
    "D.-P. Fan, T. Zhou, G.-P. Ji et al., Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT Images, "
    "IEEE Transactions on Medical Imaging 39(8), 2020 (COVID-SemiSeg: the 50-slice training split used here).",
)


def card_histories(card: dict | None) -> dict[int, dict[str, list[float]]]:
    """Per-fold training curves stored in a card (``histories``: fold -> column -> values; 0 = final), else {}."""
    raw = (card or {}).get("histories")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for k, cols in raw.items():
        try:
            fold = int(k)
        except (TypeError, ValueError):
            continue
        if isinstance(cols, dict) and cols.get("epoch"):
            out[fold] = {c: [float("nan") if v is None else float(v) for v in vals]
                         for c, vals in cols.items() if isinstance(vals, list)}
    return out


def card_calibration(card: dict | None) -> dict | None:
    """The card's calibration for a reliability plot: ``method``, ``ece_before``, ``ece_after``, ``threshold``
    and ``before`` / ``after`` curves (``confidence``, ``lesion_fraction``, ``share`` per bin); None
    when the card has no reliability curves."""
    cal = (card or {}).get("calibration")
    rel = cal.get("reliability") if isinstance(cal, dict) else None
    if not isinstance(rel, dict):
        return None
    curves = {}
    for k in ("before", "after"):
        c = rel.get(k)
        if isinstance(c, dict) and c.get("confidence") and c.get("lesion_fraction"):
            curves[k] = {f: [float(v) for v in c.get(f, [])] for f in ("confidence", "lesion_fraction", "share")}
    if not curves:
        return None

    def num(key):
        v = cal.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    return {"method": str(cal.get("method", "platt")), "ece_before": num("ece_before"),
            "ece_after": num("ece_after"), "threshold": num("threshold"), **curves}


def installed_run_dir(card: dict | None) -> str | None:
    """The run folder of the job an installed model came from (card ``installed_from_job``), when still known."""
    job_id = (card or {}).get("installed_from_job")
    if not isinstance(job_id, int):
        return None
    import sqlite3

    from smallcovid.core.errors import SmallCovidError
    from smallcovid.training.jobs import JobStore, jobs_dir

    db = jobs_dir() / "jobs.db"
    if not db.is_file():
        return None
    try:
        job = JobStore(db).get(job_id)
    except (SmallCovidError, OSError, sqlite3.Error):  # the job row is gone or unreadable: just no curves
        return None
    return job.run_dir if job is not None and job.run_dir else None
