"""The one-page, self-contained HTML report of one model on one volume.

Quantities come from a whole-volume report (:func:`smallcovid.inference.quantify.volume_report`),
the key slices are embedded as JPEG data URIs, and a failed lung QC marks the quantities built
on the lung mask (≈), as the page does (:mod:`smallcovid.app.volume_report`).
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from io import BytesIO
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from smallcovid.app import viz
from smallcovid.app.volume_report import DISCLAIMER, SIDES, lesion_areas, marked, quantity_unit, report_qc
from smallcovid.core.vocab import LESION_TYPES
from smallcovid.inference.qc import qc_unreliable


def image_data_uri(rgb: np.ndarray, fmt: str = "JPEG") -> str:
    """A (H, W) or (H, W, 3) uint8 image as a ``data:image/...;base64,`` URI (JPEG quality 90, or PNG)."""
    from PIL import Image

    fmt = fmt.upper()
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"fmt must be JPEG or PNG, got {fmt!r}")
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_quantities(report: Mapping[str, Any], dice: float | None = None) -> list[tuple[str, str]]:
    """(quantity, formatted value) pairs of a volume report, for the HTML report."""
    vu, au = quantity_unit(report, "volume"), quantity_unit(report, "area")
    doubtful = qc_unreliable(report_qc(report))

    def num(v, unit=""):
        if v is None:
            return "—"
        text = f"{v:.0f}" if isinstance(v, int) and not isinstance(v, bool) else f"{float(v):.2f}"
        return f"{text} {unit}".strip()

    def lung_num(v, unit=""):  # built on the lung mask
        if not doubtful:
            return num(v, unit)
        return marked(v, "{:,.0f}" if isinstance(v, int) and not isinstance(v, bool) else "{:,.2f}", unit)

    rows = [("Lesion volume", num(report["lesion_ml"], vu)),
            ("Ground-glass volume", num(report["ggo_ml"], vu)),
            ("Consolidation volume", num(report["consolidation_ml"], vu)),
            ("Lung volume", lung_num(report["lung_ml"], vu)),
            ("Lung involved", lung_num(report["involvement_pct"], "%"))]
    for side in SIDES:
        p = report["per_lung"][side]
        rows.append((f"{side.capitalize()} lung involved", lung_num(p["involvement_pct"], "%")))
    k = report["largest_lesion_slice"]
    rows.append(("Largest-lesion slice", "none (no lesion found)" if k is None else
                 f"{k} ({num(report['slices'][k]['lesion_mm2'], au)})"))
    if dice is not None:
        rows.append(("Volume Dice against the uploaded labels", f"{float(dice):.3f}"))
    return rows


def html_report(report: Mapping[str, Any], *, model: str, weights_sha256: str | None, threshold: float,
                scan_name: str, images: Sequence[tuple[int, np.ndarray]], dice: float | None = None,
                date: datetime | None = None, disclaimer: str = DISCLAIMER) -> str:
    """A one-page, self-contained HTML report of one model on one volume.

    Args:
        report: the volume report (:func:`smallcovid.inference.quantify.volume_report`).
        model: model label; weights_sha256: from its model card (None when unknown).
        threshold: probability threshold of the lesion map.
        scan_name: the input's name.
        images: (slice index, (H, W, 3) uint8 overlay) pairs, embedded as JPEG data URIs.
        dice: volume Dice against uploaded labels, if any.
        date: report time (default now, UTC).
    """
    when = (date or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M %Z").strip()
    esc = html.escape
    spacing = report.get("spacing_mm")
    facts = [("Scan", scan_name), ("Slices", str(len(report["slices"]))),
             ("Voxel size (x, y, z)", "unknown" if spacing is None else " × ".join(f"{s:.3g}" for s in spacing) + " mm"),
             ("Model", model), ("Weights sha256", weights_sha256 or "unknown"), ("Threshold", f"{threshold:g}"),
             ("Date", when)]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    qrows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in report_quantities(report, dice))
    areas = lesion_areas(report)
    au = quantity_unit(report, "area")
    figs = "".join(
        f"<figure><img alt='slice {k}' src='{image_data_uri(img)}'><figcaption>slice {k}"
        f"{' (largest lesion)' if k == report['largest_lesion_slice'] else ''}: lesion {areas[k]:.1f} {esc(au)}"
        f"</figcaption></figure>" for k, img in images)
    qc = report_qc(report)
    qc_block = "" if not qc_unreliable(qc) else (
        "<div class='qc'><b>Lung QC failed:</b> the automatic lung mask looks implausible, so lung volume "
        "and involvement below are unreliable (marked ≈).<ul>"
        + "".join(f"<li>{esc(str(f.get('message', '')))} <code>{esc(str(f.get('code', '')))}</code></li>" for f in qc)
        + "</ul></div>")
    legend = " ".join(f"<span style='color:#{r:02x}{g:02x}{b:02x}'>■</span> {esc(LESION_TYPES[t])}"
                      for t, (r, g, b) in viz.TYPE_RGB.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SmallCovid volume report: {esc(scan_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto; color: #222; }}
.disclaimer {{ border: 2px solid #c33; background: #fee; padding: .5rem .8rem; font-weight: bold; }}
.qc {{ border: 2px solid #c80; background: #fff6e0; padding: .5rem .8rem; margin: .5rem 0; }}
.qc ul {{ margin: .3rem 0 0; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ text-align: left; padding: .2rem .8rem; border-bottom: 1px solid #ddd; }}
th {{ font-weight: 600; }} td {{ font-variant-numeric: tabular-nums; }}
.slices {{ display: flex; gap: .6rem; flex-wrap: wrap; }}
figure {{ margin: 0; flex: 1 1 15rem; }} img {{ width: 100%; image-rendering: pixelated; }}
figcaption {{ font-size: .85rem; color: #555; }}
</style></head><body>
<h1>Lung lesion segmentation report</h1>
<p class="disclaimer">{esc(disclaimer)}</p>
<table>{rows}</table>
<h2>Quantities</h2>
{qc_block}
<table>{qrows}</table>
<h2>Key slices</h2>
<p>{legend}</p>
<div class="slices">{figs}</div>
<p><small>Generated by SmallCovid. Lesion volume counts every lesion voxel; involvement counts lesion inside
the automatic lung mask (right/left as the patient's). {esc(disclaimer)}</small></p>
</body></html>
"""


def overlays_for(keys: Sequence[int], display: Callable[[int], np.ndarray], classes: np.ndarray,
                 opacity: float = 0.45) -> list[tuple[int, np.ndarray]]:
    """(index, overlay) for each key slice: ``display(k)`` (H, W) uint8 with ``classes[k]`` coloured by type."""
    return [(k, viz.overlay(display(k), types=np.asarray(classes[k], np.uint8), opacity=opacity)) for k in keys]

