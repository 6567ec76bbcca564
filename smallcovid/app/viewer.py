"""What the Segment page's in-browser viewer needs: compact maps and per-threshold histograms.

The viewer (``pages/components/overlay/``) recolours the overlays and recomputes every
table in the browser when the threshold or opacity moves, so a slider step costs no
server round trip. This module builds the one payload it gets per scan (no Streamlit):

* **threshold grid**: 0.01, 0.02 … 0.99 (the slider's steps) plus each model card's own
  threshold, sorted; at most :data:`MAX_LEVELS` values.
* **levels**: per model and pixel, how many grid thresholds its lesion probability
  reaches, ``#{t in grid : p >= t}`` (0 … len(grid)); the mask at grid threshold
  ``grid[k - 1]`` is then exactly ``levels >= k``, the same pixels as
  ``ProbMaps.mask(grid[k - 1])`` (compared in the probability map's own dtype, as
  NumPy compares an array with a Python float). Bit 7 carries the lesion type
  (set = consolidation), so one byte per pixel holds both.
* **histograms**: per model and level, the count of pixels that are truth lesion /
  truth background / of each predicted type / of each type matching the truth's type.
  Suffix sums give TP, FP, FN and TN at any grid threshold exactly, so Dice,
  precision, recall, IoU, per-type Dice and the lesion areas come out identical to
  :mod:`smallcovid.inference.metrics` and :mod:`smallcovid.app.analysis` on the
  thresholded map (:func:`metrics_at` is the Python twin of the viewer's code).

Arrays travel as base64 of zlib-compressed bytes (``DecompressionStream("deflate")``
in the browser reads zlib), exact to the bit.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import LESION_TYPES

SLIDER_STEPS = tuple(round(i / 100, 2) for i in range(1, 100))  # the viewer's threshold slider
MAX_LEVELS = 127  # levels use 7 bits; bit 7 is the lesion type
CONSOLIDATION_BIT = 0x80
PAPER_THRESHOLD = 0.8
DEFAULT_VIEW = {"threshold": None, "opacity": 0.45, "types": True, "cards": False}
"""The viewer's initial state; ``threshold`` None means the selected models' default (median card threshold)."""


def threshold_grid(extra: Iterable[float] = ()) -> list[float]:
    """The slider's steps plus ``extra`` thresholds (model cards), sorted, without repeats.

    Raises:
        SmallCovidError: a threshold outside (0, 1], or more than :data:`MAX_LEVELS` in all.
    """
    values = set(SLIDER_STEPS)
    for t in extra:
        t = float(t)
        if not 0.0 < t <= 1.0:
            raise SmallCovidError(f"a threshold must be in (0, 1], got {t}")
        values.add(t)
    grid = sorted(values)
    # Two Python floats that are one float32 would give an empty level: keep the first.
    seen, out = set(), []
    for t in grid:
        key = float(np.float32(t))
        if key not in seen:
            seen.add(key)
            out.append(t)
    if len(out) > MAX_LEVELS:
        raise SmallCovidError(f"at most {MAX_LEVELS} thresholds fit the viewer, got {len(out)}")
    return out


def level_of(grid: Sequence[float], threshold: float) -> int:
    """The level whose mask is ``p >= threshold``: 1 + the threshold's index in ``grid``."""
    t32 = np.float32(threshold)
    for i, g in enumerate(grid):
        if np.float32(g) == t32:
            return i + 1
    raise SmallCovidError(f"threshold {threshold} is not on the viewer's grid")


def prob_levels(lesion: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """(H, W) probabilities -> (H, W) uint8 ``#{t in grid : p >= t}``, compared in the map's dtype."""
    p = np.asarray(lesion)
    dtype = p.dtype if p.dtype.kind == "f" else np.float64
    g = np.asarray(grid, dtype=dtype)
    return np.searchsorted(g, p, side="right").astype(np.uint8)


def lesion_kind(maps) -> np.ndarray:
    """(H, W) uint8 most likely lesion type (1 or 2) of a ProbMaps-like object (``kind`` or ``types``)."""
    kind = getattr(maps, "kind", None)
    if kind is None:
        kind = (np.argmax(np.asarray(maps.types)[1:], axis=0) + 1).astype(np.uint8)
    return np.asarray(kind, dtype=np.uint8)


def histograms(levels: np.ndarray, kind: np.ndarray, n_levels: int, truth: np.ndarray | None = None,
               truth_types: np.ndarray | None = None, lungs: np.ndarray | None = None) -> dict[str, list[int]]:
    """Per-level pixel counts (lists of ``n_levels + 1`` ints).

    Keys: ``all``; ``kind1`` / ``kind2`` (predicted type); with ``truth``: ``pos`` / ``neg``
    (truth lesion / background); with ``truth_types``: ``match1`` / ``match2`` (predicted
    type equals the truth's type); with ``lungs`` (lung labels): ``lung`` (inside a lung).
    """
    lv = np.asarray(levels, dtype=np.int64).ravel()
    kd = np.asarray(kind).ravel()
    n = n_levels + 1

    def count(sel=None) -> list[int]:
        return np.bincount(lv if sel is None else lv[sel], minlength=n)[:n].astype(np.int64).tolist()

    out = {"all": count()}
    for t in LESION_TYPES:
        out[f"kind{t}"] = count(kd == t)
    if lungs is not None:
        out["lung"] = count(np.asarray(lungs).ravel() > 0)
    if truth is not None:
        tr = np.asarray(truth, dtype=bool).ravel()
        out["pos"], out["neg"] = count(tr), count(~tr)
        if truth_types is not None:
            tt = np.asarray(truth_types).ravel()
            for t in LESION_TYPES:
                out[f"match{t}"] = count((kd == t) & (tt == t))
    return out


def _suffix(counts: Sequence[int], k: int) -> int:
    return int(sum(counts[k:]))


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den > 0 else empty


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice, precision, recall, IoU with :mod:`smallcovid.inference.metrics`' empty-mask policy."""
    both_empty = 1.0 if tp + fp + fn == 0 else 0.0
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
            "precision": _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
            "recall": _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0),
            "iou": _ratio(tp, tp + fp + fn, both_empty)}


def metrics_at(hist: Mapping[str, Sequence[int]], k: int, n_true_types: Mapping[int, int] | None = None) -> dict:
    """Metrics and areas at level ``k`` (mask = levels >= k) from :func:`histograms`.

    Returns ``area`` and ``area{t}`` (pixels) always, ``in_lung`` (lesion pixels inside the
    lungs) with lung counts; with truth counts ``tp``, ``fp``, ``fn``,
    ``tn``, ``dice``, ``precision``, ``recall``, ``iou``; with truth types ``dice{t}``
    (``n_true_types``: type -> truth pixels of that type; None when the truth holds no pixel
    of type ``t``: per-type Dice counts only images whose truth has that type).
    """
    out: dict = {"area": _suffix(hist["all"], k)}
    for t in LESION_TYPES:
        out[f"area{t}"] = _suffix(hist[f"kind{t}"], k)
    if "lung" in hist:
        out["in_lung"] = _suffix(hist["lung"], k)
    if "pos" in hist:
        tp, fp = _suffix(hist["pos"], k), _suffix(hist["neg"], k)
        fn, tn = sum(hist["pos"]) - tp, sum(hist["neg"]) - fp
        out.update(tp=tp, fp=fp, fn=fn, tn=tn, **_scores(tp, fp, fn))
        if n_true_types is not None and "match1" in hist:
            for t in LESION_TYPES:
                if not int(n_true_types[t]):  # no truth of this type: no per-type Dice ("—")
                    out[f"dice{t}"] = None
                    continue
                tp_t = _suffix(hist[f"match{t}"], k)
                out[f"dice{t}"] = _scores(tp_t, out[f"area{t}"] - tp_t, int(n_true_types[t]) - tp_t)["dice"]
    return out


def pack(array: np.ndarray) -> str:
    """uint8 array -> base64 text of its zlib-compressed bytes (row-major)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array, dtype=np.uint8).tobytes(), 6)).decode("ascii")


def unpack(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack`."""
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8).reshape(shape)


def default_view(view: Mapping | None = None) -> dict:
    """:data:`DEFAULT_VIEW` updated with the known keys of ``view``."""
    out = dict(DEFAULT_VIEW)
    for k, v in (view or {}).items():
        if k in out:
            out[k] = v
    return out


def thresholds_for(view: Mapping, default: float, cards: Mapping[str, float]) -> dict[str, float]:
    """Model label -> threshold the viewer uses in ``view`` (card thresholds or one shared value)."""
    shared = float(default if view.get("threshold") is None else view["threshold"])
    return {label: float(c) if view.get("cards") else shared for label, c in cards.items()}


def build_payload(display: np.ndarray, maps: Mapping[str, object], cards: Mapping[str, float], *,
                  default_threshold: float, truth: np.ndarray | None = None,
                  truth_types: np.ndarray | None = None, truth_outline: np.ndarray | None = None,
                  spacing: tuple[float, float] | None = None, truth_name: str = "",
                  lungs: np.ndarray | None = None, truth_row: Mapping | None = None, key: str = "") -> dict:
    """The viewer's data for one scan (JSON-ready; no view state: see :func:`thresholds_for`).

    Args:
        display: (H, W) uint8 display image.
        maps: model label -> ProbMaps-like (``lesion``, ``kind`` or ``types``, ``seconds``).
        cards: model label -> its card threshold (the 'Card thresholds' mode).
        default_threshold: the slider's initial value (on the 0.01 grid).
        truth, truth_types, truth_outline: ground truth mask, its type map, its outline (H, W).
        spacing: (row mm, col mm) or None.
        lungs: (H, W) lung labels (0 outside) for the "% of lung" column, or None.
        truth_row: the ground truth's row of the quantities table (column -> value), or None.
        key: identifies the images; the viewer keeps its controls while the key stays the same.
    """
    display = np.asarray(display)
    if display.ndim != 2 or display.dtype != np.uint8:
        raise SmallCovidError(f"the viewer needs a (H, W) uint8 display image, got {display.dtype} {display.shape}")
    h, w = display.shape
    grid = threshold_grid(list(cards.values()) + [default_threshold, PAPER_THRESHOLD])
    models = []
    for label, m in maps.items():
        lesion = np.asarray(m.lesion)  # type: ignore[attr-defined]
        if lesion.shape != display.shape:
            raise SmallCovidError(f"{label}: its map is {lesion.shape} but the image is {display.shape}")
        lv = prob_levels(lesion, grid)
        kd = lesion_kind(m)
        packed = lv | np.where(kd == 2, CONSOLIDATION_BIT, 0).astype(np.uint8)
        models.append({"label": label, "maps": pack(packed), "card": float(cards[label]),
                       "card_level": level_of(grid, cards[label]),
                       "ms": round(1000.0 * float(getattr(m, "seconds", 0.0)), 1),
                       "hist": histograms(lv, kd, len(grid), truth, truth_types, lungs)})
    payload: dict = {
        "key": key or hashlib.sha1(display.tobytes()).hexdigest()[:12],
        "width": w, "height": h, "display": pack(display), "grid": grid,
        "default_threshold": float(default_threshold), "paper_threshold": PAPER_THRESHOLD,
        "spacing": None if spacing is None else [float(spacing[0]), float(spacing[1])],
        "types": {str(k): v for k, v in LESION_TYPES.items()}, "models": models, "truth": None,
        "quantities": {"unit": "px" if spacing is None else "mm²",
                       "px_area": None if spacing is None else float(spacing[0]) * float(spacing[1]),
                       "lung_px": None if lungs is None else int(np.count_nonzero(lungs)),
                       "truth_row": None if truth_row is None else {k: json_plain(v) for k, v in truth_row.items()}},
    }
    if truth is not None:
        truth = np.asarray(truth, dtype=bool)
        if truth_outline is None:
            from scipy import ndimage

            truth_outline = truth & ~ndimage.binary_erosion(truth)
        t: dict = {"name": truth_name, "outline": pack(np.asarray(truth_outline, dtype=np.uint8)),
                   "pixels": int(truth.sum()), "components": int(count_components(truth))}
        if truth_types is not None:
            tt = np.asarray(truth_types)
            t["type_pixels"] = {str(k): int((tt == k).sum()) for k in LESION_TYPES}
        payload["truth"] = t
    return payload


def json_plain(v):
    """A table value as JSON: numbers as float / int, NaN and None as None."""
    if v is None:
        return None
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return None if f != f else f


def count_components(mask: np.ndarray) -> int:
    """Connected components of a (H, W) bool mask, 8-connected (as the lesion counts elsewhere)."""
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))[1])


def payload_rows(payload: Mapping, thresholds: Mapping[str, float]) -> list[dict]:
    """What the viewer's tables show at ``thresholds`` (label -> threshold), computed in Python.

    One dict per model: ``model``, ``threshold``, ``area`` (px), ``area1`` / ``area2``, the
    quantities columns as the table titles them (``lesion area (mm²)`` or ``(px)``, per type,
    ``% of lung`` with lung counts) and, with ground truth, ``dice``, ``precision``, ``recall``,
    ``iou`` (and ``dice1`` / ``dice2`` with truth types) — the twin of the JavaScript, for tests.
    """
    grid = payload["grid"]
    truth = payload.get("truth") or {}
    n_types = {int(k): v for k, v in truth.get("type_pixels", {}).items()} or None
    rows = []
    for m in payload["models"]:
        thr = thresholds[m["label"]]
        row = {"model": m["label"], "threshold": thr}
        row.update(metrics_at(m["hist"], level_of(grid, thr), n_types))
        q = payload["quantities"]
        unit, scale = q["unit"], q["px_area"]

        def area(px: int):
            return int(px) if scale is None else round(px * scale, 2)

        row[f"lesion area ({unit})"] = area(row["area"])
        for t, name in LESION_TYPES.items():
            row[f"{name} ({unit})"] = area(row[f"area{t}"])
        if q["lung_px"] is not None:
            row["% of lung"] = None if not q["lung_px"] else round(100.0 * row["in_lung"] / q["lung_px"], 2)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ whole volumes: slices switched in the browser
#
