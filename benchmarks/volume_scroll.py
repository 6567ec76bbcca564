"""Slice stepping and window changes on a segmented volume, in a real browser.

Starts the app (``smallcovid.app.server``) and headless Chromium (Playwright), uploads a
synthetic 512x512 CT volume (``smallcovid.cli.benchvolume.synthetic_ct``, ``--slices`` deep,
written as NIfTI), presses "Segment all slices" with the four models of ``weights/``, then:

* presses K (next slice) and J (previous slice) ``--steps`` times in all, a pause of
  ``--gap`` seconds between presses (the viewer settles its slice with the server 0.35 s
  after a step, and the page sends the slices ahead while the next presses come);
* switches the viewer's window between the lung and mediastinum presets ``--steps`` times.

Measured per step, in the page's own clock (``performance.now``): from the key / click
event's timestamp to the moment after the frame with the new slice (or window) was painted,
as ``benchmarks/slider_latency.py`` does. Also the viewer's payload: the compressed bytes
per slice it holds, and what a whole 300-slice volume with four models would take.

    python benchmarks/volume_scroll.py --json docs/volume-scroll.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from slider_latency import SCAN_INPUT, chromium, machine, pct  # noqa: E402  (the benchmarks share these)
TARGET_MS = 100.0
VIEWER = '[data-testid="scv-viewer"]'

PROBE = """() => {
  window.__ev = [];
  for (const type of ['keydown', 'click']) window.addEventListener(type, (e) => window.__ev.push(e.timeStamp), true);
  window.__scvPaints = [];
}"""

PAYLOAD = """() => {
  const v = window.__scvActive && window.__scvActive.viewer;
  if (!v || !v.items) return null;
  let chars = 0, n = 0;
  for (const it of v.items.values()) { chars += JSON.stringify(it).length; n += 1; }
  return { slices: n, chars, models: v.data.models.length, width: v.data.width, height: v.data.height,
           volume_slices: v.data.volume.n };
}"""


def summary(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values), 1), "p95_ms": round(pct(values, 0.95), 1),
            "min_ms": round(min(values), 1), "max_ms": round(max(values), 1), "n": len(values)}


def timed(page, action, attr: str | None = None) -> float:
    """Run ``action()``; ms from its (last) input event to the viewer's next painted frame."""
    viewer = page.locator(VIEWER)
    before = int(viewer.get_attribute("data-seq") or 0)
    action()
    page.wait_for_function("(s) => (window.__scvPaints || []).some((p) => p.seq > s)", arg=before, timeout=30_000)
    ev, paints = page.evaluate("() => [window.__ev.slice(-1)[0], window.__scvPaints]")
    return next(p["t"] for p in paints if p["seq"] > before) - ev


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    from smallcovid.app import server
    from smallcovid.cli.benchvolume import write_synthetic_nifti

    exe = chromium()
    weights = Path(args.weights) if args.weights else REPO / "weights"
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        nifti = write_synthetic_nifti(tmp / "synthetic_ct.nii.gz", (args.slices, args.size, args.size))
        env = dict(SMALLCOVID_WEIGHTS_DIR=str(weights), SMALLCOVID_JOBS_DIR=str(tmp / "jobs"))
        with server.running_app(tmp / "streamlit.log", env) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)
            page.goto(url)
            page.get_by_text("Upload a CT slice").wait_for()
            page.locator(SCAN_INPUT).set_input_files(str(nifti))
            page.wait_for_selector(f"{VIEWER}[data-painted]")
            run_button = page.get_by_role("button", name=f"Segment all {args.slices} slices")
            run_button.wait_for()
            t0 = time.perf_counter()
            run_button.click()
            page.wait_for_selector(f"{VIEWER}[data-n][data-painted]")
            segment_s = time.perf_counter() - t0
            page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
            time.sleep(2.0)
            page.evaluate(PROBE)
            page.locator("h1").first.click()  # focus on the page, not on a control
            keys = []
            for i in range(args.steps):
                key = "k" if i < args.steps // 3 else "j"  # up a third, then down past the start
                keys.append(timed(page, lambda key=key: page.keyboard.press(key)))
                time.sleep(args.gap)
            shown = int(page.locator(VIEWER).get_attribute("data-slice"))
            windows = []
            for i in range(args.steps):
                name = "mediastinum" if i % 2 == 0 else "lung"
                label = page.locator(f"{VIEWER} label.win", has_text=name)
                windows.append(timed(page, label.click))
                time.sleep(args.gap)
            payload = page.evaluate(PAYLOAD)
            browser.close()
    per_slice = payload["chars"] / max(payload["slices"], 1)
    report = {
        "input": f"synthetic_ct {args.slices}x{args.size}x{args.size} int16 NIfTI (smallcovid.cli.benchvolume)",
        "models": payload["models"], "weights": str(weights.relative_to(REPO)) if weights.is_relative_to(REPO)
        else str(weights), "steps": args.steps, "gap_s": args.gap,
        "segment_all_s": round(segment_s, 1), "slice_after_steps": shown,
        "slice_step_key_to_paint": summary(keys), "window_change_to_paint": summary(windows),
        "payload": {"slices_held": payload["slices"], "mb_held": round(payload["chars"] / 1e6, 2),
                    "mb_per_slice": round(per_slice / 1e6, 3),
                    "mb_300_slices_if_all_held": round(300 * per_slice / 1e6, 1),
                    "max_slices_held": 96},
        "target_ms": TARGET_MS,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=48, help="volume depth (default 48)")
    ap.add_argument("--size", type=int, default=512, help="slice side in pixels (default 512)")
    ap.add_argument("--steps", type=int, default=30, help="slice steps and window changes, each (default 30)")
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between steps (default 0.5)")
    ap.add_argument("--weights", help="weights folder (default: weights/)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    report = run(args)
    k, w = report["slice_step_key_to_paint"], report["window_change_to_paint"]
    sys.stdout.write(f"{report['input']}, {report['models']} models: J/K -> painted slice median {k['median_ms']:.0f} ms, "
                     f"p95 {k['p95_ms']:.0f} ms; window preset -> painted median {w['median_ms']:.0f} ms, "
                     f"p95 {w['p95_ms']:.0f} ms; payload {report['payload']['mb_per_slice']:.3f} MB per slice "
                     f"(target <= {TARGET_MS:.0f} ms)\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if max(k["median_ms"], w["median_ms"]) <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
