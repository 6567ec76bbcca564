"""Streamlit-free pieces of the Segment page's quantities and volume report.

* 2D inputs: one quantities row per model from :func:`smallcovid.inference.quantify.slice_report`
  (areas in mm² when the pixel spacing is known, else pixels; involvement as % of lung).
* Volumes: one row per model from a whole-volume report
  (:func:`smallcovid.inference.quantify.volume_report`), the per-slice lesion-area chart,
  the key slices (the one-page HTML report: :mod:`smallcovid.app.html_report`).

Lung labels (0 outside, 1 right, 2 left) come from :func:`smallcovid.inference.framing.lungs_for`.
Lung QC (:mod:`smallcovid.inference.qc`): when a report's ``qc`` list has findings, the page
shows them in a warning (:func:`qc_warning_text`) and the quantities built on the lungs
(lung volume, % of lung) are shown marked (:func:`marked`, :func:`column_formats`), never as
plain numbers; the HTML report does the same.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import numpy as np

from smallcovid.core.vocab import LESION_TYPES
from smallcovid.inference import quantify
from smallcovid.inference.qc import lung_qc, qc_unreliable

DISCLAIMER = "Research use only — not a medical device. Do not use for diagnosis or treatment."
KEY_SLICES = 3  # the largest-lesion slice and two more
SIDES = ("right", "left")
UNRELIABLE = "unreliable: see lung QC"
#: Table columns (of :func:`volume_row` / :func:`slice_row`) whose numbers are built on the lung mask.
LUNG_COLUMNS = ("lung (mL)", "lung (voxels)", "% of lung", "% of right lung", "% of left lung")
#: Lung QC codes that still mean something on one slice of a volume (the others depend on where
#: the slice lies: near the apex a small lung, or only one, is normal).
VOLUME_SLICE_CODES = ("lung_at_edge", "lung_cover")


# ------------------------------------------------------------------ lung QC

def report_qc(report: Mapping[str, Any] | None) -> list[dict]:
    """A report's lung QC findings (``[]`` when it has none or predates them)."""
    return list((report or {}).get("qc") or [])


def slice_qc(lungs: np.ndarray, spacing: tuple[float, float] | None, *, in_volume: bool = False) -> list[dict]:
    """Lung QC of one (H, W) slice's lung labels; spacing (row mm, col mm) or None.

    With ``in_volume`` (a slice shown from a volume) only :data:`VOLUME_SLICE_CODES` are kept.
    """
    qc = lung_qc(lungs, spacing)
    return [f for f in qc if f["code"] in VOLUME_SLICE_CODES] if in_volume else qc


def qc_warning_text(qc: Sequence[Mapping[str, Any]] | None, what: str = "lung volume and % of lung") -> str | None:
    """Markdown for a warning box: what is unreliable, then one bullet per QC sentence; None without findings."""
    if not qc_unreliable(qc):
        return None
    lines = [f"**Lung QC failed:** the automatic lung mask looks implausible, so the figures built on it "
             f"({what}) are unreliable and shown with ≈."]
    lines += [f"- {f.get('message', '')} (`{f.get('code', '')}`)" for f in qc or ()]
    return "\n".join(lines)


def marked(value: Any, fmt: str = "{:,.2f}", unit: str = "") -> str:
    """A number built on unreliable lungs, for display: ``≈ 1,234.00 mL (unreliable: see lung QC)``;
    "—" for None / NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    text = f"{fmt.format(value)} {unit}".strip()
    return f"≈ {text} ({UNRELIABLE})"


def unreliable_columns(columns: Sequence[str], qc: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The ``columns`` built on the lungs (:data:`LUNG_COLUMNS`) when ``qc`` has findings, else ``[]``."""
    return [c for c in columns if c in LUNG_COLUMNS] if qc_unreliable(qc) else []


# ------------------------------------------------------------------ table rows

def quantity_unit(report: Mapping[str, Any], kind: str) -> str:
    """Column unit: "mL" / "mm²" when the spacing is known, else "voxels" / "px"."""
    if kind == "volume":
        return "mL" if report["units"].get("volume") == "ml" else "voxels"
    return "mm²" if report["units"].get("area") == "mm2" else "px"


def slice_row(label: str, classes: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float] | None,
              *, types_known: bool = True, n_lesions: int | None = None, seconds: float | None = None) -> dict:
    """One quantities row of a 2D slice.

    Args:
        label: row label (model name or "ground truth").
        classes: (H, W) lesion map 0/1/2 (with ``types_known=False``, any nonzero counts as lesion
            and the per-type columns are left empty).
        lungs: (H, W) lung labels 0/1/2.
        spacing: the slice's (row mm, col mm), or None.
        n_lesions, seconds: optional "separate lesions" and "inference (ms)" columns.
    """
    classes = np.asarray(classes)
    if not types_known:
        classes = (classes != 0).astype(np.uint8)
    sp = None if spacing is None else (float(spacing[1]), float(spacing[0]))  # (x = col, y = row)
    rep = quantify.slice_report(classes.astype(np.uint8), lungs, sp)
    u = quantity_unit(rep, "area")
    row: dict = {"model": label, f"lesion area ({u})": rep["lesion_mm2"]}
    for key, name in (("ggo_mm2", LESION_TYPES[1]), ("consolidation_mm2", LESION_TYPES[2])):
        row[f"{name} ({u})"] = rep[key] if types_known else None
    row["% of lung"] = rep["involvement_pct"]
    if n_lesions is not None:
        row["separate lesions"] = int(n_lesions)
    if seconds is not None:
        row["inference (ms)"] = round(1000.0 * seconds, 1)
    return row


def volume_row(label: str, report: Mapping[str, Any], dice: float | None = None) -> dict:
    """One quantities row of a whole-volume report (lesion, its types, lungs, involvement, largest slice)."""
    u = quantity_unit(report, "volume")
    row: dict = {"model": label, f"lesion ({u})": report["lesion_ml"], f"ground-glass ({u})": report["ggo_ml"],
                 f"consolidation ({u})": report["consolidation_ml"], f"lung ({u})": report["lung_ml"],
                 "% of lung": report["involvement_pct"]}
    for side in SIDES:
        row[f"% of {side} lung"] = report["per_lung"][side]["involvement_pct"]
    row["largest-lesion slice"] = report["largest_lesion_slice"]
    if dice is not None:
        row["volume Dice"] = float(dice)
    return row


def column_formats(columns: Sequence[str], unreliable: Sequence[str] = ()) -> dict[str, Any]:
    """Column -> format string: counts and slice numbers whole, Dice 3 decimals, mL / mm² / % 2 decimals.

    Columns in ``unreliable`` (:func:`unreliable_columns`) get a formatter that marks the
    number (:func:`marked`) instead.
    """
    out: dict[str, Any] = {}
    for c in columns:
        if c in unreliable:
            digits = "{:,.0f}" if "(voxels)" in c else "{:,.2f}"
            out[c] = lambda v, f=digits: marked(v, f)
            continue
        if "(px)" in c or "(voxels)" in c or c in ("separate lesions", "largest-lesion slice"):
            out[c] = "{:.0f}"
        elif "Dice" in c:
            out[c] = "{:.3f}"
        elif c == "inference (ms)":
            out[c] = "{:.1f}"
        else:
            out[c] = "{:.2f}"
    return out


# ------------------------------------------------------------------ slices

def lesion_areas(report: Mapping[str, Any]) -> list[float]:
    """Lesion area of every slice (mm², or pixels without spacing), from a volume report."""
    return [float(s["lesion_mm2"]) for s in report["slices"]]


def key_slices(report: Mapping[str, Any], n: int = KEY_SLICES) -> list[int]:
    """Up to ``n`` slice indices to show: the largest-lesion slice first, then the next largest lesions
    at least ``max(2, D // 10)`` slices apart; slices spread evenly fill up when there is little lesion.
    The result is sorted, except that the largest-lesion slice stays first."""
    areas = np.asarray(lesion_areas(report), dtype=float)
    d = len(areas)
    if d == 0 or n <= 0:
        return []
    gap = max(2, d // 10)
    chosen: list[int] = []
    for k in np.argsort(-areas, kind="stable"):
        if areas[k] <= 0 or len(chosen) == n:
            break
        if all(abs(int(k) - c) >= gap for c in chosen):
            chosen.append(int(k))
    for k in np.linspace(0, d - 1, n + 2)[1:-1].round().astype(int):
        if len(chosen) < min(n, d) and int(k) not in chosen:
            chosen.append(int(k))
    for k in range(d):  # tiny volumes: any slice not taken yet
        if len(chosen) >= min(n, d):
            break
        if k not in chosen:
            chosen.append(k)
    return chosen[:1] + sorted(chosen[1:])


def selected_slice(selection: Any) -> int | None:
    """The slice index of the first clicked point of a plotly chart selection (``{"points": [{"x": ..}]}``)."""
    try:
        points = selection["points"] if isinstance(selection, Mapping) else selection.points
        x = points[0]["x"]
        return int(round(float(x)))
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None


def slice_area_figure(reports: Mapping[str, Mapping[str, Any]], current: int | None = None):
    """Lesion area per slice, one line per model; a dashed line marks ``current``. Click a point to pick a slice."""
    import plotly.graph_objects as go

    fig = go.Figure()
    unit = "mm²"
    for label, rep in reports.items():
        unit = quantity_unit(rep, "area")
        areas = lesion_areas(rep)
        fig.add_trace(go.Scatter(x=list(range(len(areas))), y=areas, mode="lines+markers", name=label,
                                 marker=dict(size=5),
                                 hovertemplate="slice %{x}: %{y:.1f} " + unit + "<extra>" + html.escape(label)
                                               + "</extra>"))
    if current is not None:
        fig.add_vline(x=int(current), line_dash="dash", line_color="gray")
    fig.update_layout(xaxis_title="slice", yaxis_title=f"lesion area ({unit})", height=300,
                      margin=dict(l=10, r=10, t=30, b=10), clickmode="event+select",
                      legend=dict(orientation="h", y=1.12))
    return fig
