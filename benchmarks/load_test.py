"""Load test: concurrent browser sessions on the Segment page, slices and whole volumes.

Loopback only and bounded in time. Starts ``streamlit run app.py`` on a free
127.0.0.1 port (or uses ``--url``) and opens one headless Chromium with one browser
context (one app session) per visitor. A warm-up session first loads the models into
the shared cache (reported on its own). Then two phases, one after the other:

* slices: ``--sessions`` visitors load the page, upload the same 512x512 slice at once,
  and each is timed from the upload until the in-browser viewer (the
  ``pages/components/overlay`` component) has painted the overlays of all selected models;
* volumes: ``--volume-sessions`` visitors upload a synthetic CT (``--volume-slices`` slices of
  ``--volume-size``\ :sup:`2`, int16 HU ``.nii.gz``), wait for the viewer of its middle slice,
  press "Segment all N slices" and are timed until the whole-volume table and chart are shown.

Reports per phase the per-session latency (median / p95 / max), the error count, and,
for a started server, the resident memory of its process tree (the Streamlit process
and any children; sampled every 0.5 s): after the warm-up (shared models loaded) and the
peak. ``--session-mb`` sets ``SMALLCOVID_SESSION_MB`` (the app's per-session cap on stored
volume results) for the started server; the report says whether the peak stayed below
memory after the warm-up + volume sessions x cap. ``--json FILE`` writes the report;
the exit code is 1 when any session failed.

    python benchmarks/load_test.py --sessions 10 --timeout 300 --json load.json
    python benchmarks/load_test.py --sessions 10 --volume-sessions 6 --session-mb 1024 --json docs/load-volumes.json
    python benchmarks/load_test.py --sessions 2 --weights tiny          # quick, untrained test weights
    python benchmarks/load_test.py --sessions 10 --compare-locks        # serialised vs concurrent inference
    python benchmarks/load_test.py --sessions 2 --volume-sessions 2 --memlog   # where the memory goes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
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
# The Segment page's viewer: a custom component that draws the scan, one canvas per model and a
# disagreement map, each in a <figure> with a <figcaption>; data-painted is set once a frame is drawn.
VIEWER = '[data-testid="scv-viewer"]'
PAINTED = f"{VIEWER}[data-painted]"
VOLUME_DONE = "Lesion area per slice"  # the caption under the whole-volume chart
SEGMENT_ALL = re.compile(r"^Segment all (\d+) slices")
RUNNING = '[data-testid="stStatusWidget"]'  # "Running…" while a script run is in progress
# The slice uploader by its label: a bare input[type=file] can be the mask uploader's while the page
# is still rendering (the upload then went in as a mask and no overlay ever came).
SCAN_INPUT = '[data-testid="stFileUploader"]:has-text("CT slice") input[type="file"]'
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
SESSION_MB_ENV = "SMALLCOVID_SESSION_MB"


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and all its descendants (Linux VmRSS), MB; None where unknown."""
    kids, todo, total, seen = _children(), [pid], 0.0, False
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
                    seen = True
                    break
        except (OSError, ValueError):
            pass
    return round(total, 1) if seen else None


def server_pid(port: int) -> int | None:
    """The pid of the ``streamlit run`` child of this process serving ``port``."""
    me = os.getpid()
    for pid in _children().get(me, []):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in cmd and str(port).encode() in cmd:
            return pid
    return None


class MemorySampler:
    """Samples :func:`tree_rss_mb` of a process every ``every_s`` seconds in a thread;
    ``mark(name)`` records the current value and ``peak(since)`` the largest since a mark."""

    def __init__(self, pid: int | None, every_s: float = 0.5) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def sample(self) -> float | None:
        mb = tree_rss_mb(self.pid) if self.pid else None
        if mb is not None:
            self.samples.append((time.monotonic(), mb))
        return mb

    def start(self) -> "MemorySampler":
        if self.pid:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mark(self, name: str) -> float | None:
        self.marks[name] = time.monotonic()
        mb = self.sample()
        self.marks[name + "_mb"] = mb  # type: ignore[assignment]
        return mb

    def peak_time(self, since: str | None = None) -> float | None:
        """Seconds after the mark ``since`` at which the peak since it was sampled."""
        t0 = self.marks.get(since, float("-inf")) if since else float("-inf")
        inside = [(mb, t) for t, mb in self.samples if t >= t0]
        return round(max(inside)[1] - t0, 1) if inside and since else None

    def peak(self, since: str | None = None, until: str | None = None) -> float | None:
        t0 = self.marks.get(since, float("-inf")) if since else float("-inf")
        t1 = self.marks.get(until, float("inf")) if until else float("inf")
        inside = [mb for t, mb in self.samples if t0 <= t <= t1]
        return round(max(inside), 1) if inside else None


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


def volume_file(tmp: Path, slices: int, size: int) -> Path:
    """A synthetic chest CT (``slices`` x ``size`` x ``size`` int16 HU, ``.nii.gz``), as ``bench`` uses."""
    from smallcovid.cli.benchvolume import write_synthetic_nifti

    return write_synthetic_nifti(tmp / f"synthetic-ct-{slices}x{size}x{size}.nii.gz", (slices, size, size))


@contextmanager
def serve(tmp: Path, weights: str | None, lock: str | None, session_mb: float | None,
          memlog: Path | None = None) -> Iterator[tuple[str, MemorySampler]]:
    """``streamlit run app.py`` on a free loopback port; yields its URL and a started sampler of its memory.
    ``memlog``: the app samples what each session keeps into this file (``SMALLCOVID_MEMLOG``)."""
    env = {"SMALLCOVID_JOBS_DIR": str(tmp / "jobs")}
    if memlog is not None:
        env["SMALLCOVID_MEMLOG"] = str(memlog)
    if weights:
        env["SMALLCOVID_WEIGHTS_DIR"] = weights
    if lock is not None:
        env["SMALLCOVID_INFERENCE_LOCK"] = lock
    if session_mb is not None:
        env[SESSION_MB_ENV] = f"{session_mb:g}"
    with running_app(tmp / f"streamlit-{os.getpid()}-{time.monotonic_ns()}.log", env) as url:
        mem = MemorySampler(server_pid(int(url.rsplit(":", 1)[1]))).start()
        try:
            yield url, mem
        finally:
            mem.stop()


async def open_page(browser, url: str):
    """A new browser context (= a new app session) on the Segment page, ready for an upload."""
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    page.set_default_timeout(0)  # the overall timeouts bound everything
    await page.goto(url)
    await page.get_by_text("Upload a CT slice").wait_for()
    return ctx, page


async def problems(page) -> list[str]:
    return await page.locator(PROBLEMS).all_inner_texts()


async def upload_and_wait(page, image: Path, expected: int | None) -> dict:
    """Upload ``image``; wait until the viewer has painted every model's overlay -> seconds, overlay count, problems.

    ``expected`` overlays (known after the warm-up); for the warm-up itself, what the first painted viewer shows
    (the viewer gets every model's map in one payload).
    """
    t0 = time.perf_counter()
    await page.locator(SCAN_INPUT).set_input_files(str(image))
    overlays = 0
    while True:
        if await page.locator(PAINTED).count():
            captions = await page.locator(f"{PAINTED} figcaption").all_inner_texts()
            overlays = len([c for c in captions if c != "scan" and not c.startswith("disagreement")])
            if overlays and (expected is None or overlays >= expected):
                break
        if await page.locator(PROBLEMS).count():
            break
        await asyncio.sleep(0.05)
    return {"seconds": time.perf_counter() - t0, "overlays": overlays, "problems": await problems(page)}


async def segment_all_and_wait(page) -> dict:
    """Press "Segment all N slices"; wait for the whole-volume chart -> seconds, slices, models left, problems."""
    button = page.get_by_role("button", name=SEGMENT_ALL)
    while not await button.count():
        if await page.locator(PROBLEMS).count():
            return {"seconds": None, "slices": None, "problems": await problems(page)}
        await asyncio.sleep(0.1)
    slices = int(SEGMENT_ALL.search((await button.inner_text()).strip()).group(1))
    t0 = time.perf_counter()
    await button.click()
    done = page.get_by_text(VOLUME_DONE)
    while not await done.count():
        if await page.locator(PROBLEMS).count():
            break
        await asyncio.sleep(0.25)
    seconds = time.perf_counter() - t0
    # A model that failed leaves the button (for the models still missing) on the page; elements of the
    # previous script run can stay a moment longer, so look once the run has ended.
    await asyncio.sleep(0.5)
    try:
        await page.locator(RUNNING).wait_for(state="hidden", timeout=30_000)
    except Exception:  # noqa: BLE001 - still running: count what is shown now
        pass
    return {"seconds": seconds, "slices": slices, "models_left": await button.count(), "problems": await problems(page)}


async def slice_visit(page, image: Path, expected: int | None) -> dict:
    out = await upload_and_wait(page, image, expected)
    if out["problems"]:
        out["error"] = "the page shows an error: " + out["problems"][0].splitlines()[0]
    elif expected is not None and out["overlays"] != expected:
        out["error"] = f"{out['overlays']} overlays shown, expected {expected}"
    return out


async def volume_visit(page, nifti: Path, expected: int | None, slices: int) -> dict:
    """Upload the volume, wait for its middle slice's viewer, segment every slice with every model."""
    t0 = time.perf_counter()
    first = await slice_visit(page, nifti, expected)
    if "error" in first:
        return first
    shown = time.monotonic()  # on the sampler's clock: which phase each session was in at the peak
    vol = await segment_all_and_wait(page)
    out = {"slice_s": first["seconds"], "volume_s": vol["seconds"], "overlays": first["overlays"],
           "slices": vol["slices"], "seconds": time.perf_counter() - t0,  # upload -> whole-volume results
           "viewer_at": shown, "done_at": time.monotonic()}
    if vol["problems"]:
        out["error"] = "the page shows an error: " + vol["problems"][0].splitlines()[0]
    elif vol["slices"] != slices:
        out["error"] = f"the button offered {vol['slices']} slices, expected {slices}"
    elif vol["models_left"]:
        out["error"] = "not every model segmented the volume"
    return out


async def session(browser, url: str, start: asyncio.Event, ready: list, visit, trace: dict | None = None) -> dict:
    """One visitor: open the page, report ready, wait for the common start, then ``visit(page)``.

    ``trace`` (if given) is kept up to date with the session's ``stage`` and ``page``, so that a
    session still pending at the timeout can say where it stood and show its page.
    """
    ctx, trace = None, trace if trace is not None else {}
    try:
        t0 = time.perf_counter()
        trace["stage"] = "loading the page"
        try:
            ctx, page = await open_page(browser, url)
            trace["page"] = page
        finally:
            ready.append(1)  # loaded or failed: either way the start need not wait for it
        load_s = time.perf_counter() - t0
        trace["stage"] = "waiting for the common start"
        await start.wait()
        trace["stage"], trace["since"] = "uploading and waiting for the results", time.perf_counter()
        out = await visit(page)
        out["page_load_s"] = load_s
        return out
    except Exception as exc:  # noqa: BLE001 - every failure is one counted error
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    finally:
        if ctx is not None:
            await ctx.close()


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def summary(results: list[dict], key: str = "seconds") -> dict:
    """Median / p95 / max of ``key`` over the sessions without an error (None when none)."""
    ok = [r[key] for r in results if "error" not in r and r.get(key) is not None]
    return {"median_s": round(statistics.median(ok), 2) if ok else None, "p95_s": round(p95(ok), 2) if ok else None,
            "max_s": round(max(ok), 2) if ok else None}


async def phase(browser, url: str, n: int, visit, timeout: float,
                shots: Path | None = None) -> tuple[list[dict], float]:
    """``n`` sessions load the page, then all start ``visit`` at once -> (results, seconds until all were done).

    A session still running at the timeout counts as an error that names its stage; with ``shots``
    its page is saved there as a screenshot first.
    """
    start, ready = asyncio.Event(), []
    traces: list[dict] = [{} for _ in range(n)]
    tasks = [asyncio.create_task(session(browser, url, start, ready, visit, tr)) for tr in traces]
    t0 = time.perf_counter()
    while len(ready) < n and time.perf_counter() - t0 < timeout / 2:
        await asyncio.sleep(0.1)  # every page loaded (or failed): then start everywhere at once
    start.set()
    t_start = time.perf_counter()
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, timeout - (t_start - t0)))
    wall = time.perf_counter() - t_start
    stuck = []
    for i, (task, tr) in enumerate(zip(tasks, traces)):
        if task not in pending:
            continue
        since = f" for {time.perf_counter() - tr['since']:.0f} s" if "since" in tr else ""
        err = {"error": f"timed out {tr.get('stage', 'before starting')}{since}"}
        if shots is not None and tr.get("page") is not None:
            shots.mkdir(parents=True, exist_ok=True)
            path = shots / f"timed-out-session-{i + 1}.png"
            try:
                await asyncio.wait_for(tr["page"].screenshot(path=str(path), full_page=True), 20)
                err["screenshot"] = str(path)
            except Exception as exc:  # noqa: BLE001 - the report still counts the session
                err["screenshot_error"] = f"{type(exc).__name__}: {exc}"
        stuck.append(err)
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [t.result() for t in done] + stuck, wall


def phase_report(results: list[dict], wall: float) -> dict:
    errors = [r["error"] for r in results if "error" in r]
    loads = [r["page_load_s"] for r in results if "page_load_s" in r]
    return {"sessions": len(results), "ok": len(results) - len(errors), "errors": len(errors),
            "error_messages": errors[:5], **summary(results), "wall_s": round(wall, 2),
            "page_load_median_s": round(statistics.median(loads), 2) if loads else None}


async def run_load(url: str, sessions: int, image: Path, timeout: float, mem: MemorySampler | None = None,
                   volume: dict | None = None, shots: Path | None = None) -> dict:
    """Warm-up session, ``sessions`` concurrent slice sessions, then (with ``volume``: nifti, sessions,
    slices, timeout) the concurrent volume sessions; returns the report. ``shots``: where the pages of
    sessions that timed out are saved."""
    from playwright.async_api import async_playwright

    mem = mem or MemorySampler(None)
    exe = next((b for b in BROWSERS if os.access(b, os.X_OK)), None)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        try:
            go = asyncio.Event()
            go.set()
            warm = await asyncio.wait_for(session(browser, url, go, [], lambda pg: slice_visit(pg, image, None)),
                                          timeout)
            expected = warm.get("overlays")
            mem.mark("warm")
            results, wall = await phase(browser, url, sessions, lambda pg: slice_visit(pg, image, expected), timeout,
                                        shots)
            report = {**phase_report(results, wall), "overlays_per_session": expected,
                      "warmup_s": round(warm.get("seconds", float("nan")), 2), "warmup_error": warm.get("error")}
            mem.mark("slices_done")
            if volume and volume["sessions"]:
                nifti = volume["nifti"]
                results, wall = await phase(
                    browser, url, volume["sessions"],
                    lambda pg: volume_visit(pg, nifti, expected, volume["slices"]), volume["timeout"], shots)
                report["volumes"] = {
                    **phase_report(results, wall), "volume": f"{volume['slices']}x{volume['size']}x{volume['size']} "
                    f"int16 HU .nii.gz, {nifti.stat().st_size / 2**20:.1f} MB",
                    "upload_to_slice_viewer": summary(results, "slice_s"),
                    "segment_all_to_results": summary(results, "volume_s")}
                mem.mark("volumes_done")
                at = mem.peak_time("slices_done")
                if at is not None:  # where the sessions stood when the server's memory peaked
                    t = mem.marks["slices_done"] + at
                    report["volumes"]["at_peak"] = {
                        "seconds_after_start": at,
                        "uploading": sum(1 for r in results if r.get("viewer_at", float("inf")) > t),
                        "segmenting_or_waiting": sum(1 for r in results if r.get("viewer_at", t) <= t < r.get(
                            "done_at", float("inf"))),
                        "done": sum(1 for r in results if r.get("done_at", float("inf")) <= t)}
                for r in results:
                    r.pop("viewer_at", None), r.pop("done_at", None)
        finally:
            await browser.close()
    mem.mark("end")
    report["memory"] = {
        "what": "resident memory (VmRSS) of the streamlit process and its children, sampled every "
                f"{mem.every_s:g} s", "after_warmup_mb": mem.marks.get("warm_mb"),
        "peak_slices_mb": mem.peak(until="slices_done"), "peak_mb": mem.peak()}
    if "volumes" in report:
        report["memory"]["before_volumes_mb"] = mem.marks.get("slices_done_mb")
        report["memory"]["peak_volumes_mb"] = mem.peak(since="slices_done")
        report["memory"]["after_volumes_mb"] = mem.marks.get("volumes_done_mb")
    return report


def memory_bound(report: dict, volume_sessions: int, session_mb: float | None) -> dict:
    """Whether the peak stayed below memory after the warm-up (shared models) + volume sessions x cap."""
    store = REPO / "smallcovid" / "app" / "session_store.py"
    app_has_cap = store.is_file() and SESSION_MB_ENV in store.read_text(encoding="utf-8")
    out = {"env": SESSION_MB_ENV, "session_mb": session_mb, "app_reads_it": app_has_cap}
    m = report.get("memory", {})
    base, peak = m.get("after_warmup_mb"), m.get("peak_mb")
    before, after = m.get("before_volumes_mb"), m.get("after_volumes_mb")
    if base is not None and peak is not None and volume_sessions:
        out["peak_above_warmup_per_volume_session_mb"] = round((peak - base) / volume_sessions, 1)
        if before is not None:  # the slice sessions' memory left out
            out["peak_above_before_volumes_per_volume_session_mb"] = round((peak - before) / volume_sessions, 1)
            if after is not None:  # what each volume session still holds once all are done
                out["kept_per_volume_session_mb"] = round((after - before) / volume_sessions, 1)
        if session_mb is not None:
            out["bound_mb"] = round(base + volume_sessions * session_mb, 1)
            out["within_bound"] = peak <= out["bound_mb"]
    return out


def describe_weights(folder: str | None) -> str:
    """The weights folder (``weights/`` when it is the shipped one; reports name no machine paths) and its models."""
    shipped = folder is None
    path = REPO / "weights" if shipped else Path(folder)
    files = sorted(p.stem for p in path.glob("*.safetensors"))
    return f"{'weights/' if shipped else path.name} ({', '.join(files) or 'none'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10, help="concurrent slice sessions (default 10)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds for the warm-up and the slice sessions, per server (default 300)")
    ap.add_argument("--volume-sessions", type=int, default=0, help="concurrent volume sessions after them (default 0)")
    ap.add_argument("--volume-slices", type=int, default=300, help="slices of the synthetic volume (default 300)")
    ap.add_argument("--volume-size", type=int, default=512, help="rows = columns of each slice (default 512)")
    ap.add_argument("--volume-timeout", type=float, default=1800, help="seconds for the volume sessions (default 1800)")
    ap.add_argument("--session-mb", type=float,
                    help=f"{SESSION_MB_ENV} for the started app: per-session memory for stored volume results")
    ap.add_argument("--url", help="test a running app instead of starting one (loopback only)")
    ap.add_argument("--weights", help="weights folder for the started app, or 'tiny' for untrained test weights")
    ap.add_argument("--lock", choices=["1", "0"], help="SMALLCOVID_INFERENCE_LOCK for the started app")
    ap.add_argument("--compare-locks", action="store_true", help="run twice: serialised (lock) and concurrent")
    ap.add_argument("--memlog", action="store_true",
                    help="the started app samples what each session keeps; the report says where memory went")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--shots", type=Path, help="save a screenshot of each session that timed out in this folder")
    args = ap.parse_args(argv)
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        ap.error("--url must be a loopback address (http://127.0.0.1:PORT)")
    session_mb = args.session_mb
    if session_mb is None and args.url is None and os.environ.get(SESSION_MB_ENV):
        session_mb = float(os.environ[SESSION_MB_ENV])  # inherited by the started app
    with tempfile.TemporaryDirectory(prefix="smallcovid-load-") as tmp_name:
        tmp = Path(tmp_name)
        weights = str(tiny_weights(tmp)) if args.weights == "tiny" else args.weights
        image = slice_file(tmp)
        volume = None
        if args.volume_sessions:
            volume = {"nifti": volume_file(tmp, args.volume_slices, args.volume_size), "sessions": args.volume_sessions,
                      "slices": args.volume_slices, "size": args.volume_size, "timeout": args.volume_timeout}
        runs: dict[str, dict] = {}
        if args.url:
            runs["given"] = asyncio.run(run_load(args.url, args.sessions, image, args.timeout, None, volume,
                                                 args.shots))
        else:
            for lock in (["1", "0"] if args.compare_locks else [args.lock]):
                label = {"1": "serialised (per-model lock)", "0": "concurrent (no lock)", None: "default"}[lock]
                trace = tmp / f"memlog-{lock}.jsonl" if args.memlog else None
                with serve(tmp, weights, lock, session_mb, trace) as (url, mem):
                    runs[label] = asyncio.run(run_load(url, args.sessions, image, args.timeout, mem, volume,
                                                       args.shots))
                if trace is not None and trace.is_file():
                    from smallcovid.app.memlog import breakdown

                    runs[label]["memory"]["breakdown"] = breakdown(trace)
                runs[label]["server_peak_rss_mb"] = runs[label]["memory"]["peak_mb"]
                runs[label]["session_cap"] = memory_bound(runs[label], args.volume_sessions, session_mb)
    report = {"machine": machine(), "weights": "tiny (untrained test weights)" if args.weights == "tiny"
              else describe_weights(weights), "image": image.name, "runs": runs}
    for label, r in runs.items():
        print(f"{label}: {r['sessions']} slice sessions, {r['errors']} errors; upload -> {r['overlays_per_session']} "
              f"overlays median {r['median_s']} s, p95 {r['p95_s']} s, max {r['max_s']} s (all done in {r['wall_s']} s; "
              f"warm-up {r['warmup_s']} s)")
        v = r.get("volumes")
        if v:
            print(f"  volumes: {v['sessions']} sessions ({v['volume']}), {v['errors']} errors; upload -> all "
                  f"slices segmented median {v['median_s']} s, p95 {v['p95_s']} s, max {v['max_s']} s "
                  f"(all done in {v['wall_s']} s)")
        m = r["memory"]
        print(f"  server memory: {m.get('after_warmup_mb')} MB after the warm-up, peak {m.get('peak_mb')} MB")
        if (ap := (r.get("volumes") or {}).get("at_peak")):
            print(f"  at the peak ({ap['seconds_after_start']} s into the volume sessions): {ap['uploading']} uploading, "
                  f"{ap['segmenting_or_waiting']} segmenting or waiting, {ap['done']} done")
        if (b := m.get("breakdown", {}).get("at_peak")):
            print(f"  at the peak, by the app's own count: {b['held_by_sessions_mb']} MB held by {b['sessions']} "
                  f"sessions ({', '.join(f'{k} {v}' for k, v in list(b['held_per_key_mb'].items())[:5])}), "
                  f"{b['not_held_by_sessions_mb']} MB by none (models, libraries, a running job, allocator)")
        cap = r.get("session_cap") or {}
        if "bound_mb" in cap:
            print(f"  {SESSION_MB_ENV}={cap['session_mb']:g}: bound {cap['bound_mb']} MB, "
                  f"{'within' if cap['within_bound'] else 'ABOVE'} it")
        for msg in r["error_messages"] + (v["error_messages"] if v else []):
            print(f"  error: {msg}")
        if r["warmup_error"]:
            print(f"  warm-up error: {r['warmup_error']}")
    print(f"machine: {report['machine']}; weights: {report['weights']}; image: {report['image']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    failed = any(r["errors"] or r["warmup_error"] or r.get("volumes", {}).get("errors") for r in runs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
