"""Load test: N concurrent browser sessions each upload a slice and wait for every model's overlay.

Loopback only and bounded in time. Starts ``streamlit run app.py`` on a free
127.0.0.1 port (or uses ``--url``), opens one headless Chromium with N browser
contexts (one app session each), loads the Segment page in all of them, then
uploads the same 512x512 slice in all at once and times, per session, the upload
until the overlays of all selected models and the lesion table are shown. A warm-up
session first loads the models into the shared cache (reported on its own).

Reports per-session latency (median / p95 / max), the error count and the machine;
``--json FILE`` writes the same; the exit code is 1 when any session failed.

    python benchmarks/load_test.py --sessions 10 --timeout 300 --json load.json
    python benchmarks/load_test.py --sessions 3 --weights tiny          # quick, untrained test weights
    python benchmarks/load_test.py --sessions 10 --compare-locks        # serialised vs concurrent inference
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from any folder
from smallcovid.app.server import running_app  # noqa: E402

# The labeled data folder from SMALLCOVID_DATA_DIR (default data/covid-semiseg/train in the repository).
SHARED_SLICE = Path(os.environ.get("SMALLCOVID_DATA_DIR") or REPO / "data" / "covid-semiseg" / "train") / "images" / "medseg_003.jpg"
BROWSERS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]
CAPTIONS = '[data-testid="stImageCaption"]'
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


SERVER_PEAK_MB: dict[str, float | None] = {}


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process (Linux VmHWM), MB; None where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def machine() -> str:
    """CPU model, core count and OS, e.g. for the README."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {platform.system()}"


def slice_file(tmp: Path) -> Path:
    """The labeled data's medseg_003.jpg when present, else a generated 512x512 PNG."""
    if SHARED_SLICE.is_file():
        return SHARED_SLICE
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((yy - 256) ** 2 / 200 ** 2 + (xx - 256) ** 2 / 230 ** 2) <= 1
    img = np.where(body, 90, 10) + rng.normal(0, 12, (512, 512))
    img[((yy - 220) ** 2 + (xx - 170) ** 2) <= 30 ** 2] += 80
    path = tmp / "generated_512.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def tiny_weights(tmp: Path) -> Path:
    """Untrained tiny weights for all models (as the tests make them), for quick runs."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from apphelpers import make_tiny_weights

    return make_tiny_weights(tmp / "tiny-weights")


@contextmanager
def serve(tmp: Path, weights: str | None, lock: str | None) -> Iterator[str]:
    """``streamlit run app.py`` on a free loopback port; yields its URL and stops it afterwards."""
    env = {"SMALLCOVID_JOBS_DIR": str(tmp / "jobs")}
    if weights:
        env["SMALLCOVID_WEIGHTS_DIR"] = weights
    if lock is not None:
        env["SMALLCOVID_INFERENCE_LOCK"] = lock
    peak: dict[str, float | None] = {}
    # Read the server's peak memory just before it is stopped (it is gone afterwards).
    with running_app(tmp / f"streamlit-{os.getpid()}-{len(SERVER_PEAK_MB)}.log", env,
                     on_stop=lambda pid: peak.update(mb=peak_rss_mb(pid))) as url:
        yield url
    SERVER_PEAK_MB[url] = peak.get("mb")


async def open_page(browser, url: str):
    """A new browser context (= a new app session) on the Segment page, ready for an upload."""
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    page.set_default_timeout(0)  # the overall --timeout bounds everything
    await page.goto(url)
    await page.get_by_text("Upload a CT slice").wait_for()
    return ctx, page


async def upload_and_wait(page, image: Path, expected: int | None) -> dict:
    """Upload the slice; wait for the lesion table and every overlay -> seconds, overlay count, problems.

    ``expected`` overlays (known after the warm-up); for the warm-up itself, until the count is stable.
    """
    t0 = time.perf_counter()
    await page.locator('input[type="file"]').first.set_input_files(str(image))
    await page.get_by_text("Lesion quantities").wait_for()
    last = -1
    while True:  # images (and their captions) may appear a moment after the table
        captions = await page.locator(CAPTIONS).all_inner_texts()
        overlays = [c for c in captions if c != "scan" and not c.startswith("disagreement")]
        if (expected is not None and len(overlays) >= expected) or (expected is None and len(overlays) == last > 0):
            break
        if await page.locator(PROBLEMS).count():
            break
        last = len(overlays)
        await asyncio.sleep(0.05 if expected is not None else 0.5)
    seconds = time.perf_counter() - t0
    problems = await page.locator(PROBLEMS).all_inner_texts()
    return {"seconds": seconds, "overlays": len(overlays), "problems": problems}


async def session(browser, url: str, image: Path, start: asyncio.Event, ready: list, expected: int | None) -> dict:
    """One visitor: open the page, report ready, wait for the common start, upload, check the result."""
    ctx = None
    try:
        t0 = time.perf_counter()
        try:
            ctx, page = await open_page(browser, url)
        finally:
            ready.append(1)  # loaded or failed: either way the start need not wait for it
        load_s = time.perf_counter() - t0
        await start.wait()
        out = await upload_and_wait(page, image, expected)
        out["page_load_s"] = load_s
        if out["problems"]:
            out["error"] = "the page shows an error: " + out["problems"][0].splitlines()[0]
        elif expected is not None and out["overlays"] != expected:
            out["error"] = f"{out['overlays']} overlays shown, expected {expected}"
        return out
    except Exception as exc:  # noqa: BLE001 - every failure is one counted error
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    finally:
        if ctx is not None:
            await ctx.close()


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


async def run_load(url: str, sessions: int, image: Path, timeout: float) -> dict:
    """Warm-up session, then ``sessions`` concurrent ones; returns the report."""
    from playwright.async_api import async_playwright

    exe = next((b for b in BROWSERS if os.access(b, os.X_OK)), None)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        try:
            go = asyncio.Event()
            go.set()
            warm = await asyncio.wait_for(session(browser, url, image, go, [], None), timeout)
            expected = warm.get("overlays")
            start, ready = asyncio.Event(), []
            tasks = [asyncio.create_task(session(browser, url, image, start, ready, expected))
                     for _ in range(sessions)]
            t0 = time.perf_counter()
            while len(ready) < sessions and time.perf_counter() - t0 < timeout / 2:
                await asyncio.sleep(0.1)  # every page loaded (or failed): then upload everywhere at once
            start.set()
            t_upload = time.perf_counter()
            done, pending = await asyncio.wait(tasks, timeout=max(1.0, timeout - (t_upload - t0)))
            wall = time.perf_counter() - t_upload
            for t in pending:
                t.cancel()
            results = [t.result() for t in done] + [{"error": "timed out"} for _ in pending]
        finally:
            await browser.close()
    ok = [r["seconds"] for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    return {
        "sessions": sessions, "ok": len(ok), "errors": len(errors), "error_messages": errors[:5],
        "median_s": round(statistics.median(ok), 2) if ok else None,
        "p95_s": round(p95(ok), 2) if ok else None, "max_s": round(max(ok), 2) if ok else None,
        "wall_s": round(wall, 2), "overlays_per_session": expected,
        "warmup_s": round(warm.get("seconds", float("nan")), 2), "warmup_error": warm.get("error"),
        "page_load_median_s": round(statistics.median([r["page_load_s"] for r in results if "page_load_s" in r]), 2)
        if any("page_load_s" in r for r in results) else None,
    }


def describe_weights(folder: str | None) -> str:
    """The weights folder (``weights/`` when it is the shipped one; reports name no machine paths) and its models."""
    shipped = folder is None
    path = REPO / "weights" if shipped else Path(folder)
    files = sorted(p.stem for p in path.glob("*.safetensors"))
    return f"{'weights/' if shipped else path.name} ({', '.join(files) or 'none'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole run, per server (default 300)")
    ap.add_argument("--url", help="test a running app instead of starting one (loopback only)")
    ap.add_argument("--weights", help="weights folder for the started app, or 'tiny' for untrained test weights")
    ap.add_argument("--lock", choices=["1", "0"], help="SMALLCOVID_INFERENCE_LOCK for the started app")
    ap.add_argument("--compare-locks", action="store_true", help="run twice: serialised (lock) and concurrent")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        ap.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    with tempfile.TemporaryDirectory(prefix="smallcovid-load-") as tmp_name:
        tmp = Path(tmp_name)
        weights = str(tiny_weights(tmp)) if args.weights == "tiny" else args.weights
        image = slice_file(tmp)
        runs: dict[str, dict] = {}
        if args.url:
            runs["given"] = asyncio.run(run_load(args.url, args.sessions, image, args.timeout))
        else:
            for lock in (["1", "0"] if args.compare_locks else [args.lock]):
                with serve(tmp, weights, lock) as url:
                    label = {"1": "serialised (per-model lock)", "0": "concurrent (no lock)", None: "default"}[lock]
                    runs[label] = asyncio.run(run_load(url, args.sessions, image, args.timeout))
                runs[label]["server_peak_rss_mb"] = SERVER_PEAK_MB.get(url)
    report = {"machine": machine(), "weights": "tiny (untrained test weights)" if args.weights == "tiny"
              else describe_weights(weights), "image": image.name, "runs": runs}
    for label, r in runs.items():
        print(f"{label}: {r['sessions']} sessions, {r['errors']} errors; upload -> {r['overlays_per_session']} overlays "
              f"median {r['median_s']} s, p95 {r['p95_s']} s, max {r['max_s']} s (all done in {r['wall_s']} s; "
              f"warm-up {r['warmup_s']} s; server peak memory {r.get('server_peak_rss_mb')} MB)")
        for msg in r["error_messages"]:
            print(f"  error: {msg}")
    print(f"machine: {report['machine']}; weights: {report['weights']}; image: {report['image']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if any(r["errors"] or r["warmup_error"] for r in runs.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
